"""Local distillation of pruned MLPs (``minitron``'s ``local_distill_epochs``)."""

from __future__ import annotations

import copy

import pytest
import torch

from slimforge.compression import compress, count_parameters, resolve_target
from slimforge.compression.configs import MinitronConfig
from slimforge.compression.evaluation import fidelity
from slimforge.compression.pruning.arch import Arch
from slimforge.compression.pruning.importance import measure_importance
from slimforge.compression.pruning.layout import arch_of, model_layout
from slimforge.compression.pruning.local_distill import capture_mlp_io, distill_mlps_locally
from slimforge.compression.pruning.prune import prune_model
from tests.compression.helpers import correlated_blocks, tiny_llama


def _pruned(teacher: torch.nn.Module, blocks: torch.Tensor, layers: list[int]) -> torch.nn.Module:
    arch = arch_of(teacher)
    student = copy.deepcopy(teacher)
    shape = Arch(**{**vars(arch), "intermediate": arch.intermediate // 2, "layers": len(layers)})
    prune_model(student, shape, measure_importance(teacher, blocks), layers=layers)
    return student


def test_captured_io_is_each_mlps_input_and_output() -> None:
    teacher = tiny_llama(0, 2).eval()
    blocks = correlated_blocks(5, 16)
    io = capture_mlp_io(teacher, blocks, [0, 1], batch_size=2)
    for i, block in enumerate(model_layout(teacher).blocks):
        x, y = io[i]
        assert x.shape == (5 * 16, arch_of(teacher).hidden) == y.shape
        with torch.no_grad():  # reference: the MLP applied directly to the captured input
            expected = block.block.get_submodule("mlp")(x)
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)


def test_training_lowers_each_blocks_error_and_only_touches_its_mlp() -> None:
    teacher = tiny_llama(0, 3).eval()
    blocks = correlated_blocks(8, 16)
    layers = [0, 2]  # block 1 dropped: student block j is teacher block layers[j]
    io = capture_mlp_io(teacher, blocks, layers)
    student = _pruned(teacher, blocks, layers)
    attention = [b.q.weight.clone() for b in model_layout(student).blocks]
    result = distill_mlps_locally(student, io, layers, epochs=5, lr=1e-3, batch_tokens=32)
    assert result.blocks == 2
    assert result.error_after < 0.7 * result.error_before, result
    for b, q in zip(model_layout(student).blocks, attention, strict=True):
        torch.testing.assert_close(b.q.weight, q, rtol=0, atol=0)  # attention untouched
        assert all(p.grad is None for p in b.block.parameters())


def test_a_student_of_another_hidden_size_is_refused() -> None:
    teacher = tiny_llama(0, 2).eval()
    blocks = correlated_blocks(4, 16)
    io = capture_mlp_io(teacher, blocks, [0, 1])
    student = copy.deepcopy(teacher)
    arch = arch_of(teacher)
    shape = Arch(**{**vars(arch), "hidden": arch.hidden // 2})
    prune_model(student, shape, measure_importance(teacher, blocks), layers=[0, 1])
    with pytest.raises(ValueError, match="hidden size"):
        distill_mlps_locally(student, io, [0, 1], epochs=1, lr=1e-3)


def test_minitron_distills_locally_when_asked_and_it_brings_the_student_closer() -> None:
    teacher = tiny_llama(0, 2).eval()
    blocks = correlated_blocks(24, 32)
    target = resolve_target(count_parameters(teacher), ratio=0.8)
    kl = {}
    for epochs in (0, 4):
        student = copy.deepcopy(teacher)
        config = MinitronConfig(axes=["mlp"], mlp_multiple=8, search_tokens=128,
                                local_distill_epochs=epochs, local_distill_lr=1e-3)  # fmt: skip
        result = compress(student, config, blocks=blocks, target_params=target)
        local = result.details["local_distill"]
        assert (local is None) == (epochs == 0)
        kl[epochs] = fidelity(teacher, student, blocks[:4], n_resamples=10).kl_per_token
    assert kl[4] < kl[0], kl
