"""Shapes read from checkpoint files (no torch) agree exactly with the loaded model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from slimforge.compression.checkpoint_shapes import read_checkpoint_shapes
from slimforge.compression.configs import DEFAULT_TARGET_MODULES
from slimforge.compression.lowrank import count_parameters, linear_shapes
from tests.compression.helpers import tiny_gpt2, tiny_llama, tiny_mistral, tiny_qwen2


def _by_name(shapes):
    return sorted(shapes, key=lambda s: s.name)


@pytest.mark.parametrize("build", [tiny_llama, tiny_qwen2, tiny_mistral, tiny_gpt2])
def test_safetensors_shapes_match_the_loaded_model(build, tmp_path: Path) -> None:
    model = build()
    model.save_pretrained(tmp_path)
    shapes = read_checkpoint_shapes(tmp_path, gguf_file=None, target_modules=DEFAULT_TARGET_MODULES)
    assert shapes is not None
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert shapes.total_params == count_parameters(reloaded)
    assert _by_name(shapes.linears) == _by_name(linear_shapes(reloaded, DEFAULT_TARGET_MODULES))


def test_targets_filter_and_unknown_formats(tmp_path: Path) -> None:
    tiny_llama().save_pretrained(tmp_path / "m")
    only_q = read_checkpoint_shapes(tmp_path / "m", gguf_file=None, target_modules=["q_proj"])
    assert only_q is not None and {s.name.rsplit(".", 1)[-1] for s in only_q.linears} == {"q_proj"}
    (tmp_path / "empty").mkdir()
    assert (
        read_checkpoint_shapes(tmp_path / "empty", gguf_file=None, target_modules=["q_proj"])
        is None
    )


@pytest.mark.slow
def test_gguf_shapes_match_the_dequantised_smollm2() -> None:
    folder = os.environ.get("SLIMFORGE_SMOLLM2_DIR")
    assert folder, "set SLIMFORGE_SMOLLM2_DIR (scripts/test.sh does) to the SmolLM2 GGUF folder"
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    shapes = read_checkpoint_shapes(
        Path(folder), gguf_file=gguf, target_modules=DEFAULT_TARGET_MODULES
    )
    assert shapes is not None and shapes.total_params == 134_515_008
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    assert shapes.total_params == count_parameters(model)
    assert _by_name(shapes.linears) == _by_name(linear_shapes(model, DEFAULT_TARGET_MODULES))


def test_mixture_of_experts_checkpoints_are_left_to_the_worker(tmp_path: Path) -> None:
    from tests.compression.helpers import tiny_mixtral

    tiny_mixtral().save_pretrained(tmp_path)
    assert (
        read_checkpoint_shapes(tmp_path, gguf_file=None, target_modules=DEFAULT_TARGET_MODULES)
        is None
    )
