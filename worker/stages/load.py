"""``loading``: the model in the precision the job computes in, its size against the tenant's
quota, whether the target is reachable, and whether the result could be exported at all."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from slimforge.app.limits.quotas import model_size_error
from slimforge.compression import count_parameters, get_method, load_model, resolve_target
from slimforge.compression.export import lowrank_remote_code
from slimforge.contract.jobs import ModelSpec
from slimforge.worker.context import JobContext
from slimforge.worker.job_spec import model_source
from slimforge.worker.reporter import ResourceLimit
from slimforge.worker.stages.evaluate import check_tasks_early
from slimforge.worker.stages.gguf import check_gguf_output

__all__ = ["compute_dtype", "run", "source_weight_bytes"]


def compute_dtype(device: str) -> torch.dtype:
    """The precision the methods compute in: bfloat16 on a GPU (tensor cores, half the
    memory), float32 on a CPU (whose bfloat16 matmuls are slow and lossy). Independent of
    the precision the artifact is saved in (``exporting``)."""
    return torch.bfloat16 if device == "cuda" else torch.float32


def source_weight_bytes(model: ModelSpec) -> int | None:
    """Bytes of the weight files transformers reads for a local model (the GGUF file; the
    shards of ``model.safetensors.index.json``; else ``model.safetensors``), None when the
    model is not a local folder of one of those."""
    if model.path is None:
        return None
    folder = Path(model.path)
    if model.gguf_file is not None:
        return (folder / model.gguf_file).stat().st_size
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        return sum((folder / name).stat().st_size for name in shards)
    single = folder / "model.safetensors"
    return single.stat().st_size if single.is_file() else None


def run(ctx: JobContext) -> None:
    """Load; record the source's precision and size; plan the method from shapes (raises
    ``UnreachableTargetError``, ``ResourceLimit``, or the exporter's ValueError for a model
    whose low-rank artifact could not be written); check that the GGUF output asked for can be
    written here (ValueError naming ``output.formats``)."""
    model, ctx.tokenizer = load_model(model_source(ctx.request.model), dtype="auto")
    ctx.source_dtype = next(model.parameters()).dtype
    ctx.model = model.to(ctx.device, compute_dtype(ctx.device))
    ctx.params_before = count_parameters(model)
    if ctx.max_params is not None and ctx.params_before > ctx.max_params:
        raise ResourceLimit(model_size_error(ctx.params_before, ctx.max_params))
    target = ctx.request.target
    ctx.target_params = resolve_target(ctx.params_before, params=target.params, ratio=target.ratio)
    ctx.plan = get_method(ctx.method.name).plan(model, ctx.method, target_params=ctx.target_params)
    check_tasks_early(ctx)  # an unknown task fails now, not after compressing
    if ctx.plan.ranks:  # a low-rank artifact ships code built on transformers' own classes
        lowrank_remote_code(model)  # fails now, as it would at exporting (issue 15, case 12)
    check_gguf_output(ctx, model)  # the converter's verdict now, not after compressing
    on_disk = source_weight_bytes(ctx.request.model)
    ctx.metrics["model_bytes_before"] = (
        on_disk
        if on_disk is not None
        else ctx.params_before * ctx.source_dtype.itemsize  # the weights at their precision
    )
    ctx.reporter.event(
        "model loaded",
        data={
            "params": ctx.params_before,
            "target_params": ctx.target_params,
            "planned_params": ctx.plan.params_after,
            "device": ctx.device,
        },
    )
