"""``evaluating``: how close the student stays to the teacher.

:data:`EVALUATIONS` lists what runs, each a function of the context that adds its own metrics:

- :func:`teacher_fidelity`: teacher and student in one pass over the held-out text
  (``slimforge.compression.evaluation.fidelity``): both perplexities and their ratio,
  KL(teacher ‖ student) in nats per token, top-1 agreement, paired-bootstrap 95 % intervals,
  and the protocol, under ``metrics.fidelity`` (the top-level ``teacher_perplexity``,
  ``student_perplexity`` and ``perplexity_ratio`` stay for existing readers);
- :func:`zero_shot_tasks`: lm-evaluation-harness tasks on both models
  (``slimforge.compression.tasks``): accuracy, stderr and retention under ``metrics.tasks``;
- :func:`generations`: three fixed prompts' greedy continuations by teacher and student
  under ``metrics.generations``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slimforge.compression.evaluation import fidelity
from slimforge.compression.generations import greedy_continuations
from slimforge.worker.context import JobContext

__all__ = [
    "EVALUATIONS",
    "check_tasks_early",
    "generations",
    "run",
    "teacher_fidelity",
    "zero_shot_tasks",
]


def teacher_fidelity(ctx: JobContext) -> None:
    """Perplexities, KL, top-1 agreement and intervals on the evaluation text."""
    if ctx.eval_blocks is None:
        ctx.reporter.event("no evaluation text given; perplexity not measured")
        return
    result = fidelity(ctx.teacher, ctx.model, ctx.eval_blocks, reporter=ctx.reporter)
    found = result.metrics()
    ctx.metrics["fidelity"] = found
    ctx.metrics.update(
        teacher_perplexity=result.teacher_perplexity,
        student_perplexity=result.student_perplexity,
        perplexity_ratio=result.perplexity_ratio,
    )
    ctx.reporter.event("teacher perplexity", data={"perplexity": result.teacher_perplexity})
    ctx.reporter.event(
        "student perplexity",
        data={"perplexity": result.student_perplexity, "ratio": result.perplexity_ratio},
    )
    ctx.reporter.event(
        "fidelity to the teacher",
        data={
            key: found.get(key)
            for key in ("kl_per_token", "top1_agreement", "perplexity_ratio_interval")
        },
    )


def tasks_hub_access() -> bool:
    """Whether lm-eval may fetch built-in tasks' data: unless the worker runs with
    ``HF_HUB_OFFLINE=1`` (huggingface_hub's own switch)."""
    import huggingface_hub.constants as hub

    return not hub.HF_HUB_OFFLINE


def check_tasks_early(ctx: JobContext) -> None:
    """At loading: refuse task names lm-eval cannot run here before any compression."""
    evaluation = ctx.request.evaluation
    if evaluation is None or not evaluation.tasks:
        return
    from slimforge.compression.tasks import check_task_names

    try:
        check_task_names(
            evaluation.tasks,
            include_path=evaluation.task_folders or None,
            hub_access=tasks_hub_access(),
        )
    except ValueError as exc:
        raise ValueError(f"evaluation.tasks: {exc}") from None


def zero_shot_tasks(ctx: JobContext) -> None:
    """lm-evaluation-harness tasks on teacher and student (the in-memory models)."""
    evaluation = ctx.request.evaluation
    if evaluation is None or not evaluation.tasks:
        return
    from slimforge.compression.tasks import task_retention

    ctx.reporter.event("zero-shot tasks started", data={"tasks": evaluation.tasks})
    found = task_retention(
        ctx.teacher,
        ctx.model,
        ctx.tokenizer,
        evaluation.tasks,
        include_path=evaluation.task_folders or None,
        limit=evaluation.limit,
        hub_access=tasks_hub_access(),
    )
    tasks: dict[str, Any] = {}
    for name, scores in found.items():
        tasks[name] = {
            "teacher": _score(scores.teacher),
            "student": _score(scores.student),
            "retention": scores.acc_retention,
            "acc_norm_retention": scores.acc_norm_retention,
            # The card says how the figures were taken (a subset is not the task's figure).
            "num_fewshot": scores.student.num_fewshot,
            "limit": evaluation.limit,
        }
    ctx.metrics["tasks"] = tasks
    ctx.reporter.event(
        "zero-shot tasks",
        data={name: {"retention": t["retention"]} for name, t in tasks.items()},
    )


def generations(ctx: JobContext) -> None:
    """Greedy continuations of three fixed prompts by teacher and student
    (``slimforge.compression.generations``): people read text before numbers."""
    ctx.metrics["generations"] = greedy_continuations(
        None, ctx.model, ctx.tokenizer, teacher_texts=ctx.teacher_texts
    )
    ctx.reporter.event("sample continuations", data={"samples": ctx.metrics["generations"]})


def _score(score: Any) -> dict[str, Any]:
    keys = ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n_samples", "version")
    return {key: getattr(score, key) for key in keys}


# Run in order; each adds its own keys to ``ctx.metrics``.
EVALUATIONS: list[Callable[[JobContext], None]] = [teacher_fidelity, zero_shot_tasks, generations]


def run(ctx: JobContext) -> None:
    for evaluation in EVALUATIONS:
        evaluation(ctx)
    ctx.teacher = None  # the teacher copy's last use
    assert ctx.memory is not None
    ctx.metrics.update(ctx.memory.snapshot())
