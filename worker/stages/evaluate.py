"""``evaluating``: the student's perplexity on the held-out text, beside the teacher's.

The seam for more evaluation: :data:`EVALUATIONS` lists what runs, each a function of the
context that adds its own metrics (fidelity to the teacher, such as KL and top-1 agreement,
or zero-shot tasks, go here as further entries).
"""

from __future__ import annotations

from collections.abc import Callable

from slimforge.compression import perplexity
from slimforge.worker.context import JobContext

__all__ = ["EVALUATIONS", "run", "student_perplexity"]


def student_perplexity(ctx: JobContext) -> None:
    """``student_perplexity`` and ``perplexity_ratio`` (student / teacher), in the metrics."""
    if ctx.eval_blocks is None:
        ctx.reporter.event("no evaluation data given; perplexity not measured")
        return
    metrics = ctx.metrics
    metrics["student_perplexity"] = perplexity(ctx.model, ctx.eval_blocks, reporter=ctx.reporter)
    metrics["perplexity_ratio"] = metrics["student_perplexity"] / metrics["teacher_perplexity"]
    ctx.reporter.event(
        "student perplexity",
        data={"perplexity": metrics["student_perplexity"], "ratio": metrics["perplexity_ratio"]},
    )


# Run in order; each adds its own keys to ``ctx.metrics``.
EVALUATIONS: list[Callable[[JobContext], None]] = [student_perplexity]


def run(ctx: JobContext) -> None:
    for evaluation in EVALUATIONS:
        evaluation(ctx)
    assert ctx.memory is not None
    ctx.metrics.update(ctx.memory.snapshot())
