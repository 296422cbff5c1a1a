"""What the card says about the source model: its name, its Hub id (``base_model``), its license.

Torch-free and offline: read from the files the worker already has (a GGUF's ``general.*``
metadata, ``config.json``, the model's own README.md) and from the local Hugging Face cache, never
from the network.

Where ``base_model`` comes from, first found wins:

1. the request's Hub id (``model.id``): that repository is what was compressed;
2. a folder inside the Hugging Face cache (``…/models--org--name/snapshots/<commit>``): the
   repository it was downloaded from;
3. a GGUF's own repository, ``general.repo_url`` / ``general.url`` on huggingface.co (llama.cpp's
   gguf-py: "typically represents the converted GGUF repo");
4. the model a GGUF was converted from: ``general.source.huggingface.repository`` (older
   llama.cpp), ``general.source.repo_url`` / ``general.source.url`` on huggingface.co;
5. ``_name_or_path`` in ``config.json`` when it is a Hub id (``org/name``; transformers 4 saved
   it, transformers 5 drops it; a local path there is ignored).

``general.base_model.*`` is not used: llama.cpp fills it from the source model's own card, so it
names the model the source was itself fine-tuned from, not the source, and the card would be
filed under the wrong model on the Hub.

The name: a GGUF's ``general.name`` (its human-readable name), else the last part of the Hub
id, else ``general.basename`` + ``general.size_label``, else the file or folder name without a
GGUF encoding suffix (``.Q4_1``, ``-F16`` …).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["SourceInfo", "base_model_license", "describe_source", "gguf_metadata"]

# Hub model ids: "name" (legacy canonical) or "org/name" (huggingface_hub's rules, simplified).
_HUB_NAME = r"[A-Za-z0-9][\w.\-]{0,95}"
_ORG_ID = re.compile(rf"^{_HUB_NAME}/{_HUB_NAME}$")
_HF_URL = re.compile(
    rf"^https?://(?:www\.)?huggingface\.co/(?!datasets/|spaces/)({_HUB_NAME}/{_HUB_NAME})(?:/.*)?$"
)
# GGUF file names end in an encoding (llama.cpp naming convention): Q4_1, Q4_K_M, IQ2_XS, F16 …
_ENCODING = re.compile(r"[.\-_](?:I?Q\d[\w]*|[BF]F?16|F32|BF16)$", re.IGNORECASE)
_GGUF_KEYS = (
    "general.name",
    "general.organization",
    "general.basename",
    "general.size_label",
    "general.license",
    "general.repo_url",
    "general.url",
    "general.source.huggingface.repository",
    "general.source.repo_url",
    "general.source.url",
)


@dataclass(frozen=True)
class SourceInfo:
    """The source model as the card names it: ``name`` (for people), ``base_model`` (a Hub model
    id, or None when nothing says one), ``license`` (an SPDX-like id, or None when unsaid),
    ``organization`` (a GGUF's ``general.organization``) and ``file`` (the GGUF file's name)."""

    name: str
    base_model: str | None
    license: str | None
    organization: str | None = None
    file: str | None = None


def gguf_metadata(path: Path) -> dict[str, str]:
    """The ``general.*`` string fields of a GGUF file that name the model (gguf-py's reader;
    only the header is read). Empty when the gguf package is missing."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return {}
    fields = GGUFReader(path).fields
    found = {}
    for key in _GGUF_KEYS:
        field = fields.get(key)
        value = field.contents() if field is not None else None
        if isinstance(value, str) and value.strip():
            found[key] = value.strip()
    return found


def _front_matter(text: str) -> dict[str, Any]:
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def base_model_license(folder: Path | None, *, gguf_file: Path | None = None) -> str | None:
    """The base model's license: ``license`` in its README.md front matter, or a GGUF file's
    ``general.license``; None when it does not say (the card then names none)."""
    if gguf_file is not None:
        return gguf_metadata(gguf_file).get("general.license")
    readme = folder / "README.md" if folder is not None else None
    if readme is None or not readme.is_file():
        return None
    value = _front_matter(readme.read_text(encoding="utf-8")).get("license")
    return value if isinstance(value, str) and value else None


def _cache_repo_id(folder: Path) -> str | None:
    """``org/name`` of a snapshot folder of the Hugging Face cache, else None."""
    parts = folder.resolve().parts
    for i, part in enumerate(parts[:-2]):
        if part.startswith("models--") and parts[i + 1] == "snapshots":
            return part.removeprefix("models--").replace("--", "/")
    return None


def _gguf_repo_id(meta: Mapping[str, str]) -> str | None:
    """The GGUF's own Hub repository, else the one it was converted from (module doc, 3-4)."""
    for key in ("general.repo_url", "general.url"):
        found = _HF_URL.match(meta.get(key, ""))
        if found:
            return found[1]
    legacy = meta.get("general.source.huggingface.repository", "")
    if _ORG_ID.match(legacy):
        return legacy
    for key in ("general.source.repo_url", "general.source.url"):
        found = _HF_URL.match(meta.get(key, ""))
        if found:
            return found[1]
    return None


def _config_repo_id(config: Path | None) -> str | None:
    try:
        data = json.loads(config.read_text(encoding="utf-8")) if config is not None else None
    except (OSError, ValueError):
        return None
    value = data.get("_name_or_path") if isinstance(data, dict) else None
    return value if isinstance(value, str) and _ORG_ID.match(value) else None


def _cached(repo_id: str, filename: str, revision: str) -> Path | None:
    """A file of a Hub model already in the local cache (no network), or None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except ValueError:  # not a valid repository id or revision: nothing cached under it
        return None
    return Path(found) if isinstance(found, str) else None


def _locate(
    model: Mapping[str, Any] | str | os.PathLike[str], gguf_file: str | os.PathLike[str] | None
) -> tuple[str | None, Path | None, Path | None, Path | None]:
    """(Hub id, folder, GGUF file, README.md) of the source, the files as found on disk."""
    if not isinstance(model, Mapping):
        path = Path(model)
        is_file = path.is_file()
        model = {"path": str(path.parent if is_file else path)}
        model = {**model, "gguf_file": path.name} if is_file else model
    hub_id, name = model.get("id"), gguf_file or model.get("gguf_file")
    folder: Path | None
    gguf: Path | None
    readme: Path | None
    if not model.get("path") and not hub_id:
        return None, None, None, None
    if model.get("path"):
        folder = Path(model["path"])
        gguf = folder / name if name is not None else None
        readme = folder / "README.md"
    else:
        revision = str(model.get("revision") or "main")
        gguf = _cached(str(hub_id), str(name), revision) if name is not None else None
        readme = _cached(str(hub_id), "README.md", revision)
        config = _cached(str(hub_id), "config.json", revision)
        folder = config.parent if config is not None else None
    return hub_id, folder, gguf, readme


def describe_source(
    model: Mapping[str, Any] | str | os.PathLike[str],
    gguf_file: str | os.PathLike[str] | None = None,
) -> SourceInfo:
    """Name, ``base_model`` and license of the source model, by the rules of the module doc.

    ``model``: the request's ``model`` section (``id``/``revision`` or ``path``, and
    ``gguf_file``), or a local folder, or a GGUF file. ``gguf_file``: the GGUF file (a path, or a
    name inside the folder), when not in ``model``. Unreadable files count as unsaid (no error).
    """
    hub_id, folder, gguf, readme = _locate(model, gguf_file)
    meta: dict[str, str] = {}
    if gguf is not None and gguf.is_file():
        try:
            meta = gguf_metadata(gguf)
        except (OSError, ValueError):  # a corrupt header: the loader says so, not the card
            meta = {}
    config = folder / "config.json" if folder is not None else None
    base = (
        (str(hub_id) if hub_id else None)
        or (_cache_repo_id(folder) if folder is not None else None)
        or _gguf_repo_id(meta)
        or _config_repo_id(config)
    )
    stem = gguf.name if gguf is not None else (folder.name if folder is not None else "model")
    stem = _ENCODING.sub("", stem.removesuffix(".gguf"))
    sized = " ".join(meta[k] for k in ("general.basename", "general.size_label") if k in meta)
    name = meta.get("general.name") or (base.split("/")[-1] if base else None) or sized or stem
    license = meta.get("general.license")
    if license is None and readme is not None and readme.is_file():
        license = base_model_license(readme.parent)
    return SourceInfo(
        name=name,
        base_model=base,
        license=license,
        organization=meta.get("general.organization"),
        file=gguf.name if gguf is not None else None,
    )
