"""Minitron's measurements: importance and the refit's Grams come from one forward pass and
equal what each measured alone gives."""

from __future__ import annotations

import torch

from slimforge.compression.calibration import collect_input_grams
from slimforge.compression.methods.minitron.config import MinitronConfig
from slimforge.compression.methods.minitron.measure import Measurements, measure_model
from slimforge.compression.progress import NullReporter
from slimforge.compression.pruning.importance import measure_importance
from slimforge.compression.pruning.layout import arch_of
from slimforge.compression.pruning.refit import down_projection_names
from tests.compression.helpers import correlated_blocks, tiny_llama


def test_one_pass_gives_the_importance_and_grams_each_pass_gives_alone() -> None:
    model = tiny_llama(0, 2).eval()
    blocks = correlated_blocks(40, 16)  # 608 measured tokens: over 4 per MLP neuron
    measure, search = blocks[:38], blocks[38:]
    memo = Measurements()
    forwards: list[int] = []
    hook = model.model.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        importance, grams = measure_model(
            model, MinitronConfig(axes=["mlp"]), arch_of(model), measure, search,
            NullReporter(), memo,
        )  # fmt: skip
    finally:
        hook.remove()
    assert len(forwards) == 10  # one pass: 38 blocks in batches of 4
    assert grams is not None and memo.reused == []
    names = down_projection_names(model)
    alone, _ = collect_input_grams(model, measure, names)
    assert grams.keys() == alone.keys()
    for name in names:
        torch.testing.assert_close(grams[name], alone[name], rtol=1e-10, atol=1e-8)
    reference = measure_importance(model, measure)
    for field in ("heads", "neurons", "hidden", "layers"):
        torch.testing.assert_close(getattr(importance, field), getattr(reference, field))


def test_too_few_tokens_measure_importance_without_grams() -> None:
    model = tiny_llama(0, 2).eval()
    blocks = correlated_blocks(8, 16)  # 96 measured tokens: under 4 per MLP neuron
    memo = Measurements()
    _, grams = measure_model(model, MinitronConfig(axes=["mlp"]), arch_of(model), blocks[:6],
                             blocks[6:], NullReporter(), memo)  # fmt: skip
    assert grams is None and memo.grams is None and memo.importance is not None


def test_grams_asked_for_after_importance_was_cached_take_their_own_pass() -> None:
    """A pruning without the refit measures importance only; a later one with it reuses that
    importance and measures the Grams alone."""
    model = tiny_llama(0, 2).eval()
    blocks = correlated_blocks(40, 16)
    memo = Measurements()
    args = (arch_of(model), blocks[:38], blocks[38:], NullReporter(), memo)
    _, none = measure_model(model, MinitronConfig(axes=["mlp"], refit=False), *args)
    assert none is None and memo.grams is None
    _, grams = measure_model(model, MinitronConfig(axes=["mlp"]), *args)
    assert grams is not None and memo.reused == ["importance"]
    alone, _ = collect_input_grams(model, blocks[:38], down_projection_names(model))
    for name, gram in alone.items():
        torch.testing.assert_close(grams[name], gram, rtol=1e-10, atol=1e-8)
