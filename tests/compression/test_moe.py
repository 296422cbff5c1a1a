"""Mixture-of-experts: fused experts split into Linears exactly, then compressed and exported."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from slimforge.compression import compress
from slimforge.compression.configs import LillamaConfig, SvdConfig
from slimforge.compression.export import export_artifact
from slimforge.compression.lowrank import LowRankLinear, count_parameters, find_linears
from slimforge.compression.moe import SplitExperts, split_fused_experts
from slimforge.compression.planning import resolve_target
from tests.compression.helpers import correlated_blocks, run_isolated, tiny_mixtral
from tests.compression.test_export import RELOAD_SCRIPT


def test_split_experts_compute_what_the_fused_module_does() -> None:
    model = tiny_mixtral()
    ids = correlated_blocks(2, 12)
    with torch.no_grad():
        before = model(input_ids=ids).logits
    params = count_parameters(model)
    paths = split_fused_experts(model)
    assert paths == ["model.layers.0.mlp.experts", "model.layers.1.mlp.experts"]
    assert all(isinstance(model.get_submodule(p), SplitExperts) for p in paths)
    assert split_fused_experts(model) == paths  # idempotent
    assert count_parameters(model) == params
    with torch.no_grad():
        after = model(input_ids=ids).logits
    # The fused module may run a grouped-matmul kernel: equal up to float32 rounding.
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    names = find_linears(model, LillamaConfig().target_modules)
    assert "model.layers.1.mlp.experts.experts.3.down_proj" in names
    assert "model.layers.0.mlp.experts.experts.0.gate_up_proj" in names


@pytest.mark.parametrize(
    "config",
    [
        LillamaConfig(learning_rate=1e-4, batch_size=4, epochs=2),
        SvdConfig(),
    ],
    ids=["lillama", "svd"],
)
def test_mixtral_compresses_exports_and_reloads(
    config: LillamaConfig | SvdConfig, tmp_path: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    model = tiny_mixtral()
    target = resolve_target(count_parameters(model), ratio=0.8)
    result = compress(model, config, blocks=correlated_blocks(16, 16), target_params=target)
    assert abs(result.params_after - target) <= 0.01 * target
    experts = [n for n in result.ranks if ".experts." in n]
    assert experts, "the experts hold most parameters: they must be factorised"
    for name in experts:
        assert isinstance(model.get_submodule(name), LowRankLinear)

    dest = tmp_path / "artifact"
    export_artifact(model, tokenizer, dest, model_card="# card\n", lowrank_ranks=result.ranks)
    ids = correlated_blocks(2, 12, seed=5)
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    torch.save(ids, tmp_path / "ids.pt")
    torch.save(ref, tmp_path / "ref.pt")
    out = run_isolated(
        RELOAD_SCRIPT.format(
            path=str(dest), ids=str(tmp_path / "ids.pt"), ref=str(tmp_path / "ref.pt")
        ),
        tmp_path,
    )
    assert out["class"] == "SlimforgeLowRankMixtralForCausalLM"
    assert out["max_diff"] <= 1e-5
    assert out["params"] == result.params_after
    assert len(out["generated"][0]) == 6 + 8
