"""Calibration text sampled from the model itself: seeding, prefixes, chat formatting,
progress, cancellation and the per-model cache."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import PreTrainedTokenizerFast

from slimforge.compression.progress import Cancelled, RecordingReporter
from slimforge.compression.prompts import PROMPTS
from slimforge.compression.synthetic import ANSWER_TOKENS, sample_blocks, sample_stream
from slimforge.compression.synthetic_cache import model_fingerprint
from tests.compression.helpers import tiny_llama

# A chat template in the common "role: content" shape, written with the char tokenizer's own
# special tokens so that it tokenises.
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


@contextmanager
def counting_forwards(model: nn.Module) -> Iterator[list[int]]:
    """Counts the model's forward calls (one per decoding step) while the block runs."""
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    handle = model.register_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def test_sampling_is_seeded_shaped_and_fewer_blocks_are_a_prefix(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    model = tiny_llama()
    a = sample_blocks(model, tokenizer, n_blocks=5, seq_len=12, seed=3, batch_size=2)
    b = sample_blocks(model, tokenizer, n_blocks=5, seq_len=12, seed=3, batch_size=2)
    c = sample_blocks(model, tokenizer, n_blocks=5, seq_len=12, seed=4, batch_size=2)
    short = sample_blocks(model, tokenizer, n_blocks=2, seq_len=12, seed=3, batch_size=2)
    assert a.shape == (5, 12) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(short, a[:2])
    assert int(a.min()) >= 0 and int(a.max()) < model.config.vocab_size
    assert int(a[0, 0]) == tokenizer.bos_token_id  # a base model's document starts at BOS
    with pytest.raises(ValueError):
        sample_blocks(model, tokenizer, n_blocks=0, seq_len=12)
    with pytest.raises(ValueError):
        sample_blocks(model, tokenizer, n_blocks=1, seq_len=12, temperature=0.0)


def test_near_zero_temperature_or_nucleus_is_greedy_decoding(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    """Reference: argmax of a full forward pass per step (no KV cache, no generate)."""
    model = tiny_llama(seed=1)
    with torch.no_grad():  # peaked logits, so the argmax is unambiguous
        for p in model.parameters():
            p.mul_(4.0 if p.dim() > 1 else 1.0)
    seq_len = 10
    got = sample_blocks(model, tokenizer, n_blocks=1, seq_len=seq_len, temperature=1e-6)
    nucleus = sample_blocks(model, tokenizer, n_blocks=1, seq_len=seq_len, top_p=1e-9)
    ids = [tokenizer.bos_token_id]  # the document: BOS, then tokens up to EOS
    with torch.no_grad():
        while len(ids) < seq_len and (len(ids) == 1 or ids[-1] != tokenizer.eos_token_id):
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits
            ids.append(int(logits[0, -1].argmax()))
    assert got[0, : len(ids)].tolist() == ids
    assert nucleus[0, : len(ids)].tolist() == ids  # a nucleus of one token: the argmax


def test_an_instruct_tokenizer_gets_chat_formatted_instructions(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    tokenizer.chat_template = CHAT_TEMPLATE
    model = tiny_llama()
    text = sample_stream(model, tokenizer, tokens=600, seq_len=32, rows=4)
    assert text.chat
    docs = str(tokenizer.decode(text.stream, skip_special_tokens=False)).replace(" ", "")
    starts = docs.split("<s>user:")[1:]
    assert len(starts) >= 4  # one document per row at least
    squeezed = {p.replace(" ", "") for p in PROMPTS}
    for doc in starts:
        prompt, opened, _ = doc.partition("</s><s>assistant:")
        assert prompt in squeezed and opened  # the request, then the assistant's turn
    assert docs.startswith("<s>user:")


def test_progress_events_and_cancellation(tokenizer: PreTrainedTokenizerFast) -> None:
    model = tiny_llama()
    reporter = RecordingReporter()
    sample_stream(
        model, tokenizer, tokens=200, seq_len=16, rows=2, reporter=reporter, progress_seconds=0
    )
    steps = [d for _, msg, d in reporter.events if msg == "sampling calibration text"]
    assert len(steps) >= 8  # one per decoding step with progress_seconds=0
    assert [d["tokens"] for d in steps] == sorted(d["tokens"] for d in steps)
    assert all(d["total"] == 200 and d["tokens_per_second"] > 0 for d in steps)
    (last,) = [d for _, msg, d in reporter.events if msg == "sampled calibration text"]
    assert last["tokens"] == 200 and last["cached_tokens"] == 0
    with pytest.raises(Cancelled):
        sample_stream(
            model,
            tokenizer,
            tokens=200,
            seq_len=16,
            rows=2,
            reporter=RecordingReporter(cancel_after=3),
        )


def test_the_cache_serves_a_second_job_and_prefixes_without_sampling(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    model = tiny_llama()
    fresh = sample_blocks(model, tokenizer, n_blocks=6, seq_len=16, batch_size=2)
    with counting_forwards(model) as calls:
        first = sample_blocks(
            model, tokenizer, n_blocks=4, seq_len=16, batch_size=2, cache_dir=tmp_path
        )
    assert calls[0] > 0 and torch.equal(first, fresh[:4])
    with counting_forwards(model) as calls:
        again = sample_blocks(
            model, tokenizer, n_blocks=4, seq_len=16, batch_size=2, cache_dir=tmp_path
        )
        fewer = sample_blocks(
            model, tokenizer, n_blocks=2, seq_len=16, batch_size=2, cache_dir=tmp_path
        )
    assert calls[0] == 0
    assert torch.equal(again, first) and torch.equal(fewer, first[:2])
    # More tokens: only the missing rounds are sampled, and the text is what a fresh run gives.
    with counting_forwards(model) as calls:
        more = sample_blocks(
            model, tokenizer, n_blocks=6, seq_len=16, batch_size=2, cache_dir=tmp_path
        )
    assert calls[0] > 0 and torch.equal(more, fresh)
    # Another seed or nucleus is another entry.
    for other in ({"seed": 9}, {"top_p": 0.5}):
        with counting_forwards(model) as calls:
            sample_blocks(
                model,
                tokenizer,
                n_blocks=2,
                seq_len=16,
                batch_size=2,
                cache_dir=tmp_path,
                **other,
            )
        assert calls[0] > 0
    assert len(list((tmp_path / "synthetic").glob("*.safetensors"))) == 3
    assert not list((tmp_path / "synthetic").glob("*.tmp"))


def test_other_weights_are_another_cache_entry(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    model = tiny_llama()
    before = model_fingerprint(model)
    sample_blocks(model, tokenizer, n_blocks=2, seq_len=16, batch_size=2, cache_dir=tmp_path)
    with torch.no_grad():  # a fine-tune moves every weight a little
        model.model.layers[1].mlp.down_proj.weight.mul_(1.001)
    assert model_fingerprint(model) != before
    with counting_forwards(model) as calls:
        sample_blocks(model, tokenizer, n_blocks=2, seq_len=16, batch_size=2, cache_dir=tmp_path)
    assert calls[0] > 0


def test_answers_stop_at_answer_tokens_when_seq_len_is_longer(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    model = tiny_llama()
    text = sample_stream(model, tokenizer, tokens=1, seq_len=ANSWER_TOKENS + 100, rows=2)
    # One round of two rows, each BOS + at most ANSWER_TOKENS new tokens.
    assert text.row_steps <= 2 * ANSWER_TOKENS
    assert text.sampled_tokens <= 2 * ANSWER_TOKENS
    assert text.stream.numel() <= 2 * (1 + ANSWER_TOKENS)
