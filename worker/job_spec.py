"""Read a stored job request (the JSON the API validated) into the library's types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from slimforge.app.settings import Settings
from slimforge.compression import ModelSource, Reporter, TextSource, load_texts, token_blocks
from slimforge.compression.model_card import base_model_license
from slimforge.compression.synthetic import sample_blocks

__all__ = [
    "base_license",
    "describe_base",
    "job_device",
    "model_source",
    "target_text",
    "text_blocks",
    "text_source",
]


def job_device(settings: Settings) -> str:
    """The torch device a job runs on: the setting, or CUDA when available for "auto"."""
    if settings.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return settings.device


def text_source(data: dict[str, Any]) -> TextSource:
    """The calibration or evaluation source of a request."""
    return TextSource(
        path=data.get("path"),
        dataset=data.get("dataset"),
        split=data.get("split", "train"),
        config_name=data.get("config_name"),
        field=data.get("field", "text"),
        revision=data.get("revision"),
    )


def model_source(spec: dict[str, Any]) -> ModelSource:
    """Where the request's model comes from."""
    m = spec["model"]
    return ModelSource(
        hub_id=m.get("id"),
        revision=m.get("revision") or "main",
        path=m.get("path"),
        gguf_file=m.get("gguf_file"),
        trust_remote_code=bool(m.get("trust_remote_code", False)),  # allowed at submit
    )


def _cached_hub_file(repo_id: str, filename: str, revision: str) -> Path | None:
    """A file of a Hub model already in the local cache (no network), or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


def base_license(spec: dict[str, Any]) -> str | None:
    """The base model's license, from its README.md or GGUF metadata (None if unsaid)."""
    m = spec["model"]
    gguf = m.get("gguf_file")
    try:
        if m.get("path"):
            folder = Path(m["path"])
            return base_model_license(folder, gguf_file=folder / gguf if gguf else None)
        revision = m.get("revision") or "main"
        if gguf:
            path = _cached_hub_file(m["id"], gguf, revision)
            return base_model_license(None, gguf_file=path) if path else None
        readme = _cached_hub_file(m["id"], "README.md", revision)
        return base_model_license(readme.parent) if readme else None
    except (OSError, ValueError):  # an unreadable card is not worth failing the job for
        return None


def describe_base(spec: dict[str, Any]) -> str:
    """A short name of the base model for the model card."""
    m = spec["model"]
    if m.get("id"):
        return str(m["id"])
    return str(m.get("gguf_file") or Path(m["path"]).name)


def target_text(target: dict[str, Any]) -> str:
    """The target in words for the model card."""
    if target.get("params") is not None:
        return f"{target['params']:,} parameters"
    return f"{target['ratio']:.0%} of the parameters"


def text_blocks(
    model: torch.nn.Module,
    tokenizer: Any,
    data: dict[str, Any],
    *,
    max_tokens: int | None = None,
    seed: int = 0,
    reporter: Reporter | None = None,
) -> torch.Tensor:
    """Token blocks [n, seq_len] of a request's calibration or evaluation text (``max_tokens``
    overrides its budget): read from its file or dataset, or sampled from ``model`` when
    ``synthetic`` (calibration only; the API refuses it for evaluation)."""
    budget = max_tokens if max_tokens is not None else int(data["max_tokens"])
    seq_len = int(data["seq_len"])
    if data.get("synthetic"):
        return sample_blocks(
            model,
            tokenizer,
            n_blocks=max(1, budget // seq_len),
            seq_len=seq_len,
            seed=seed,
            reporter=reporter,
        )
    return token_blocks(
        load_texts(text_source(data)), tokenizer, seq_len=seq_len, max_tokens=budget
    )
