"""The model card says what the model was calibrated on: the general mixture, the model's own
text, a file or a dataset."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard

from slimforge.compression.model_card import render_model_card


def card(calibration: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The card's text (parsed back by huggingface_hub) for a job with ``calibration``."""
    text = render_model_card(
        method="svd",
        target="80% of the parameters",
        params_before=1000,
        params_after=800,
        metrics=metrics,
        ranks=None,
        job_parameters={"model": {"id": "org/base"}, "calibration": calibration},
        versions={},
    )
    return ModelCard(text).text


def test_the_general_mixture_names_both_parts_and_their_tokens() -> None:
    figures = {
        "source": "general mixture",
        "english_tokens": 8192,
        "synthetic_tokens": 4096,
        "synthetic_chat": True,
        "english_text": "english-calibration.txt",
    }
    text = card({"mixture": "general"}, {"calibration": figures, "distill": {"tokens": 64}})
    line = next(line for line in text.splitlines() if "calibrated" in line)
    assert "and the `kd` stage trained on the same source" in line
    assert f"{8192:,} tokens of general English" in line and "`english-calibration.txt`" in line
    assert f"{4096:,} tokens sampled from the original model" in line
    assert "chat template" in line and "LLM-QAT" in text


def test_sampled_text_of_a_base_model_says_it_started_from_bos() -> None:
    figures = {"source": "synthetic", "synthetic_tokens": 2048, "synthetic_chat": False}
    text = card({"synthetic": True}, {"calibration": figures})
    line = next(line for line in text.splitlines() if "calibrated" in line)
    assert f"{2048:,} tokens sampled from the original model" in line and "BOS" in line
    assert "kd" not in line


def test_a_file_is_named_with_its_digest_and_a_dataset_with_its_split(tmp_path: Path) -> None:
    text_file = tmp_path / "domain.txt"
    text_file.write_text("domain text\n")
    digest = hashlib.sha256(text_file.read_bytes()).hexdigest()
    text = card({"path": str(text_file)}, {"calibration": {"source": "file", "tokens": 512}})
    line = next(line for line in text.splitlines() if "calibrated" in line)
    assert f"{512:,} tokens of the file `domain.txt` (sha256 `{digest}`)" in line
    assert str(tmp_path) not in text  # no server paths on a public card
    text = card({"dataset": "org/data", "split": "train"}, {})
    assert "the Hub dataset `org/data` (split `train`)" in text
