"""The client's side of the default calibration: ``slimforge submit``'s flags (the general
mixture by name, or as the default a budget applies to) and how sampling progress reads."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from slimforge.client._render import format_event
from slimforge.client._spec import build_job_body
from slimforge.contract.jobs import EventOut


def args(**given: Any) -> argparse.Namespace:
    flags: dict[str, Any] = {
        "spec": None,
        "model": "org/model",
        "revision": "main",
        "gguf_file": None,
        "ratio": 0.8,
        "params": None,
        "method": "svd",
        "param": [],
        "calibration": None,
        "evaluation": None,
        "calibration_tokens": None,
        "seq_len": None,
        "distill_tokens": None,
        "metadata": [],
    }
    return argparse.Namespace(**{**flags, **given})


def test_no_calibration_flag_leaves_it_to_the_server() -> None:
    assert "calibration" not in build_job_body(args())


def test_general_names_the_mixture_and_a_budget_alone_sizes_it() -> None:
    assert build_job_body(args(calibration="general"))["calibration"] == {"mixture": "general"}
    body = build_job_body(args(calibration_tokens=8192, seq_len=256))
    assert body["calibration"] == {"mixture": "general", "max_tokens": 8192, "seq_len": 256}
    body = build_job_body(args(calibration="synthetic", calibration_tokens=1024))
    assert body["calibration"] == {"synthetic": True, "max_tokens": 1024}


def test_sampling_progress_reads_as_tokens_done_and_speed() -> None:
    event = EventOut(
        id=1,
        job_id="job_x",
        time=datetime.now(UTC),
        level="info",
        stage="calibrating",
        message="sampling calibration text",
        data={"tokens": 1536, "total": 16384, "tokens_per_second": 52.25},
    )
    line = format_event(event)
    assert line.endswith(f"sampling calibration text ({1536:,}/{16384:,} tokens, 52.2 tokens/s)")
