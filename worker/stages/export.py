"""``exporting``: a Hugging Face folder in the job's scratch space (renamed into place whole),
in the precision the job asked for (``output.dtype``) or else the source checkpoint's, and the
GGUF files asked for (``output.formats``) beside its safetensors (:mod:`.gguf`).

A GGUF output that fails does not lose the rest: the safetensors artifact is stored as it is,
and the job fails at this stage with llama.cpp's message (:class:`.gguf.OutputFormatError`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from slimforge.compression import export_artifact, render_model_card
from slimforge.compression.export import add_artifact_files
from slimforge.compression.model_card import artifact_name, describe_source
from slimforge.worker.context import JobContext
from slimforge.worker.job_spec import target_text
from slimforge.worker.reporter import ResourceLimit
from slimforge.worker.stages.gguf import OutputFormatError, write_gguf_files
from slimforge.worker.stages.store import store_artifact

__all__ = ["artifact_dtype", "check_disk_space", "run"]


def artifact_dtype(ctx: JobContext) -> torch.dtype:
    """``output.dtype`` if given, else the source's own precision: an artifact is never
    larger per parameter than the checkpoint it came from, whatever the worker computed in."""
    output = ctx.request.output
    if output is not None and output.dtype is not None:
        dtype: torch.dtype = getattr(torch, output.dtype)
        return dtype
    assert ctx.source_dtype is not None  # from loading
    return ctx.source_dtype


def _gguf_bytes_per_param(types: list[str]) -> int:
    """An upper bound of the GGUF files' bytes per parameter: 4 for f32, 2 for any other type
    (f16 and bf16 are 2, the quantised ones less), plus 2 for the f16 file quantising starts
    from."""
    quantised = any(t not in ("f32", "f16", "bf16") for t in types)
    return sum(4 if t == "f32" else 2 for t in types) + (2 if quantised else 0)


def check_disk_space(ctx: JobContext, dtype: torch.dtype) -> None:
    """Fail before exporting when the scratch folder cannot hold the artifact: the weights at
    ``dtype`` and the GGUF files asked for, plus 10 % headroom, and ``min_free_disk_bytes``
    left over."""
    settings, folder = ctx.settings, ctx.settings.work_root
    folder.mkdir(parents=True, exist_ok=True)
    per_param = dtype.itemsize + _gguf_bytes_per_param(ctx.gguf_types)
    weights = sum(p.numel() * per_param for p in ctx.model.parameters())
    needed = int(weights * 1.1) + settings.min_free_disk_bytes
    free = shutil.disk_usage(folder).free
    if free < needed:
        reserve = (
            f", plus {settings.min_free_disk_bytes:,} to keep free (min_free_disk_bytes)"
            if settings.min_free_disk_bytes
            else ""
        )
        raise ResourceLimit(
            f"not enough disk space to export the artifact in {folder}: about {needed:,} bytes "
            f"needed (the weights and GGUF files plus 10 %{reserve}), {free:,} free; free some "
            "space or point SLIMFORGE_HOME to a larger disk"
        )


def _card(ctx: JobContext) -> str:
    """The model card of the job's current metrics (GGUF files included once written)."""
    assert ctx.result is not None  # from compressing
    request = ctx.request
    return render_model_card(
        source=describe_source(request.model.model_dump(mode="json")),
        method=request.method.name + (" + kd" if request.distill is not None else ""),
        target=target_text(request.target),
        params_before=ctx.params_before,
        params_after=ctx.metrics["params_after"],
        metrics=ctx.metrics,
        ranks=ctx.result.ranks or None,
        job_parameters={"job_id": ctx.job_id, **request.model_dump(mode="json")},
        repo_id=ctx.hub_repo,
    )


def _add_gguf(ctx: JobContext, dest: Path) -> None:
    """The GGUF files beside the safetensors, then the card and manifest that list them; on
    failure the safetensors artifact is stored and the job fails here, saying so."""
    stem = artifact_name(describe_source(ctx.request.model.model_dump(mode="json")), ctx.hub_repo)
    try:
        ctx.metrics["gguf"] = write_gguf_files(ctx, dest, stem=stem)
    except OutputFormatError as exc:
        ctx.metrics["gguf"] = {"files": [], "error": str(exc)}
        store_artifact(ctx, stage="exporting")
        raise OutputFormatError(
            f"{exc}\nThe safetensors artifact is stored (GET /v1/jobs/{ctx.job_id}/artifacts); "
            "submit again with output.formats ['safetensors'] to skip the GGUF"
        ) from None
    ctx.files = add_artifact_files(dest, model_card=_card(ctx))


def run(ctx: JobContext) -> None:
    assert ctx.result is not None  # from compressing
    request, metrics = ctx.request, ctx.metrics
    dtype = artifact_dtype(ctx)
    check_disk_space(ctx, dtype)
    dest = ctx.workdir / "artifact"
    if dest.exists():  # a previous attempt died after exporting: start clean
        shutil.rmtree(dest)
    metrics["dtype"] = str(dtype).removeprefix("torch.")
    ctx.files = export_artifact(
        ctx.model.to("cpu", dtype),
        ctx.tokenizer,
        dest,
        model_card=_card(ctx),
        lowrank_ranks=ctx.result.ranks or None,
        metadata={"job_id": ctx.job_id, "method": request.method.name, "metrics": metrics},
    )
    metrics["model_bytes_after"] = sum(f.size for f in ctx.files if f.path.endswith(".safetensors"))
    metrics["artifact_bytes"] = sum(f.size for f in ctx.files)
    if ctx.gguf_types:
        _add_gguf(ctx, dest)
        metrics["artifact_bytes"] = sum(f.size for f in ctx.files)
