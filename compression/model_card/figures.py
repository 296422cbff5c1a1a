"""The figures the card reads from a job's ``metrics`` dict, and the keys they live under.

Fidelity to the teacher, ``metrics["fidelity"]``: the dict of
``compression.evaluation.FidelityResult.metrics()`` —

- ``teacher_perplexity``, ``student_perplexity``: token-weighted perplexity on the evaluation text;
- ``perplexity_ratio``: student / teacher;
- ``perplexity_ratio_interval``: ``[low, high]``, bootstrap interval of the ratio at
  ``protocol["interval_confidence"]`` (0.95 when the protocol does not say); alias
  ``perplexity_ratio_ci95``;
- ``kl_per_token``: mean KL(teacher ‖ student) in nats per scored token; alias
  ``kl_nats_per_token``; a lower bound when ``protocol["kl_top_k"]`` is set;
- ``top1_agreement``: share (0-1) of scored positions where both models' argmax agree;
- ``evaluation_tokens``: scored tokens; alias ``tokens``;
- ``protocol``: how it was measured (``window_tokens``, ``stride_tokens``, ``first_token_scored``,
  ``bos_prepended``, ``packing``, ``perplexity``, ``kl``, ``kl_top_k``, ``interval_method``,
  ``interval_confidence``, ``interval_resamples``, ``interval_seed`` …), shown as given.

Without ``metrics["fidelity"]``, today's top-level ``teacher_perplexity``,
``student_perplexity`` and ``evaluation_tokens`` are read.

Overlap of the evaluation text with the calibration and kd text, ``metrics["overlap"]``:
``{"ngram": 13, "share": x, "longest_run_tokens": n}``, ``share`` the fraction (0-1) of the
evaluation's n-grams (tokens) found in the calibration + kd text.

Zero-shot tasks, ``metrics["tasks"]``: ``{task: {"teacher": {...}, "student": {...},
"num_fewshot": 0, "limit": N}}`` where teacher and student hold lm-evaluation-harness figures
(``acc``, ``acc_stderr``, ``acc_norm``, ``acc_norm_stderr`` …; the harness's ``",none"`` filter
suffix is accepted). Every numeric figure of the student without ``_stderr`` is reported, except
the counts ``n_samples`` and ``n_documents`` (how many documents were scored, not a score);
retention is student / teacher, computed here for each (a ``retention`` key is not read).

Sample text, ``metrics["generations"]``: ``[{"prompt", "teacher", "student", "chat_template"}]``
as :func:`slimforge.compression.generations.greedy_continuations` returns.

Anything missing, non-numeric or not finite is left out of the card (nothing is claimed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Fidelity", "Overlap", "TaskFigure", "read_fidelity", "read_overlap", "read_tasks"]


def number(value: Any) -> float | None:
    """``value`` as a finite float, else None (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _pair(value: Any) -> tuple[float, float] | None:
    """``[low, high]`` as two finite floats, else None."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    low, high = number(value[0]), number(value[1])
    return (low, high) if low is not None and high is not None else None


def _first(data: Mapping[str, Any], *keys: str) -> Any:
    return next((data[k] for k in keys if data.get(k) is not None), None)


@dataclass(frozen=True)
class Fidelity:
    """Perplexities (token-weighted), ratio student / teacher with its interval at
    ``confidence``, KL(teacher ‖ student) in nats per token, top-1 agreement (0-1), scored
    tokens and the protocol."""

    teacher_perplexity: float | None = None
    student_perplexity: float | None = None
    perplexity_ratio: float | None = None
    ratio_interval: tuple[float, float] | None = None
    confidence: float = 0.95
    kl_per_token: float | None = None
    top1_agreement: float | None = None
    tokens: int | None = None
    protocol: Mapping[str, Any] = field(default_factory=dict)


def read_fidelity(metrics: Mapping[str, Any]) -> Fidelity:
    """The fidelity figures under ``metrics["fidelity"]``, else today's top-level keys."""
    found = metrics.get("fidelity")
    data: Mapping[str, Any] = found if isinstance(found, Mapping) else metrics
    given = data.get("protocol")
    protocol: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    teacher = number(data.get("teacher_perplexity"))
    student = number(data.get("student_perplexity"))
    ratio = number(data.get("perplexity_ratio"))
    if ratio is None and teacher and student is not None:
        ratio = student / teacher
    tokens = number(_first(data, "evaluation_tokens", "tokens"))
    return Fidelity(
        teacher_perplexity=teacher,
        student_perplexity=student,
        perplexity_ratio=ratio,
        ratio_interval=_pair(_first(data, "perplexity_ratio_interval", "perplexity_ratio_ci95")),
        confidence=number(protocol.get("interval_confidence")) or 0.95,
        kl_per_token=number(_first(data, "kl_per_token", "kl_nats_per_token")),
        top1_agreement=number(data.get("top1_agreement")),
        tokens=int(tokens) if tokens is not None else None,
        protocol=protocol,
    )


@dataclass(frozen=True)
class Overlap:
    """Share (0-1) of the evaluation's ``ngram``-grams found in the calibration and kd text,
    and the longest shared run in tokens (None when not measured)."""

    ngram: int
    share: float
    longest_run_tokens: int | None


def read_overlap(metrics: Mapping[str, Any]) -> Overlap | None:
    data = metrics.get("overlap")
    share = number(data.get("share")) if isinstance(data, Mapping) else None
    if share is None or not isinstance(data, Mapping):
        return None
    run = number(data.get("longest_run_tokens"))
    ngram = number(data.get("ngram"))
    return Overlap(int(ngram or 13), share, int(run) if run is not None else None)


@dataclass(frozen=True)
class TaskFigure:
    """One figure of one zero-shot task: the metric (``acc``, ``acc_norm`` …, 0-1), teacher
    and student values with their standard errors, retention = student / teacher."""

    task: str
    metric: str
    student: float
    teacher: float | None
    student_stderr: float | None
    teacher_stderr: float | None
    num_fewshot: int
    limit: int | None

    @property
    def retention(self) -> float | None:
        return self.student / self.teacher if self.teacher else None


# Counts the worker stores beside the scores (documents scored, documents in the split).
_COUNTS = frozenset({"n_samples", "n_documents"})


def _harness_figures(data: Any) -> dict[str, float]:
    """lm-eval's ``{"acc,none": 0.5, "alias": …}`` → ``{"acc": 0.5}`` (numbers only)."""
    if not isinstance(data, Mapping):
        return {}
    found = {}
    for key, value in data.items():
        as_number = number(value)
        if as_number is not None:
            found[str(key).split(",")[0]] = as_number
    return found


def read_tasks(metrics: Mapping[str, Any]) -> list[TaskFigure]:
    """One TaskFigure per task and student metric, tasks in the order given."""
    tasks = metrics.get("tasks")
    figures: list[TaskFigure] = []
    for task, entry in (tasks or {}).items() if isinstance(tasks, Mapping) else ():
        if not isinstance(entry, Mapping):
            continue
        student = _harness_figures(entry.get("student"))
        teacher = _harness_figures(entry.get("teacher"))
        shots, limit = number(entry.get("num_fewshot")), number(entry.get("limit"))
        for metric, value in student.items():
            if metric.endswith("_stderr") or metric in _COUNTS:
                continue
            figures.append(
                TaskFigure(
                    task=str(task),
                    metric=metric,
                    student=value,
                    teacher=teacher.get(metric),
                    student_stderr=student.get(f"{metric}_stderr"),
                    teacher_stderr=teacher.get(f"{metric}_stderr"),
                    num_fewshot=int(shots or 0),
                    limit=int(limit) if limit is not None else None,
                )
            )
    return figures
