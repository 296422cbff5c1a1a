"""``compressing``: run the method. A method that streams layers gets the model in CPU memory
and the accelerator as its compute device: GPU memory then holds one layer and its
activations, not the model (and not the kd teacher, which waits in CPU memory)."""

from __future__ import annotations

from slimforge.compression import compress, count_parameters, get_method
from slimforge.worker.context import JobContext

__all__ = ["run"]


def run(ctx: JobContext) -> None:
    assert ctx.blocks is not None and ctx.memory is not None  # from calibrating, the runner
    streaming = get_method(ctx.method.name).streams_layers
    streaming = streaming and ctx.device != "cpu"
    if streaming:
        ctx.model.to("cpu")
        ctx.memory.begin_stage()
    result = compress(
        ctx.model,
        ctx.method,
        blocks=ctx.blocks,
        target_params=ctx.target_params,
        reporter=ctx.reporter,
        workdir=ctx.workdir,
        device=ctx.device if streaming else None,
    )
    if streaming:
        ctx.metrics["peak_gpu_bytes_compressing"] = ctx.memory.stage_gpu_bytes()
        ctx.model.to(ctx.device)
    ctx.result = result
    kd_tokens = result.details.get("kd_tokens")  # auto: what fits the rest of its budget
    if kd_tokens is not None and ctx.kd_plan is not None:
        ctx.kd_plan.config = ctx.kd_plan.config.model_copy(update={"tokens": int(kd_tokens)})
    params_after = count_parameters(ctx.model)
    ctx.metrics.update(
        params_before=ctx.params_before,
        params_after=params_after,
        target_params=ctx.target_params,
        achieved_ratio=round(params_after / ctx.params_before, 6),
        target_error=round(params_after / ctx.target_params - 1.0, 6),
        tokens_used=result.tokens_used,
        ranks=result.ranks,
        method_details=result.details,
    )
