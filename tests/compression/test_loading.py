"""Loading models from local directories, with clear errors for missing inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from slimforge.compression.loading import ModelSource, load_model
from tests.compression.helpers import correlated_blocks, tiny_llama


def test_local_directory_round_trip(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    model = tiny_llama()
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")  # has no pad token
    loaded, tok = load_model(ModelSource(path=str(tmp_path / "m")))
    assert tok.pad_token == tok.eos_token == "</s>"
    assert not loaded.training
    ids = correlated_blocks(1, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    half, _ = load_model(ModelSource(path=str(tmp_path / "m")), dtype=torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        load_model(ModelSource(path=str(tmp_path / "nowhere")))
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_model(ModelSource(path=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match=r"GGUF file 'x\.gguf' not found"):
        load_model(ModelSource(path=str(tmp_path), gguf_file="x.gguf"))
    with pytest.raises(ValueError, match="exactly one"):
        load_model(ModelSource())
