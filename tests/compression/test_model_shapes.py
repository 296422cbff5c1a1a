"""Shapes read from a model's weight files (no torch) agree exactly with the loaded model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from slimforge.compression.configs import DEFAULT_TARGET_MODULES
from slimforge.compression.lowrank import count_parameters, linear_shapes
from slimforge.compression.model_shapes import read_model_shapes, weight_files
from tests.compression.helpers import (
    save_consolidated,
    tiny_gpt2,
    tiny_llama,
    tiny_mistral,
    tiny_qwen2,
)


def _by_name(shapes):
    return sorted(shapes, key=lambda s: s.name)


@pytest.mark.parametrize("build", [tiny_llama, tiny_qwen2, tiny_mistral, tiny_gpt2])
def test_safetensors_shapes_match_the_loaded_model(build, tmp_path: Path) -> None:
    model = build()
    model.save_pretrained(tmp_path)
    shapes = read_model_shapes(tmp_path, gguf_file=None)
    assert shapes is not None
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert shapes.total_params == count_parameters(reloaded)
    targeted = [s for s in shapes.linears if s.name.rsplit(".", 1)[-1] in DEFAULT_TARGET_MODULES]
    assert _by_name(targeted) == _by_name(linear_shapes(reloaded, DEFAULT_TARGET_MODULES))
    assert shapes.max_positions == reloaded.config.max_position_embeddings
    assert shapes.vocab_size == reloaded.config.vocab_size


def test_unknown_formats(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert read_model_shapes(tmp_path / "empty", gguf_file=None) is None


def test_only_the_files_transformers_loads_are_counted(tmp_path: Path) -> None:
    """Shards named by the index's weight_map are read; a consolidated.safetensors beside them
    (as Mistral's repos ship) is ignored, as transformers ignores it (issue 15, case 2)."""

    model = tiny_mistral()
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    save_consolidated(model, tmp_path / "consolidated.safetensors")
    shapes = read_model_shapes(tmp_path, gguf_file=None)
    assert shapes is not None and shapes.total_params == count_parameters(model)
    files = weight_files(tmp_path, gguf_file=None)
    assert tmp_path / "consolidated.safetensors" not in files
    shards = {p.name for p in tmp_path.glob("model-*.safetensors")}
    assert len(shards) > 1 and shards <= {p.name for p in files}


@pytest.mark.slow
def test_gguf_shapes_match_the_dequantised_smollm2() -> None:
    folder = os.environ.get("SLIMFORGE_SMOLLM2_DIR")
    assert folder, "set SLIMFORGE_SMOLLM2_DIR (scripts/test.sh does) to the SmolLM2 GGUF folder"
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    shapes = read_model_shapes(Path(folder), gguf_file=gguf)
    assert shapes is not None and shapes.total_params == 134_515_008
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    assert shapes.total_params == count_parameters(model)
    assert _by_name(shapes.linears) == _by_name(linear_shapes(model, DEFAULT_TARGET_MODULES))


def test_mixture_of_experts_checkpoints_are_left_to_the_worker(tmp_path: Path) -> None:
    from tests.compression.helpers import tiny_mixtral

    tiny_mixtral().save_pretrained(tmp_path)
    assert read_model_shapes(tmp_path, gguf_file=None) is None
