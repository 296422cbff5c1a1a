"""Write a compressed model as a Hugging Face folder that stock transformers loads.

Dense models are written with plain ``save_pretrained``. Low-rank models additionally ship their
modelling code (generated from ``templates/*.py.tmpl``, with the very source of
``LowRankLinear`` injected) and an ``auto_map``, so that
``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`` needs nothing but torch and
transformers. Every artifact ends with ``manifest.json`` (size and sha256 of every other file).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
import string
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from slimforge.compression.lowrank import LowRankLinear
from slimforge.compression.lowrank_auto import LOWRANK_MODEL_TYPE, register_lowrank_config
from slimforge.compression.moe import Expert, SplitExperts

__all__ = [
    "ArtifactFile",
    "add_artifact_files",
    "export_artifact",
    "lowrank_class_name",
    "lowrank_remote_code",
]

_TEMPLATES = Path(__file__).parent / "templates"
CONFIG_FILE = "configuration_slimforge_lowrank.py"
MODELING_FILE = "modeling_slimforge_lowrank.py"
MANIFEST_FILE = "manifest.json"
register_lowrank_config()  # artifacts written here read back silently in this process


@dataclass(frozen=True)
class ArtifactFile:
    """One file of an artifact, relative to its root."""

    path: str
    size: int
    sha256: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _transformers_path(cls: type) -> str:
    """``models.llama.modeling_llama`` for a class defined inside the transformers package."""
    module = cls.__module__
    if not module.startswith("transformers."):
        raise ValueError(
            f"{cls.__name__} is not a transformers class ({module}); only models whose base "
            "architecture ships with transformers can be exported as low-rank artifacts"
        )
    return module.removeprefix("transformers.")


def lowrank_class_name(model: nn.Module) -> str:
    """``SlimforgeLowRank`` + the base class name (``SlimforgeLowRankMambaForCausalLM``).

    transformers decides some generation behaviour from the class name (a "mamba" in it selects
    the state cache instead of the key/value cache), so the base name must stay in it.
    """
    return f"SlimforgeLowRank{type(model).__name__}"


def lowrank_remote_code(model: nn.Module) -> dict[str, str]:
    """The two remote-code files (name -> source) for a low-rank version of ``model``'s class."""
    config_cls = type(model.config)
    values = {
        "config_module": _transformers_path(config_cls),
        "config_class": config_cls.__name__,
        "model_module": _transformers_path(type(model)),
        "model_class": type(model).__name__,
        "lowrank_class": lowrank_class_name(model),
        "lowrank_source": inspect.getsource(LowRankLinear),
        "experts_source": inspect.getsource(Expert) + "\n\n" + inspect.getsource(SplitExperts),
    }
    return {
        name: string.Template((_TEMPLATES / f"{name}.tmpl").read_text()).substitute(values)
        for name in (CONFIG_FILE, MODELING_FILE)
    }


def _check_ranks(model: nn.Module, ranks: dict[str, int]) -> None:
    # The config must describe exactly the modules in the state dict, or loading breaks.
    found = {n: m.rank for n, m in model.named_modules() if isinstance(m, LowRankLinear)}
    wanted = {n: int(r) for n, r in ranks.items()}
    if found != wanted:
        differ = sorted(n for n in set(found) | set(wanted) if found.get(n) != wanted.get(n))
        raise ValueError(
            "lowrank_ranks do not match the model's LowRankLinear modules "
            "(name: given rank / model rank): "
            + ", ".join(f"{n}: {wanted.get(n)} / {found.get(n)}" for n in differ[:5])
        )


def _check_saved_keys(root: Path, model: nn.Module) -> None:
    """Every parameter and buffer the reloaded model needs must be in the files by its name."""
    from safetensors import safe_open

    saved: set[str] = set()
    for path in root.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            saved.update(f.keys())
    # Tied parameters are saved once; the reloaded model ties them again.
    ids: dict[int, str] = {}
    missing = []
    for name, tensor in model.state_dict(keep_vars=True).items():
        first = ids.setdefault(id(tensor), name)
        if name not in saved and first not in saved and name.endswith("weight"):
            missing.append(name)
    if missing:
        raise RuntimeError(
            f"the saved weights lack {len(missing)} tensors of the model (e.g. {missing[:3]}): "
            "the artifact would reload with random weights"
        )


def _write_lowrank_config(root: Path, model: nn.Module, ranks: dict[str, int]) -> None:
    path = root / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["slimforge_base_model_type"] = config.get("model_type")
    config["model_type"] = LOWRANK_MODEL_TYPE
    class_name = lowrank_class_name(model)
    config["architectures"] = [class_name]
    config["auto_map"] = {
        "AutoConfig": f"{CONFIG_FILE[:-3]}.SlimforgeLowRankConfig",
        "AutoModelForCausalLM": f"{MODELING_FILE[:-3]}.{class_name}",
    }
    config["lowrank_ranks"] = {n: int(r) for n, r in ranks.items()}
    split = [n for n, m in model.named_modules() if isinstance(m, SplitExperts)]
    if split:  # fused MoE experts were split into Linears: the loader must split them too
        config["slimforge_split_experts"] = split
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for name, source in lowrank_remote_code(model).items():
        (root / name).write_text(source, encoding="utf-8")


def export_artifact(
    model: nn.Module,
    tokenizer: Any,
    dest: Path,
    *,
    model_card: str,
    lowrank_ranks: dict[str, int] | None = None,
    metadata: dict[str, Any] | None = None,
) -> list[ArtifactFile]:
    """Write the artifact folder ``dest`` (which must not exist) and return its files.

    Everything is written into a temporary sibling directory that is renamed to ``dest`` at the
    end, so ``dest`` either does not exist or is complete. ``manifest.json`` is written last and
    lists every other file; the returned list includes it as its last entry. A leftover
    ``quantization_config`` (GGUF-dequantised models) is removed from ``model.config``: the
    weights are dense and the marker would make the artifact unloadable.
    """
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"artifact destination already exists: {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        config = model.config
        if hasattr(config, "quantization_config"):  # a dequantised GGUF model is dense now
            delattr(config, "quantization_config")
        if lowrank_ranks:
            _check_ranks(model, lowrank_ranks)
        # A low-rank model is reloaded under its own model type, to which no checkpoint
        # conversion applies: save the weights under their module names. (The default
        # "original format" renames Mixtral's mlp.* to block_sparse_moe.*, and the reload
        # would then start from random weights.)
        model.save_pretrained(tmp, save_original_format=not lowrank_ranks)  # type: ignore[operator]
        tokenizer.save_pretrained(tmp)
        if lowrank_ranks:
            _check_saved_keys(tmp, model)
            _write_lowrank_config(tmp, model, lowrank_ranks)
        (tmp / "README.md").write_text(model_card, encoding="utf-8")
        files = _write_manifest(tmp, lowrank=bool(lowrank_ranks), metadata=metadata or {})
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files


def _write_manifest(root: Path, *, lowrank: bool, metadata: dict[str, Any]) -> list[ArtifactFile]:
    """Write ``root/manifest.json`` listing every other file; the files, manifest last."""
    files = [
        ArtifactFile(p.relative_to(root).as_posix(), p.stat().st_size, _sha256(p))
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    ]
    manifest = {
        "format": "slimforge-artifact/1",
        "lowrank": lowrank,
        "files": [asdict(f) for f in files],
        "metadata": metadata,
    }
    path = root / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return [*files, ArtifactFile(MANIFEST_FILE, path.stat().st_size, _sha256(path))]


def add_artifact_files(dest: Path, *, model_card: str) -> list[ArtifactFile]:
    """List the files written into the artifact folder ``dest`` since :func:`export_artifact`
    (GGUF files beside the safetensors), with ``model_card`` as its new README.md: the manifest
    is written again (same metadata) and the files returned like ``export_artifact``'s.

    Raises:
        FileNotFoundError: ``dest`` has no ``manifest.json`` (not an exported artifact).
    """
    manifest = json.loads((dest / MANIFEST_FILE).read_text(encoding="utf-8"))
    (dest / "README.md").write_text(model_card, encoding="utf-8")
    return _write_manifest(dest, lowrank=manifest["lowrank"], metadata=manifest["metadata"])
