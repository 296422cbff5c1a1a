"""Load a model and its tokenizer from the Hub, a local directory or a GGUF file."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from slimforge.compression.lowrank_auto import register_lowrank_config

__all__ = ["ModelSource", "RemoteCodeRequired", "load_model"]

register_lowrank_config()  # low-rank artifacts as inputs: their config reads without a warning


class RemoteCodeRequired(ValueError):
    """The model needs its own code to load, and ``trust_remote_code`` is off."""


@dataclass(frozen=True)
class ModelSource:
    """A Hub id (with revision) or a local ``path`` (a model dir, or one with ``gguf_file``)."""

    hub_id: str | None = None
    revision: str = "main"
    path: str | None = None
    gguf_file: str | None = None
    trust_remote_code: bool = False


def load_model(
    source: ModelSource,
    *,
    dtype: torch.dtype | Literal["auto"] = torch.float32,
    device: str = "cpu",
) -> tuple[Any, Any]:
    """(model in eval mode on ``device``, tokenizer with a pad token) for ``source``.

    ``dtype="auto"`` keeps the checkpoint's own precision (its config's ``dtype``, else its
    weights'; transformers' rule). A GGUF checkpoint is dequantised to ``dtype`` (float32 for
    "auto"); its ``quantization_config`` is removed, or a
    model saved from it would claim to be GGUF-quantised and fail to load.
    """
    if (source.hub_id is None) == (source.path is None):
        raise ValueError("a model source needs exactly one of hub_id or path")
    kwargs: dict[str, Any] = {"trust_remote_code": source.trust_remote_code}
    if source.hub_id is not None:
        location: str = source.hub_id
        kwargs["revision"] = source.revision
        if source.gguf_file:
            kwargs["gguf_file"] = source.gguf_file
    else:
        assert source.path is not None
        path = Path(source.path)
        gguf: str | None = source.gguf_file
        if path.is_file() and path.suffix == ".gguf" and gguf is None:
            path, gguf = path.parent, path.name  # a path straight to the .gguf file
        if not path.is_dir():
            raise FileNotFoundError(f"model directory not found: {path}")
        if gguf is not None:
            if not (path / gguf).is_file():
                raise FileNotFoundError(f"GGUF file {gguf!r} not found in {path}")
            kwargs["gguf_file"] = gguf
        elif not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} has no config.json; pass gguf_file for a GGUF checkpoint"
            )
        location = str(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **kwargs)
    except ValueError as exc:
        if source.trust_remote_code or "trust_remote_code" not in str(exc):
            raise
        # transformers' own message tells the caller to pass an argument it cannot pass here.
        raise RemoteCodeRequired(
            f"{location} ships its own model code (the auto_map of its config) and loads only "
            "with trust_remote_code; in a slimforge job set model.trust_remote_code to true "
            "(the operator must allow it for the tenant)"
        ) from None
    if "gguf_file" in kwargs:
        _drop_quantization_config(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)  # type: ignore[arg-type]
    model.eval()
    return model, tokenizer


def _drop_quantization_config(model: Any) -> None:
    # The weights are dense now; the GGUF marker would make save_pretrained output unloadable.
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    for attr in ("hf_quantizer", "quantization_method"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)
    if getattr(model, "is_quantized", False):
        with contextlib.suppress(AttributeError):  # a read-only property on some versions
            model.is_quantized = False
