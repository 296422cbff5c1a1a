"""Input Gram matrices from hooks vs direct float64 computations."""

from __future__ import annotations

import pytest
import torch

from slimforge.compression.calibration import collect_input_grams
from slimforge.compression.lowrank import find_linears
from slimforge.compression.progress import Cancelled, RecordingReporter
from tests.compression.helpers import correlated_blocks, tiny_gpt2, tiny_llama

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def reference_grams(model: torch.nn.Module, blocks: torch.Tensor, names: list[str]) -> dict:
    """Capture every input separately, one block at a time, and form XᵀX in float64."""
    inputs: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    handles = [
        model.get_submodule(n).register_forward_pre_hook(
            lambda _m, args, n=n: inputs[n].append(args[0].detach().reshape(-1, args[0].shape[-1]))
        )
        for n in names
    ]
    with torch.no_grad():
        for row in blocks:
            model(input_ids=row[None])
    for h in handles:
        h.remove()
    out = {}
    for n, xs in inputs.items():
        x = torch.cat(xs).double()
        out[n] = x.T @ x
    return out


def test_grams_match_direct_computation_and_share_inputs() -> None:
    model = tiny_llama()
    blocks = correlated_blocks(6, 16)
    names = list(find_linears(model, ALL))
    grams, tokens = collect_input_grams(model, blocks, names, batch_size=4)
    assert tokens == 6 * 16
    ref = reference_grams(model, blocks, names)
    for n in names:
        assert grams[n].dtype == torch.float64 and grams[n].shape == ref[n].shape
        torch.testing.assert_close(grams[n], ref[n], rtol=1e-5, atol=1e-6)
    # q/k/v (and gate/up) are fed the same tensor: one shared accumulation.
    p = "model.layers.1."
    assert grams[p + "self_attn.q_proj"] is grams[p + "self_attn.k_proj"]
    assert grams[p + "self_attn.q_proj"] is grams[p + "self_attn.v_proj"]
    assert grams[p + "mlp.gate_proj"] is grams[p + "mlp.up_proj"]
    assert grams[p + "self_attn.o_proj"] is not grams[p + "self_attn.q_proj"]
    assert grams[p + "mlp.down_proj"].shape == (128, 128)


def test_first_layer_gram_from_first_principles() -> None:
    model = tiny_llama()
    blocks = correlated_blocks(3, 16)
    name = "model.layers.0.self_attn.q_proj"
    grams, _ = collect_input_grams(model, blocks, [name], batch_size=2)
    with torch.no_grad():
        x = model.model.layers[0].input_layernorm(model.model.embed_tokens(blocks))  # [3, 16, 64]
    x = x.reshape(-1, 64).double()
    torch.testing.assert_close(grams[name], x.T @ x, rtol=1e-6, atol=1e-6)


def test_batch_size_does_not_change_the_result() -> None:
    model = tiny_llama()
    blocks = correlated_blocks(5, 8)
    names = list(find_linears(model, ALL))
    g1, _ = collect_input_grams(model, blocks, names, batch_size=1)
    g5, _ = collect_input_grams(model, blocks, names, batch_size=5)
    for n in names:
        torch.testing.assert_close(g1[n], g5[n], rtol=1e-5, atol=1e-6)


def test_gpt2_conv1d_inputs() -> None:
    model = tiny_gpt2()
    blocks = correlated_blocks(2, 8)
    names = list(find_linears(model, ["c_attn", "c_proj", "c_fc"]))
    grams, _ = collect_input_grams(model, blocks, names)
    ref = reference_grams(model, blocks, names)
    for n in names:
        torch.testing.assert_close(grams[n], ref[n], rtol=1e-5, atol=1e-6)


def test_cancellation_between_batches_and_one_event_per_batch() -> None:
    model = tiny_llama()
    blocks = correlated_blocks(6, 8)
    names = list(find_linears(model, ["q_proj"]))
    reporter = RecordingReporter()
    collect_input_grams(model, blocks, names, batch_size=2, reporter=reporter)
    assert len(reporter.events) == 3 and reporter.checks == 3
    assert reporter.events[-1][2] == {"index": 3, "total": 3, "tokens": 48}
    with pytest.raises(Cancelled):
        collect_input_grams(model, blocks, names, batch_size=2, reporter=RecordingReporter(1))
    # Hooks are removed even after a cancellation.
    assert not model.model.layers[0].self_attn.q_proj._forward_pre_hooks
