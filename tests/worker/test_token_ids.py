"""A tokenizer that is not the model's (ids past its embedding) fails the job with a message
that says so, not with torch's bare ``IndexError: index out of range in self`` (issue 15, case 4:
the vocabulary family)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from transformers import LlamaConfig, LlamaForCausalLM

from bench.tiny import VOCAB, char_tokenizer, tiny_llama
from slimforge.app.settings import Settings
from slimforge.contract.jobs import TextData
from slimforge.worker.job_spec import text_blocks
from slimforge.worker.runner import run_job
from tests.builders import job_body, submit


def _config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
    )


def _text(tmp_path: Path) -> TextData:
    path = tmp_path / "text.txt"
    path.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    return TextData(path=str(path), max_tokens=256, seq_len=64)


def test_ids_past_the_embedding_are_refused_with_the_reason(tmp_path: Path) -> None:
    small = 100  # the character tokenizer gives a character its code point: 'z' is 122
    model = LlamaForCausalLM(_config(small)).eval()
    with pytest.raises(ValueError, match=rf"model's embedding has {small} rows") as caught:
        text_blocks(model, char_tokenizer(), _text(tmp_path))
    assert "does not belong to this model" in str(caught.value)


def test_the_models_own_tokenizer_passes(tmp_path: Path) -> None:
    blocks = text_blocks(tiny_llama(), char_tokenizer(), _text(tmp_path))
    assert blocks.shape[1] == 64 and int(blocks.max()) < VOCAB


def test_a_job_with_a_foreign_tokenizer_fails_at_calibrating_with_the_reason(
    api: TestClient, auth, settings: Settings, text_files, tmp_path: Path
) -> None:
    folder = tmp_path / "foreign-tokenizer"
    LlamaForCausalLM(_config(vocab_size=100)).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)  # gives ids up to 126
    body = job_body(folder, text_files["calibration"], seq_len=64, target={"ratio": 0.85})
    job_id = submit(api, auth(), body)
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "failed"
    job = api.get(f"/v1/jobs/{job_id}", headers=auth()).json()
    assert job["stage"] == "calibrating" and "does not belong to this model" in job["error"]
