"""Artifacts: manifest, atomic writes, model card, and reloading with stock transformers only."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from slimforge.compression import compress
from slimforge.compression.configs import SvdConfig
from slimforge.compression.export import ArtifactFile, export_artifact, lowrank_remote_code
from slimforge.compression.lowrank import LowRankLinear, count_parameters
from slimforge.compression.planning import resolve_target
from tests.compression.helpers import (
    correlated_blocks,
    run_isolated,
    tiny_gpt2,
    tiny_llama,
    tiny_qwen2,
)

# Runs in a fresh interpreter with slimforge's packages blocked (see helpers.run_isolated).
RELOAD_SCRIPT = """
import json, torch
from transformers import AutoModelForCausalLM
path = {path!r}
try:
    AutoModelForCausalLM.from_pretrained(path)
    no_trust = "loaded"
except Exception as exc:  # must refuse: custom code needs explicit trust
    no_trust = type(exc).__name__ + ": " + str(exc)
model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
ids = torch.load({ids!r})
ref = torch.load({ref!r})
with torch.no_grad():
    logits = model(input_ids=ids).logits
gen = model.generate(ids[:1, :6], max_new_tokens=8, do_sample=False)
lowrank = sorted(n for n, m in model.named_modules() if type(m).__name__ == "LowRankLinear")
print("RESULT:" + json.dumps({{
    "class": type(model).__name__,
    "max_diff": float((logits - ref).abs().max()),
    "generated": gen.tolist(),
    "no_trust": no_trust,
    "lowrank": lowrank,
    "params": sum(p.numel() for p in model.parameters()),
}}))
"""


def compress_tiny(factory: Callable[[], PreTrainedModel], ratio: float = 0.8) -> tuple:
    model = factory()
    target = resolve_target(count_parameters(model), ratio=ratio)
    result = compress(model, SvdConfig(), blocks=correlated_blocks(8, 16), target_params=target)
    assert abs(result.params_after - target) <= 0.01 * target
    return model, result


def check_manifest(root: Path, files: list[ArtifactFile]) -> dict:
    manifest = json.loads((root / "manifest.json").read_text())
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    listed = sorted(f["path"] for f in manifest["files"])
    assert listed == [p for p in on_disk if p != "manifest.json"]
    for entry in manifest["files"]:
        data = (root / entry["path"]).read_bytes()
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert [f.path for f in files] == [*listed, "manifest.json"]
    return manifest


@pytest.mark.parametrize("factory", [tiny_llama, tiny_qwen2, tiny_gpt2])
def test_lowrank_artifact_reloads_with_transformers_only(
    factory: Callable[[], PreTrainedModel],
    tmp_path: Path,
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    model, result = compress_tiny(factory)
    dest = tmp_path / "artifact"
    files = export_artifact(
        model,
        tokenizer,
        dest,
        model_card="# card\n",
        lowrank_ranks=result.ranks,
        metadata={"job_id": "j1"},
    )
    manifest = check_manifest(dest, files)
    assert manifest["metadata"] == {"job_id": "j1"} and manifest["lowrank"] is True
    names = {f.path for f in files}
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "README.md",
        "tokenizer.json",
        "configuration_slimforge_lowrank.py",
        "modeling_slimforge_lowrank.py",
    } <= names
    config = json.loads((dest / "config.json").read_text())
    assert config["model_type"] == "slimforge_lowrank"
    assert config["lowrank_ranks"] == result.ranks
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModelForCausalLM"}
    assert "quantization_config" not in config
    assert not list(tmp_path.glob(".artifact.partial-*"))

    ids = correlated_blocks(2, 12, seed=5)
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        expected_gen = model.generate(ids[:1, :6], max_new_tokens=8, do_sample=False)
    torch.save(ids, tmp_path / "ids.pt")
    torch.save(ref, tmp_path / "ref.pt")
    out = run_isolated(
        RELOAD_SCRIPT.format(
            path=str(dest), ids=str(tmp_path / "ids.pt"), ref=str(tmp_path / "ref.pt")
        ),
        tmp_path,
    )
    assert out["class"] == f"SlimforgeLowRank{type(model).__name__}"
    assert out["max_diff"] <= 1e-5
    assert out["generated"] == expected_gen.tolist()
    assert out["lowrank"] == sorted(result.ranks)
    assert out["params"] == result.params_after
    assert out["no_trust"] != "loaded" and "trust_remote_code" in out["no_trust"]


def test_dense_export_uses_plain_save_pretrained(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    model = tiny_llama()
    dest = tmp_path / "dense"
    files = export_artifact(model, tokenizer, dest, model_card="# dense\n")
    manifest = check_manifest(dest, files)
    assert manifest["lowrank"] is False and manifest["metadata"] == {}
    assert not (dest / "modeling_slimforge_lowrank.py").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(dest)  # no trust_remote_code needed
    ids = correlated_blocks(1, 8)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert (dest / "README.md").read_text() == "# dense\n"


def test_destination_must_not_exist_and_failures_leave_nothing(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    model = tiny_llama()
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        export_artifact(model, tokenizer, tmp_path / "taken", model_card="")
    # Ranks that do not describe the model: refused, and no partial folder remains.
    with pytest.raises(ValueError, match="lowrank_ranks"):
        export_artifact(
            model,
            tokenizer,
            tmp_path / "bad",
            model_card="",
            lowrank_ranks={"model.layers.0.self_attn.q_proj": 8},
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_remote_code_embeds_the_library_class_source() -> None:
    files = lowrank_remote_code(tiny_llama())
    modeling = files["modeling_slimforge_lowrank.py"]
    assert "class LowRankLinear(nn.Module):" in modeling
    assert "from transformers.models.llama.modeling_llama import LlamaForCausalLM" in modeling
    assert (
        "from transformers.models.llama.configuration_llama import LlamaConfig"
        in (files["configuration_slimforge_lowrank.py"])
    )
    assert "compression" not in modeling.replace("compressed", "")
    compile(modeling, "modeling_slimforge_lowrank.py", "exec")
    # The library's class is injected verbatim: the same maths by construction, no second copy.
    assert inspect.getsource(LowRankLinear) in modeling


def test_a_lowrank_artifact_reads_back_without_warnings(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    """Reading a low-rank artifact's config and tokenizer without trust_remote_code raised
    transformers' trust prompt and "You are using a model of type `slimforge_lowrank` to
    instantiate a model of type ``" (issue 15, case 14): the model type is registered."""
    import logging
    import warnings

    from transformers import AutoConfig, AutoTokenizer

    model, result = compress_tiny(tiny_llama)
    dest = tmp_path / "artifact"
    export_artifact(model, tokenizer, dest, model_card="x", lowrank_ranks=result.ranks)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            config = AutoConfig.from_pretrained(dest)
            loaded = AutoTokenizer.from_pretrained(dest)
    finally:
        logger.removeHandler(handler)
    assert config.model_type == "slimforge_lowrank" and config.lowrank_ranks == result.ranks
    assert loaded("ab")["input_ids"] == tokenizer("ab")["input_ids"]
    messages = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    messages += [str(w.message) for w in caught]
    assert not [m for m in messages if "slimforge_lowrank" in m or "custom code" in m], messages
