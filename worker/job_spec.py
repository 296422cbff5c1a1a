"""A validated job request (``JobCreate``) in the library's terms: model and text sources, the
device, and the words the model card uses. Defaults live in the contract, not here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from slimforge.app.settings import Settings
from slimforge.compression import ModelSource, Reporter, TextSource, load_texts, token_blocks
from slimforge.compression.general_calibration import general_calibration
from slimforge.compression.synthetic import sample_stream
from slimforge.contract.jobs import EvaluationData, ModelSpec, Target, TextData

__all__ = [
    "check_token_ids",
    "job_device",
    "model_source",
    "source_blocks",
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
    """The calibration or evaluation source of a request (its errors name the field)."""
    section = "evaluation" if isinstance(data, EvaluationData) else "calibration"
    return TextSource(
        label=f"{section}.path" if data.path is not None else f"{section}.dataset",
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


def target_text(target: Target) -> str:
    """The target in words for the model card."""
    if target.params is not None:
        return f"{target.params:,} parameters"
    return f"{target.ratio:.0%} of the parameters"


def source_blocks(
    model: torch.nn.Module,
    tokenizer: Any,
    data: TextData,
    *,
    max_tokens: int | None = None,
    cache_dir: Path | None = None,
    reporter: Reporter | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Token blocks [n, seq_len] of a request's calibration or evaluation text (``max_tokens``
    overrides its budget; at least one block) and what they are made of, for the job's
    metrics and card: ``{"source": "general mixture" | "synthetic" | "file" | "dataset", ...}``
    with the tokens of each part. Read from its file or dataset; sampled from ``model`` when
    ``synthetic``; the general mixture (English + sampled) for ``mixture``. Sampled text is
    cached under ``cache_dir`` when given. Raises ValueError for token ids the model's
    embedding does not have, and what reading or sampling raises."""
    budget = max(max_tokens if max_tokens is not None else data.max_tokens, data.seq_len)
    if data.mixture is not None:
        mixed = general_calibration(
            model,
            tokenizer,
            tokens=budget,
            seq_len=data.seq_len,
            synthetic_share=data.sampled_share,
            cache_dir=cache_dir,
            reporter=reporter,
        )
        blocks, summary = mixed.blocks, mixed.summary()
    elif data.synthetic:
        n_blocks = budget // data.seq_len
        text = sample_stream(
            model,
            tokenizer,
            tokens=n_blocks * data.seq_len,
            seq_len=data.seq_len,
            cache_dir=cache_dir,
            reporter=reporter,
        )
        blocks = text.stream[: n_blocks * data.seq_len].view(n_blocks, data.seq_len)
        summary = {
            "source": "synthetic",
            "synthetic_tokens": blocks.numel(),
            "synthetic_chat": text.chat,
        }
    else:
        texts = load_texts(text_source(data))
        blocks = token_blocks(texts, tokenizer, seq_len=data.seq_len, max_tokens=budget)
        summary = {"source": "file" if data.path is not None else "dataset"}
    check_token_ids(model, blocks)
    return blocks, {**summary, "tokens": int(blocks.numel())}


def text_blocks(
    model: torch.nn.Module,
    tokenizer: Any,
    data: TextData,
    *,
    max_tokens: int | None = None,
    cache_dir: Path | None = None,
    reporter: Reporter | None = None,
) -> torch.Tensor:
    """The blocks [n, seq_len] of :func:`source_blocks`, without the summary."""
    return source_blocks(
        model, tokenizer, data, max_tokens=max_tokens, cache_dir=cache_dir, reporter=reporter
    )[0]


def check_token_ids(model: torch.nn.Module, blocks: torch.Tensor) -> None:
    """Every token id of ``blocks`` [n, seq_len] must index a row of the model's input
    embedding; a tokenizer from another model gives ids past it, which the embedding would
    refuse with a bare ``IndexError: index out of range in self``. Raises ValueError."""
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embedding = get_embeddings() if callable(get_embeddings) else None
    rows = getattr(embedding, "num_embeddings", None)
    if rows is None or blocks.numel() == 0:
        return
    highest = int(blocks.max())
    if highest >= rows:
        raise ValueError(
            f"model: the tokenizer gives token id {highest}, but the model's embedding has "
            f"{rows} rows (vocab_size {rows}): the tokenizer in the model folder does not belong "
            "to this model; give the model's own tokenizer files (tokenizer.json …)"
        )
