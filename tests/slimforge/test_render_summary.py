"""``slimforge status`` / ``submit --wait`` show what evaluating measured: fidelity to the
teacher, the evaluation text's overlap and zero-shot tasks (issue 16, item 5)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from slimforge.client._render import summary
from slimforge.contract.jobs import JobOut


def _job(metrics: dict[str, Any]) -> JobOut:
    now = datetime.now(UTC)
    return JobOut(
        id="job_x",
        status="succeeded",
        stage="storing",
        method="svd",
        created_at=now,
        started_at=now,
        finished_at=now,
        cancel_requested=False,
        attempts=1,
        error=None,
        metrics=metrics,
        metadata={},
        request={},
        links={},
    )


def test_the_summary_shows_fidelity_overlap_and_tasks() -> None:
    side = {"acc": 0.5, "acc_stderr": 0.19, "n_samples": 8}
    metrics = {
        "teacher_perplexity": 256.4,
        "student_perplexity": 255.7,
        "fidelity": {
            "perplexity_ratio": 0.99749,
            "perplexity_ratio_interval": [0.99539, 0.99986],
            "kl_per_token": 0.000384,
            "top1_agreement": 0.7834,
        },
        "overlap": {"ngram": 13, "share": 0.28831, "longest_run_tokens": 599},
        "tasks": {
            "mc": {"teacher": side, "student": {**side, "acc": 0.25}, "retention": 0.5, "limit": 8}
        },
    }
    text = "\n".join(summary(_job(metrics)))
    assert "perplexity ratio 0.997 [0.995, 1.000]" in text
    assert "KL 0.000384 nats/token" in text and "top-1 agreement 78.3%" in text
    assert "28.8% of the evaluation 13-grams" in text and "NOT held out" in text
    assert "mc: acc teacher 0.500, student 0.250, retention 50.0%; at most 8 examples" in text


def test_a_held_out_text_is_not_flagged_and_missing_figures_are_left_out() -> None:
    held_out = {"overlap": {"ngram": 13, "share": 0.001}, "fidelity": {"kl_per_token": None}}
    text = "\n".join(summary(_job(held_out)))
    assert "0.1% of the evaluation 13-grams" in text and "NOT held out" not in text
    assert "fidelity" not in text and "task" not in text
