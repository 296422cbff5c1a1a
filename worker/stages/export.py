"""``exporting``: a Hugging Face folder in the job's scratch space (renamed into place whole),
in the precision the job asked for (``output.dtype``) or else the source checkpoint's."""

from __future__ import annotations

import shutil

import torch

from slimforge.compression import export_artifact, render_model_card
from slimforge.compression.model_card import describe_source
from slimforge.worker.context import JobContext
from slimforge.worker.job_spec import target_text
from slimforge.worker.reporter import ResourceLimit

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


def check_disk_space(ctx: JobContext, dtype: torch.dtype) -> None:
    """Fail before exporting when the scratch folder cannot hold the artifact: the weights at
    ``dtype`` plus 10 % headroom, and ``min_free_disk_bytes`` left over."""
    settings, folder = ctx.settings, ctx.settings.work_root
    folder.mkdir(parents=True, exist_ok=True)
    weights = sum(p.numel() * dtype.itemsize for p in ctx.model.parameters())
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
            f"needed (the weights plus 10 %{reserve}), {free:,} free; free some space or "
            "point SLIMFORGE_HOME to a larger disk"
        )


def run(ctx: JobContext) -> None:
    assert ctx.result is not None  # from compressing
    request, metrics, ranks = ctx.request, ctx.metrics, ctx.result.ranks or None
    dtype = artifact_dtype(ctx)
    check_disk_space(ctx, dtype)
    dest = ctx.workdir / "artifact"
    if dest.exists():  # a previous attempt died after exporting: start clean
        shutil.rmtree(dest)
    method = request.method.name + (" + kd" if request.distill is not None else "")
    metrics["dtype"] = str(dtype).removeprefix("torch.")
    card = render_model_card(
        source=describe_source(request.model.model_dump(mode="json")),
        method=method,
        target=target_text(request.target),
        params_before=ctx.params_before,
        params_after=metrics["params_after"],
        metrics=metrics,
        ranks=ranks,
        job_parameters={"job_id": ctx.job_id, **request.model_dump(mode="json")},
        repo_id=ctx.hub_repo,
    )
    ctx.files = export_artifact(
        ctx.model.to("cpu", dtype),
        ctx.tokenizer,
        dest,
        model_card=card,
        lowrank_ranks=ranks,
        metadata={"job_id": ctx.job_id, "method": request.method.name, "metrics": metrics},
    )
    metrics["artifact_bytes"] = sum(f.size for f in ctx.files)
    metrics["model_bytes_after"] = sum(f.size for f in ctx.files if f.path.endswith(".safetensors"))
