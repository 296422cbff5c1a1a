"""Calibration text sampled from the model itself."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from slimforge.compression.progress import RecordingReporter
from slimforge.compression.synthetic import sample_blocks
from tests.compression.helpers import tiny_llama


def test_sampling_is_seeded_and_shaped(tokenizer: PreTrainedTokenizerFast) -> None:
    model = tiny_llama()
    reporter = RecordingReporter()
    a = sample_blocks(
        model, tokenizer, n_blocks=5, seq_len=12, seed=3, batch_size=2, reporter=reporter
    )
    b = sample_blocks(model, tokenizer, n_blocks=5, seq_len=12, seed=3, batch_size=2)
    c = sample_blocks(model, tokenizer, n_blocks=5, seq_len=12, seed=4, batch_size=2)
    assert a.shape == (5, 12) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert int(a.min()) >= 0 and int(a.max()) < model.config.vocab_size
    assert [d["sequences"] for _, _, d in reporter.events] == [2, 4, 5]
    with pytest.raises(ValueError):
        sample_blocks(model, tokenizer, n_blocks=0, seq_len=12)


def test_near_zero_temperature_is_greedy_decoding(tokenizer: PreTrainedTokenizerFast) -> None:
    """Reference: transformers' own greedy generate from the same start token."""
    model = tiny_llama(seed=1)
    with torch.no_grad():  # peaked logits, so the argmax is unambiguous
        for p in model.parameters():
            p.mul_(4.0 if p.dim() > 1 else 1.0)
    got = sample_blocks(model, tokenizer, n_blocks=2, seq_len=10, temperature=1e-6)
    start = torch.full((2, 1), tokenizer.bos_token_id)
    want = model.generate(start, max_new_tokens=10, do_sample=False, min_new_tokens=10)[:, 1:]
    assert torch.equal(got, want)
