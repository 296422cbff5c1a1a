"""A validated job request (``JobCreate``) in the library's terms: model and text sources, the
device, and the words the model card uses. Defaults live in the contract, not here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from slimforge.app.settings import Settings
from slimforge.compression import ModelSource, Reporter, TextSource, load_texts, token_blocks
from slimforge.compression.model_card import base_model_license
from slimforge.compression.synthetic import sample_blocks
from slimforge.contract.jobs import ModelSpec, Target, TextData

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


def text_source(data: TextData) -> TextSource:
    """The calibration or evaluation source of a request."""
    return TextSource(
        path=data.path,
        dataset=data.dataset,
        split=data.split,
        config_name=data.config_name,
        field=data.field,
        revision=data.revision,
    )


def model_source(model: ModelSpec) -> ModelSource:
    """Where the request's model comes from."""
    return ModelSource(
        hub_id=model.id,
        revision=model.revision,
        path=model.path,
        gguf_file=model.gguf_file,
        trust_remote_code=model.trust_remote_code,  # allowed at submit
    )


def _cached_hub_file(repo_id: str, filename: str, revision: str) -> Path | None:
    """A file of a Hub model already in the local cache (no network), or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


def base_license(model: ModelSpec) -> str | None:
    """The base model's license, from its README.md or GGUF metadata (None if unsaid)."""
    gguf = model.gguf_file
    try:
        if model.path is not None:
            folder = Path(model.path)
            return base_model_license(folder, gguf_file=folder / gguf if gguf else None)
        assert model.id is not None  # the contract wants exactly one of id and path
        if gguf:
            path = _cached_hub_file(model.id, gguf, model.revision)
            return base_model_license(None, gguf_file=path) if path else None
        readme = _cached_hub_file(model.id, "README.md", model.revision)
        return base_model_license(readme.parent) if readme else None
    except (OSError, ValueError):  # an unreadable card is not worth failing the job for
        return None


def describe_base(model: ModelSpec) -> str:
    """A short name of the base model for the model card."""
    if model.id is not None:
        return model.id
    return model.gguf_file or Path(str(model.path)).name


def target_text(target: Target) -> str:
    """The target in words for the model card."""
    if target.params is not None:
        return f"{target.params:,} parameters"
    return f"{target.ratio:.0%} of the parameters"


def text_blocks(
    model: torch.nn.Module,
    tokenizer: Any,
    data: TextData,
    *,
    max_tokens: int | None = None,
    seed: int = 0,
    reporter: Reporter | None = None,
) -> torch.Tensor:
    """Token blocks [n, seq_len] of a request's calibration or evaluation text (``max_tokens``
    overrides its budget): read from its file or dataset, or sampled from ``model`` when
    ``synthetic`` (calibration only; the contract refuses it for evaluation)."""
    budget = max_tokens if max_tokens is not None else data.max_tokens
    if data.synthetic:
        return sample_blocks(
            model,
            tokenizer,
            n_blocks=max(1, budget // data.seq_len),
            seq_len=data.seq_len,
            seed=seed,
            reporter=reporter,
        )
    return token_blocks(
        load_texts(text_source(data)), tokenizer, seq_len=data.seq_len, max_tokens=budget
    )
