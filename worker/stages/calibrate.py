"""``calibrating``: tokenise the calibration (and evaluation) text, measure the teacher's
perplexity, and capture the teacher for ``kd`` before the method changes the model."""

from __future__ import annotations

from slimforge.compression import perplexity
from slimforge.worker.context import JobContext
from slimforge.worker.job_spec import text_blocks
from slimforge.worker.kd import prepare_distillation

__all__ = ["run"]


def run(ctx: JobContext) -> None:
    request, reporter, metrics = ctx.request, ctx.reporter, ctx.metrics
    ctx.blocks = text_blocks(ctx.model, ctx.tokenizer, request.calibration, reporter=reporter)
    if request.evaluation is not None:
        ctx.eval_blocks = text_blocks(ctx.model, ctx.tokenizer, request.evaluation)
        metrics["teacher_perplexity"] = perplexity(ctx.model, ctx.eval_blocks, reporter=reporter)
        metrics["evaluation_tokens"] = int(ctx.eval_blocks.numel())
        reporter.event("teacher perplexity", data={"perplexity": metrics["teacher_perplexity"]})
    reporter.event("calibration data ready", data={"tokens": int(ctx.blocks.numel())})
    if request.distill is not None:
        kd_blocks = text_blocks(
            ctx.model,
            ctx.tokenizer,
            request.calibration,
            max_tokens=request.distill.tokens,
            seed=1,
            reporter=reporter,
        )
        ctx.teacher = prepare_distillation(ctx.model, config=request.distill, blocks=kd_blocks)
