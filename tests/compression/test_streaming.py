"""Layer streaming: a compute device apart from where the model lives (one layer at a time)."""

from __future__ import annotations

import pytest
import torch

from slimforge.compression import compress
from slimforge.compression.configs import LillamaConfig, SvdConfig
from slimforge.compression.distill.streaming import contexts_on, placed
from slimforge.compression.lowrank import count_parameters
from slimforge.compression.planning import block_index, resolve_target
from tests.compression.helpers import correlated_blocks, tiny_llama

FAST = {"learning_rate": 1e-4, "batch_size": 4, "epochs": 2}


def test_contexts_move_every_tensor_once_and_keep_sharing() -> None:
    cos, sin, mask = torch.ones(2, 3), torch.zeros(2, 3), torch.ones(1, 1, 3, 3)
    shared = ((), {"position_embeddings": (cos, sin), "attention_mask": mask, "flag": True})
    other = ((mask,), {"position_embeddings": [cos, sin], "cache": None})
    moved = contexts_on([shared, shared, other], torch.device("meta"))
    assert moved[0] is moved[1] and moved[0] is not shared  # one copy per distinct context
    kwargs = moved[0][1]
    assert all(t.device.type == "meta" for t in kwargs["position_embeddings"])
    assert kwargs["attention_mask"].device.type == "meta" and kwargs["flag"] is True
    assert isinstance(moved[2][1]["position_embeddings"], list)
    assert moved[2][0][0].device.type == "meta" and moved[2][1]["cache"] is None
    assert cos.device.type == "cpu"  # the originals are untouched


def test_placed_hands_the_layer_back_with_swapped_modules() -> None:
    layer = tiny_llama().model.layers[0]
    with placed(layer, torch.device("cpu")):
        layer.mlp.up_proj = torch.nn.Linear(64, 128, bias=False)
    assert all(p.device.type == "cpu" for p in layer.parameters())
    weight = layer.mlp.up_proj.weight
    with placed(layer, None):  # no device: nothing moves, nothing is copied
        assert layer.mlp.up_proj.weight is weight
    assert layer.mlp.up_proj.weight is weight


@pytest.mark.parametrize("strategy", ["bottom", "energy"])
def test_streamed_lillama_equals_the_in_place_run(strategy: str) -> None:
    """Streaming changes where layers compute, not what they compute; bottom-first streams
    only the layers that change."""
    blocks = correlated_blocks(8, 16)
    config = LillamaConfig(rank_strategy=strategy, **FAST)
    plain, streamed = tiny_llama(layers=4), tiny_llama(layers=4)
    target = resolve_target(count_parameters(plain), ratio=0.9)
    a = compress(plain, config, blocks=blocks, target_params=target)
    b = compress(streamed, config, blocks=blocks, target_params=target, device="cpu")
    assert a.ranks == b.ranks and a.details["streamed_blocks"] == []
    assert a.details["streamed_to"] is None and b.details["streamed_to"] == "cpu"
    for (name, p), (_, q) in zip(
        plain.state_dict().items(), streamed.state_dict().items(), strict=True
    ):
        assert torch.equal(p, q), name
    last = max(block_index(n) or 0 for n in b.ranks)
    assert b.details["streamed_blocks"] == list(range(last + 1))
    if strategy == "bottom":
        assert last < 3  # the top layers never went to the device


def test_whole_model_methods_compute_on_the_device_and_hand_the_model_back() -> None:
    model = tiny_llama()
    target = resolve_target(count_parameters(model), ratio=0.8)
    result = compress(
        model, SvdConfig(), blocks=correlated_blocks(8, 16), target_params=target, device="cpu"
    )
    assert result.params_after == count_parameters(model)
    assert all(p.device.type == "cpu" for p in model.parameters())
