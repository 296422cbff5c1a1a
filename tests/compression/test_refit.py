"""The least-squares refit of a pruned MLP's down projection: the solution of the normal
equations equals torch's lstsq on the activations, and it cuts the MLP output error."""

from __future__ import annotations

import copy
from typing import Any

import torch

from slimforge.compression import compress, count_parameters, resolve_target
from slimforge.compression.calibration import collect_input_grams
from slimforge.compression.configs import MinitronConfig
from slimforge.compression.evaluation import fidelity
from slimforge.compression.methods.minitron.method import REFIT_TOKENS_PER_NEURON
from slimforge.compression.progress import NullReporter
from slimforge.compression.pruning.refit import down_projection_names, refit_weight
from tests.compression.helpers import correlated_blocks, tiny_llama


def test_refit_weight_equals_least_squares_on_the_activations() -> None:
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(12, 12, generator=g)
    h = torch.randn(500, 12, generator=g) @ mix  # correlated activations [tokens, inter]
    w = torch.randn(6, 12, generator=g)  # [hidden, inter]
    keep = torch.tensor([0, 2, 3, 7, 8, 11])
    gram = h.double().T @ h.double()
    got = refit_weight(w, gram, keep, ridge=0.0)
    expected = torch.linalg.lstsq(h[:, keep].double(), (h @ w.T).double()).solution.T
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)
    # and it beats keeping the original columns
    plain = ((h[:, keep] @ w[:, keep].T - h @ w.T) ** 2).sum()
    fitted = ((h[:, keep] @ got.T - h @ w.T) ** 2).sum()
    assert fitted < plain


def test_minitron_with_refit_follows_the_teacher_better() -> None:
    teacher = tiny_llama(0, 2).eval()
    blocks = correlated_blocks(24, 32)
    target = resolve_target(count_parameters(teacher), ratio=0.8)
    kl = {}
    for refit in (False, True):
        student = copy.deepcopy(teacher)
        config = MinitronConfig(axes=["mlp"], mlp_multiple=8, refit=refit, search_tokens=128)
        result = compress(student, config, blocks=blocks, target_params=target)
        assert result.details["refit"] is refit
        kl[refit] = fidelity(teacher, student, blocks[:4], n_resamples=10).kl_per_token
    assert kl[True] < kl[False]


def test_down_projection_names_cover_every_block() -> None:
    model = tiny_llama(0, 2)
    names = down_projection_names(model)
    assert names == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    grams, _ = collect_input_grams(model, correlated_blocks(2, 8), names)
    assert grams[names[0]].shape == (128, 128)


class _Events(NullReporter):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    def event(self, message: str, *, data: Any = None, level: str = "info") -> None:
        self.events.append((level, message, data))


def test_a_refit_over_its_memory_budget_is_skipped_with_a_warning() -> None:
    """The Grams of the tiny model (2 blocks x 128² x 8 bytes = 256 KiB) over a 0.0001 GiB
    budget: no refit, the same student as with refit off, and a warning that says why."""
    teacher = tiny_llama(0, 2).eval()
    blocks = correlated_blocks(24, 32)
    target = resolve_target(count_parameters(teacher), ratio=0.8)
    students = []
    events = _Events()
    for refit, budget in ((True, 1e-4), (False, 8.0)):
        student = copy.deepcopy(teacher)
        config = MinitronConfig(axes=["mlp"], mlp_multiple=8, refit=refit, refit_max_gib=budget,
                                search_tokens=128)  # fmt: skip
        result = compress(student, config, blocks=blocks, target_params=target, reporter=events)
        assert result.details["refit"] is False
        students.append(student.state_dict())
    for name, tensor in students[0].items():
        torch.testing.assert_close(tensor, students[1][name])
    warnings = [(m, d) for level, m, d in events.events if level == "warning"]
    assert len(warnings) == 1 and "0.0 GiB" in warnings[0][0] and "refit_max_gib" in warnings[0][0]
    assert warnings[0][1]["gram_bytes"] == 2 * 128**2 * 8


def test_the_ridge_pulls_the_refit_toward_the_original_weights() -> None:
    g = torch.Generator().manual_seed(1)
    h = torch.randn(400, 12, generator=g) @ torch.randn(12, 12, generator=g)
    w = torch.randn(6, 12, generator=g)
    gram = h.double().T @ h.double()
    keep = torch.arange(0, 12, 2)
    gaps = [(refit_weight(w, gram, keep, ridge=r) - w[:, keep]).norm() for r in (1e-4, 1e-1, 1e4)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3 * gaps[0]


def test_a_refit_with_too_few_tokens_per_neuron_is_skipped_with_a_warning() -> None:
    """128 neurons need 4 x 128 = 512 measured tokens; 8 blocks of 32 (4 held for the search)
    measure 128."""
    teacher = tiny_llama(0, 2).eval()
    target = resolve_target(count_parameters(teacher), ratio=0.8)
    events = _Events()
    config = MinitronConfig(axes=["mlp"], mlp_multiple=8, search_tokens=128)
    result = compress(copy.deepcopy(teacher), config, blocks=correlated_blocks(8, 32),
                      target_params=target, reporter=events)  # fmt: skip
    assert result.details["refit"] is False
    (warning,) = [m for level, m, _ in events.events if level == "warning"]
    assert f"fewer than {REFIT_TOKENS_PER_NEURON} per neuron" in warning and "512" in warning
