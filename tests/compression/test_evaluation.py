"""Perplexity vs a float64 reference, and artifact sizes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from slimforge.compression.evaluation import artifact_size, perplexity
from slimforge.compression.progress import Cancelled, RecordingReporter
from tests.compression.helpers import correlated_blocks, tiny_llama


def test_perplexity_matches_float64_reference() -> None:
    model = tiny_llama()
    blocks = correlated_blocks(5, 12)
    with torch.no_grad():
        logits = model(input_ids=blocks).logits.double()  # [5, 12, V]
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    nll = -logp.gather(-1, blocks[:, 1:, None]).mean()
    expected = math.exp(float(nll))
    for batch_size in (1, 2, 5):
        got = perplexity(model, blocks, batch_size=batch_size)
        assert got == pytest.approx(expected, rel=1e-5)
    # A random model over 256 tokens is close to uniform.
    assert 100 < expected < 600


def test_perplexity_checks_cancellation_and_input() -> None:
    model = tiny_llama()
    with pytest.raises(Cancelled):
        perplexity(model, correlated_blocks(4, 8), batch_size=1, reporter=RecordingReporter(2))
    with pytest.raises(ValueError):
        perplexity(model, torch.zeros(3, 1, dtype=torch.long))


def test_artifact_size(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_bytes(b"y" * 5)
    assert artifact_size(tmp_path) == 15
    assert artifact_size(tmp_path / "a.bin") == 10
    with pytest.raises(FileNotFoundError):
        artifact_size(tmp_path / "missing")
