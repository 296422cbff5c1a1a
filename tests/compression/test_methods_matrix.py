"""Every registered method over a matrix of tiny architectures: plan, compress, export, reload,
same logits (as peft's tests/test_custom_models.py does for its tuners).

A new method is tested here by being registered: its default parameters are used unless
``FAST`` gives quicker ones, and a combination it does not support is listed in ``UNSUPPORTED``
with the reason (the test then checks that the method refuses it with an error, rather than
skipping silently).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    dynamic_module_utils,
)

from slimforge.compression import compress
from slimforge.compression.export import export_artifact
from slimforge.compression.lowrank import LowRankLinear, count_parameters
from slimforge.compression.methods import get_method, method_specs
from slimforge.compression.planning import resolve_target
from tests.compression.helpers import (
    correlated_blocks,
    tiny_gpt2,
    tiny_llama,
    tiny_mistral,
    tiny_phi,
    tiny_qwen2,
)

ARCHITECTURES: dict[str, Callable[[], PreTrainedModel]] = {
    "llama": tiny_llama,
    "qwen2": tiny_qwen2,
    "gpt2": tiny_gpt2,
    "mistral": tiny_mistral,
    "phi": tiny_phi,
}
# Quicker parameters for the tiny models (defaults are tuned for real ones).
FAST: dict[str, dict[str, Any]] = {
    # minitron's default multiples miss the tiny widths (refused, then svd is built and wins)
    "auto": {"architecture": "any", "candidates": ["mlp", "svd"], "probe_tokens": 32},
    "lillama": {"batch_size": 4, "max_steps_per_block": 2},
    "minitron": {"hidden_multiple": 16, "mlp_multiple": 8, "max_candidates": 2},
}
# (method, architecture) -> why the method refuses it.
UNSUPPORTED: dict[tuple[str, str], str] = {
    ("minitron", "gpt2"): "minitron prunes decoders laid out as model.layers[i].self_attn/mlp; "
    "GPT-2's transformer.h blocks with a fused c_attn are not modelled",
}
RATIO = 0.8


@pytest.fixture(scope="module")
def modules_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One folder for the artifacts' remote code (low-rank models), for the whole module:
    transformers imports it as the package ``transformers_modules`` once per process, and it
    must not be the user's Hugging Face cache."""
    folder = tmp_path_factory.mktemp("hf_modules")
    loaded = {n: m for n, m in sys.modules.items() if n.split(".")[0] == "transformers_modules"}
    with pytest.MonkeyPatch.context() as patch:
        for name in loaded:  # a package imported from another cache folder would shadow ours
            patch.delitem(sys.modules, name)
        patch.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(folder))
        patch.syspath_prepend(str(folder))
        yield folder
    for name in [n for n in sys.modules if n.split(".")[0] == "transformers_modules"]:
        del sys.modules[name]
    sys.modules.update(loaded)


def _cases() -> list[Any]:
    cases = []
    for spec in method_specs():
        for arch in ARCHITECTURES:
            reason = UNSUPPORTED.get((spec.name, arch))
            cases.append(pytest.param(spec.name, arch, reason, id=f"{spec.name}-{arch}"))
    return cases


def _config(name: str) -> Any:
    spec = next(s for s in method_specs() if s.name == name)
    return spec.config_class.model_validate(FAST.get(name, {}))


@pytest.mark.parametrize(("method", "arch", "unsupported"), _cases())
def test_method_on_architecture(
    method: str,
    arch: str,
    unsupported: str | None,
    tmp_path: Path,
    tokenizer: PreTrainedTokenizerFast,
    modules_cache: Path,
) -> None:
    model = ARCHITECTURES[arch]()
    config = _config(method)
    target = resolve_target(count_parameters(model), ratio=RATIO)
    if unsupported is not None:  # documented as unsupported: refused before any work
        with pytest.raises(ValueError):
            get_method(method).plan(model, config, target_params=target)
        return

    plan = get_method(method).plan(model, config, target_params=target)
    assert abs(plan.params_after / target - 1) <= 0.01
    blocks = correlated_blocks(8, 16)
    result = compress(model, config, blocks=blocks, target_params=target)
    assert result.params_after == count_parameters(model) < result.params_before
    assert abs(result.params_after / target - 1) <= 0.01
    with torch.no_grad():
        expected = model(input_ids=blocks[:2]).logits

    lowrank = {n: m.rank for n, m in model.named_modules() if isinstance(m, LowRankLinear)}
    dest = tmp_path / f"{method}-{arch}"  # a distinct dynamic-module name per case
    export_artifact(model, tokenizer, dest, model_card="test", lowrank_ranks=lowrank or None)
    reloaded = AutoModelForCausalLM.from_pretrained(dest, trust_remote_code=bool(lowrank)).eval()
    assert count_parameters(reloaded) == result.params_after
    # What the config promises the API (which output formats it allows) holds: a standard
    # result has no custom module and reloads as the source's own transformers class.
    assert config.standard_architecture() == (not lowrank)
    assert (type(reloaded) is type(model)) == config.standard_architecture()
    with torch.no_grad():
        got = reloaded(input_ids=blocks[:2]).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
