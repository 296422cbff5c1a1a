"""Zero-shot task accuracy of an in-memory model through EleutherAI's lm-evaluation-harness.

Where the numbers come from: every figure is computed by lm-evaluation-harness (the ``lm_eval``
package, version reported in ``TaskScore.harness_version``): its ``HFLM`` wrapper scores each
answer choice by the summed log-likelihood (nats) of its tokens after the prompt, and the task's
YAML defines prompt, choices, metrics (``acc``: argmax of the log-likelihood equals the target;
``acc_norm``: the same after dividing by the choice's length in characters) and its version
(``TaskScore.version``, from the YAML ``metadata.version``). Standard errors are lm-eval's
(``lm_eval.api.metrics.mean_stderr``: sample standard deviation / sqrt(n) for ``acc``). Nothing
is re-implemented here; written against lm-eval 0.4.13 (``TaskManager``, ``HFLM``,
``simple_evaluate``).

Data: a task is a name registered with lm-eval, either one of its built-in tasks or a task in a
local task folder (``include_path``: YAML files plus their JSON/JSONL/CSV/Parquet data files).
Built-in tasks download their data sets from the Hugging Face Hub, so they need Hub access on the
worker (``hub_access=True``). Without it (the default) the run is offline: only local tasks whose
``dataset_kwargs.data_files`` are files on disk are accepted, the Hub clients are switched to
offline mode for the run, and anything else is refused with a ``ValueError`` before any work.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any

from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from torch import nn
from transformers import PreTrainedTokenizerBase

from slimforge.compression.task_checks import (
    check_tasks,
    check_tied_weights,
    hub_mode,
    task_folders,
)

__all__ = ["TaskRetention", "TaskScore", "check_task_names", "run_tasks", "task_retention"]


@dataclass(frozen=True)
class TaskScore:
    """One task's (or group's) accuracy as lm-evaluation-harness reports it.

    ``acc`` and ``acc_norm`` are fractions in [0, 1]; ``acc_norm`` is None where the task does not
    report it; a stderr is None where lm-eval gives none. ``n_samples`` documents were scored
    out of ``n_documents`` in the evaluation split (fewer when ``limit`` is set).
    """

    task: str
    acc: float
    acc_stderr: float | None
    acc_norm: float | None
    acc_norm_stderr: float | None
    n_samples: int
    n_documents: int
    num_fewshot: int
    version: str | None
    harness_version: str


@dataclass(frozen=True)
class TaskRetention:
    """Teacher and student scores of one task; retention = student / teacher, a ratio of
    fractions (None where the teacher scores 0 or the task has no such metric)."""

    task: str
    teacher: TaskScore
    student: TaskScore

    @property
    def acc_retention(self) -> float | None:
        return _ratio(self.student.acc, self.teacher.acc)

    @property
    def acc_norm_retention(self) -> float | None:
        return _ratio(self.student.acc_norm, self.teacher.acc_norm)


def _ratio(student: float | None, teacher: float | None) -> float | None:
    if student is None or teacher is None or teacher == 0:
        return None
    return student / teacher


def run_tasks(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str],
    *,
    include_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    limit: int | None = None,
    num_fewshot: int | None = 0,
    batch_size: int = 8,
    hub_access: bool = False,
) -> dict[str, TaskScore]:
    """Score an in-memory causal LM on lm-eval tasks; returns {task or group name: TaskScore}.

    ``model``: a transformers causal LM (``input_ids`` [batch, seq_len] -> ``logits`` [batch,
    seq_len, vocab]), wrapped as it is (``HFLM(pretrained=model)``: no second load, its own device
    and dtype; eval mode during the run, its train/eval flag restored after). The tokenizer is
    copied because lm-eval sets a pad token on it. ``include_path``: local task folders (searched
    for ``*.yaml``). ``limit``: at most this many documents per task (for smoke tests; figures on a
    subset are not the task's figures). ``num_fewshot``: 0 = zero-shot, None = each task's own
    default. Groups that aggregate ``acc`` get an entry beside their tasks. lm-eval reseeds
    Python's, NumPy's and torch's global RNGs (its fixed seeds) during the run.

    Raises ValueError, before anything is scored, for an unknown task name, a task whose answers
    are generated rather than scored (no ``acc``), a task that needs the Hugging Face Hub when
    ``hub_access`` is False, and a model whose config ties weights its tensors do not share
    (lm-eval calls ``tie_weights()``, which would overwrite one of them).
    """
    manager = _task_manager(tasks, include_path, hub_access)
    check_tied_weights(model)
    return _evaluate(model, tokenizer, tasks, manager, limit, num_fewshot, batch_size, hub_access)


def task_retention(
    teacher: nn.Module,
    student: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str],
    *,
    include_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    limit: int | None = None,
    num_fewshot: int | None = 0,
    batch_size: int = 8,
    hub_access: bool = False,
) -> dict[str, TaskRetention]:
    """Run the same tasks (same documents, same settings) on teacher and student.

    Retention per task is ``student.acc / teacher.acc`` (``TaskRetention.acc_retention``), the
    zero-shot figure compression papers report. Arguments and errors as in ``run_tasks``.
    """
    manager = _task_manager(tasks, include_path, hub_access)  # indexed once for both runs
    check_tied_weights(teacher)
    check_tied_weights(student)
    settings = (limit, num_fewshot, batch_size, hub_access)
    teacher_scores = _evaluate(teacher, tokenizer, tasks, manager, *settings)
    student_scores = _evaluate(student, tokenizer, tasks, manager, *settings)
    return {
        name: TaskRetention(name, score, student_scores[name])
        for name, score in teacher_scores.items()
    }


def check_task_names(
    tasks: Sequence[str],
    *,
    include_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    hub_access: bool = False,
) -> None:
    """Refuse, before any model work, what :func:`run_tasks` would refuse: unknown names,
    tasks without ``acc``, generation tasks, and (offline) tasks whose data is not local.
    Raises ValueError naming the task and what to change."""
    with hub_mode(hub_access):
        _task_manager(tasks, include_path, hub_access)


def _task_manager(
    tasks: Sequence[str],
    include_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
    hub_access: bool,
) -> TaskManager:
    if not tasks:
        raise ValueError("no task given: name at least one lm-eval task")
    folders = task_folders(include_path)
    # Offline, lm-eval's built-in tasks (Hub data sets, ~10k YAML files to parse) are not indexed.
    manager = TaskManager(include_path=folders or None, include_defaults=hub_access)
    check_tasks(manager.task_index, tasks, folders, hub_access)
    return manager


def _evaluate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str],
    manager: TaskManager,
    limit: int | None,
    num_fewshot: int | None,
    batch_size: int,
    hub_access: bool,
) -> dict[str, TaskScore]:
    was_training = model.training
    with hub_mode(hub_access):
        try:
            lm = HFLM(pretrained=model, tokenizer=copy.deepcopy(tokenizer), batch_size=batch_size)
            results = simple_evaluate(
                model=lm,
                tasks=list(tasks),
                num_fewshot=num_fewshot,
                limit=limit,
                task_manager=manager,
                log_samples=False,
            )
        finally:
            model.train(was_training)
    if results is None:  # only non-zero ranks of a distributed run get None
        raise RuntimeError("lm-eval returned no results (not rank 0 of a distributed run?)")
    return _scores(results)


def _scores(results: dict[str, Any]) -> dict[str, TaskScore]:
    harness = package_version("lm_eval")
    counts = results.get("n-samples", {})
    scores: dict[str, TaskScore] = {}
    for name, metrics in results["results"].items():
        acc = _metric(metrics, "acc")
        if acc is None:
            if name in counts:
                raise ValueError(f"lm-eval reported no acc for task {name!r}: {sorted(metrics)}")
            continue  # a group without an aggregate: its tasks have their own entries
        norm = _metric(metrics, "acc_norm")
        count = counts.get(name, {})
        version = results.get("versions", {}).get(name)
        scores[name] = TaskScore(
            task=name,
            acc=acc[0],
            acc_stderr=acc[1],
            acc_norm=None if norm is None else norm[0],
            acc_norm_stderr=None if norm is None else norm[1],
            n_samples=int(count.get("effective", metrics.get("sample_len", 0))),
            n_documents=_documents(results, name),
            num_fewshot=int(results.get("n-shot", {}).get(name, 0)),
            version=None if version is None else str(version),
            harness_version=harness,
        )
    return scores


def _documents(results: dict[str, Any], name: str) -> int:
    """Documents in a task's evaluation split; for a group, the sum over its tasks."""
    if name in results.get("n-samples", {}):
        return int(results["n-samples"][name]["original"])
    children = results.get("group_subtasks", {}).get(name, [])
    return sum(_documents(results, child) for child in children)


def _metric(metrics: dict[str, Any], metric: str) -> tuple[float, float | None] | None:
    """(value, stderr) of ``metric`` under the ``none`` filter (else the first filter reported).

    lm-eval keys metrics as ``"<metric>,<filter>"``; a stderr it could not compute is "N/A".
    """
    keys = [k for k in metrics if k.partition(",")[0] == metric]
    if not keys:
        return None
    key = f"{metric},none" if f"{metric},none" in keys else keys[0]
    stderr = metrics.get(f"{metric}_stderr,{key.partition(',')[2]}")
    if isinstance(stderr, (int, float)) and math.isfinite(stderr):
        return float(metrics[key]), float(stderr)
    return float(metrics[key]), None
