"""``calibrating``: tokenise the calibration, kd and evaluation text, keep a frozen copy of the
teacher for what compares it with the student later (evaluation, ``kd``), and measure how much
of the evaluation text the calibration and kd text already contain."""

from __future__ import annotations

from typing import Any

import torch

from slimforge.compression.generations import greedy_texts
from slimforge.compression.overlap import longest_shared_run, ngram_overlap
from slimforge.worker.context import JobContext
from slimforge.worker.job_spec import source_blocks, text_blocks
from slimforge.worker.kd import frozen_copy, prepare_distillation

__all__ = ["OVERLAP_NGRAM", "OVERLAP_WARN_SHARE", "measure_overlap", "run"]

# Overlap is the share of the evaluation's 13-token windows found in the calibration or kd
# text (13-grams: the contamination unit of GPT-3's and later decontamination reports).
OVERLAP_NGRAM = 13
OVERLAP_WARN_SHARE = 0.01  # above 1 % the job warns: its figures are not held-out


def run(ctx: JobContext) -> None:
    request, reporter, metrics = ctx.request, ctx.reporter, ctx.metrics
    # First the text, whose token ids are checked against the model's embedding. Text sampled
    # from the model is cached per model under the worker's cache folder.
    cache = ctx.settings.cache_root
    ctx.blocks, metrics["calibration"] = source_blocks(
        ctx.model, ctx.tokenizer, request.calibration, cache_dir=cache, reporter=reporter
    )
    # What the original model writes, for the card's teacher-vs-student samples.
    ctx.teacher_texts = greedy_texts(ctx.model, ctx.tokenizer)
    reporter.event("calibration data ready", data=metrics["calibration"])
    evaluation = request.evaluation
    if evaluation is not None and evaluation.has_text:
        ctx.eval_blocks = text_blocks(ctx.model, ctx.tokenizer, evaluation)
        metrics["evaluation_tokens"] = int(ctx.eval_blocks.numel())
    kd_on_the_fly = request.distill is not None and request.distill.top_k is None
    if evaluation is not None or kd_on_the_fly:
        ctx.teacher = frozen_copy(ctx.model)
    kd_blocks = None
    if request.distill is not None:
        # The same source, read up to the kd budget: sampled text is the same stream, so the
        # tokens calibration already sampled are not sampled again (the cache holds them).
        kd_blocks, metrics["distill_text"] = source_blocks(
            ctx.model,
            ctx.tokenizer,
            request.calibration,
            max_tokens=request.distill.tokens,
            cache_dir=cache,
            reporter=reporter,
        )
        ctx.kd_plan = prepare_distillation(
            ctx.model, config=request.distill, blocks=kd_blocks, teacher=ctx.teacher
        )
    if ctx.eval_blocks is not None:
        seen = [ctx.blocks] + ([kd_blocks] if kd_blocks is not None else [])
        metrics["overlap"] = measure_overlap(ctx.eval_blocks, seen)
        share = metrics["overlap"]["share"]
        reporter.event(
            "evaluation text overlaps the calibration/kd text"
            if share > OVERLAP_WARN_SHARE
            else "evaluation text is held out",
            level="warning" if share > OVERLAP_WARN_SHARE else "info",
            data=metrics["overlap"],
        )


def measure_overlap(evaluation: torch.Tensor, seen: list[torch.Tensor]) -> dict[str, Any]:
    """How much of ``evaluation`` [n, seq_len] appears in ``seen`` (the calibration and kd
    token blocks): the share of its 13-token windows found there, and the longest shared run
    of tokens (``slimforge.compression.overlap``)."""
    eval_ids = evaluation.flatten().tolist()
    reference = torch.cat([b.flatten() for b in seen]).tolist()
    return {
        "ngram": OVERLAP_NGRAM,
        "share": round(ngram_overlap(eval_ids, reference, n=OVERLAP_NGRAM), 6),
        "longest_run_tokens": longest_shared_run(eval_ids, reference),
        "evaluation_tokens": len(eval_ids),
        "reference_tokens": len(reference),
    }
