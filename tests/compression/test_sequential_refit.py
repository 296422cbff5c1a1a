"""The sequential refit: each pruned block's down weight is the least-squares map from the final
student's own down-projection input to the original block's MLP output (a reference solved by
torch.linalg.lstsq on activations captured by hooks), and minitron uses it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from slimforge.compression import compress, count_parameters, resolve_target
from slimforge.compression.configs import MinitronConfig
from slimforge.compression.evaluation import fidelity
from slimforge.compression.pruning.arch import Arch
from slimforge.compression.pruning.importance import measure_importance
from slimforge.compression.pruning.layout import arch_of, model_layout
from slimforge.compression.pruning.prune import prune_model
from slimforge.compression.pruning.sequential_refit import sequential_refit
from tests.compression.helpers import correlated_blocks, tiny_llama


def _captured(model: torch.nn.Module, blocks: torch.Tensor, what: str) -> list[torch.Tensor]:
    """Each block's down-projection input (``what='in'``) or output [tokens, features]."""
    found: list[list[torch.Tensor]] = [[] for _ in model_layout(model).blocks]
    handles = []
    for i, block in enumerate(model_layout(model).blocks):
        assert block.down is not None

        def hook(_: Any, args: Any, out: torch.Tensor, i: int = i) -> None:
            x = args[0] if what == "in" else out
            found[i].append(x.reshape(-1, x.shape[-1]).double())

        handles.append(block.down.register_forward_hook(hook))
    with torch.no_grad():
        model(input_ids=blocks)
    for h in handles:
        h.remove()
    return [torch.cat(x) for x in found]


def _pruned(teacher: torch.nn.Module, blocks: torch.Tensor) -> torch.nn.Module:
    arch = arch_of(teacher)
    student = copy.deepcopy(teacher)
    importance = measure_importance(teacher, blocks)
    shape = Arch(**{**vars(arch), "intermediate": arch.intermediate // 2})
    prune_model(student, shape, importance, layers=list(range(arch.layers)))
    return student


def test_each_block_is_the_least_squares_fit_on_the_students_own_inputs() -> None:
    teacher = tiny_llama(0, 2).eval()
    blocks = correlated_blocks(8, 16)
    student = _pruned(teacher, blocks)
    done = sequential_refit(teacher, student, blocks, [0, 1], ridge=0.0, batch_size=3)
    assert done == 2
    inputs = _captured(student, blocks, "in")  # the final student's: blocks below are refit
    targets = _captured(teacher, blocks, "out")
    for i, block in enumerate(model_layout(student).blocks):
        assert block.down is not None
        expected = torch.linalg.lstsq(inputs[i], targets[i]).solution.T  # [hidden, k]
        torch.testing.assert_close(block.down.weight.double(), expected, rtol=1e-3, atol=1e-4)


def test_a_huge_ridge_leaves_the_weights_as_they_were() -> None:
    teacher = tiny_llama(0, 2).eval()
    blocks = correlated_blocks(8, 16)
    student = _pruned(teacher, blocks)
    before = [b.down.weight.clone() for b in model_layout(student).blocks if b.down is not None]
    sequential_refit(teacher, student, blocks, [0, 1], ridge=1e9)
    after = [b.down.weight for b in model_layout(student).blocks if b.down is not None]
    for old, new in zip(before, after, strict=True):
        torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-6)


def test_a_student_of_another_hidden_size_is_refused() -> None:
    teacher = tiny_llama(0, 2).eval()
    blocks = correlated_blocks(4, 16)
    student = copy.deepcopy(teacher)
    arch = arch_of(teacher)
    shape = Arch(**{**vars(arch), "hidden": arch.hidden // 2})
    prune_model(student, shape, measure_importance(teacher, blocks), layers=[0, 1])
    with pytest.raises(ValueError, match="hidden size"):
        sequential_refit(teacher, student, blocks, [0, 1], ridge=1e-3)


def test_minitron_refits_sequentially_when_asked() -> None:
    teacher = tiny_llama(0, 2).eval()
    blocks = correlated_blocks(24, 32)
    target = resolve_target(count_parameters(teacher), ratio=0.8)
    kl = {}
    for sequential in (False, True):
        student = copy.deepcopy(teacher)
        config = MinitronConfig(axes=["mlp"], mlp_multiple=8, refit_sequential=sequential,
                                search_tokens=128)  # fmt: skip
        result = compress(student, config, blocks=blocks, target_params=target)
        assert result.details["refit_sequential"] is sequential
        kl[sequential] = fidelity(teacher, student, blocks[:4], n_resamples=10).kl_per_token
    assert MinitronConfig().refit_sequential is False  # measured worse on SmolLM2 (levers)
    assert kl[True] != kl[False], kl
