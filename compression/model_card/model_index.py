"""The card's ``model-index``: one metric entry per figure and task, teacher figures alongside.

Format: the Hub's model card metadata (hub-docs ``modelcard.md``), as huggingface_hub's
``ModelCardData`` reads it into ``eval_results`` (one ``EvalResult`` per metric). The student's
figures carry the standard metric types (``perplexity``, ``acc``, ``acc_norm`` …) so the Hub and
leaderboards read them as this model's; the teacher's figures get their own types
(``teacher_perplexity``, ``teacher_acc`` …) so that no reader mistakes them for the student's.
How a figure was measured goes into the metric's ``args`` (the spec's "arguments passed during
Metric.compute()"): the perplexity window, stride and scoring, a task's few-shot count, a
figure's standard error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slimforge.compression.model_card.figures import Fidelity, Overlap, TaskFigure

__all__ = ["evaluation_dataset", "model_index"]

_TEXT_GENERATION = {"type": "text-generation", "name": "Text Generation"}
# Protocol fields small enough for a metric's args; the whole protocol is in the card's text.
_PROTOCOL_ARGS = (
    "window_tokens",
    "stride_tokens",
    "scored_tokens",
    "first_token_scored",
    "bos_prepended",
)


def _value(x: float) -> float:
    """Four decimals (perplexities, ratios), or six significant digits below 1 (KL, shares,
    accuracies): enough for any of these figures, short in YAML."""
    return float(f"{x:.6g}") if abs(x) < 1 else round(x, 4)


def evaluation_dataset(evaluation: Mapping[str, Any] | None) -> dict[str, str]:
    """The model-index ``dataset`` of the evaluation text: a Hub dataset (id, config, split,
    revision) or a local file (its name only, type ``text``)."""
    ev = evaluation or {}
    if ev.get("dataset"):
        entry = {"name": str(ev["dataset"]), "type": str(ev["dataset"])}
        for key, spec_key in (
            ("config", "config_name"),
            ("split", "split"),
            ("revision", "revision"),
        ):
            if ev.get(spec_key):
                entry[key] = str(ev[spec_key])
        return entry
    name = Path(str(ev.get("path") or "evaluation text")).name
    return {"name": name, "type": "text"}


def _metric(kind: str, value: float, name: str, args: Mapping[str, Any] | None = None) -> dict:
    entry: dict[str, Any] = {"type": kind, "value": _value(value), "name": name}
    if args:
        entry["args"] = dict(args)
    return entry


def _fidelity_metrics(fid: Fidelity, overlap: Overlap | None) -> list[dict[str, Any]]:
    args = {k: fid.protocol[k] for k in _PROTOCOL_ARGS if k in fid.protocol}
    found = []
    if fid.student_perplexity is not None:
        found.append(_metric("perplexity", fid.student_perplexity, "Perplexity", args))
    if fid.teacher_perplexity is not None:
        found.append(
            _metric("teacher_perplexity", fid.teacher_perplexity, "Perplexity of the teacher", args)
        )
    if fid.perplexity_ratio is not None:
        found.append(
            _metric("perplexity_ratio", fid.perplexity_ratio, "Perplexity ratio student / teacher")
        )
    if fid.ratio_interval is not None:
        pct = f"{fid.confidence * 100:g}"
        for end, bound in zip(("low", "high"), fid.ratio_interval, strict=True):
            found.append(
                _metric(
                    f"perplexity_ratio_ci{pct}_{end}",
                    bound,
                    f"Perplexity ratio, {pct} % bootstrap interval, {end} end",
                )
            )
    if fid.kl_per_token is not None:
        kl_args = {"kl_top_k": fid.protocol["kl_top_k"]} if fid.protocol.get("kl_top_k") else None
        found.append(
            _metric(
                "kl_divergence",
                fid.kl_per_token,
                "KL(teacher || student), nats per token",
                kl_args,
            )
        )
    if fid.top1_agreement is not None:
        found.append(
            _metric("top1_agreement", fid.top1_agreement, "Top-1 agreement with the teacher")
        )
    if overlap is not None:
        found.append(
            _metric(
                "ngram_overlap",
                overlap.share,
                f"Share of evaluation {overlap.ngram}-grams in the calibration and kd text",
                {"ngram": overlap.ngram, "longest_run_tokens": overlap.longest_run_tokens},
            )
        )
    return found


def _task_results(tasks: list[TaskFigure]) -> list[dict[str, Any]]:
    """One result per task (dataset = the lm-eval task), its figures as metrics."""
    by_task: dict[str, dict[str, Any]] = {}
    for fig in tasks:
        result = by_task.setdefault(
            fig.task,
            {
                "task": dict(_TEXT_GENERATION),
                "dataset": {
                    "name": fig.task,
                    "type": fig.task,
                    "args": {"num_few_shot": fig.num_fewshot}
                    | ({"limit": fig.limit} if fig.limit is not None else {}),
                },
                "metrics": [],
            },
        )
        err = {"stderr": _value(fig.student_stderr)} if fig.student_stderr is not None else None
        result["metrics"].append(_metric(fig.metric, fig.student, fig.metric, err))
        if fig.teacher is not None:
            t_err = (
                {"stderr": _value(fig.teacher_stderr)} if fig.teacher_stderr is not None else None
            )
            result["metrics"].append(
                _metric(f"teacher_{fig.metric}", fig.teacher, f"{fig.metric} of the teacher", t_err)
            )
        if fig.retention is not None:
            result["metrics"].append(
                _metric(
                    f"{fig.metric}_retention",
                    fig.retention,
                    f"{fig.metric} retention (student / teacher)",
                )
            )
    return list(by_task.values())


def model_index(
    *,
    name: str,
    evaluation: Mapping[str, Any] | None,
    fidelity: Fidelity,
    overlap: Overlap | None,
    tasks: list[TaskFigure],
) -> list[dict[str, Any]] | None:
    """The ``model-index`` list (one model named ``name``), or None when nothing was measured."""
    results = []
    text_metrics = _fidelity_metrics(fidelity, overlap)
    if text_metrics:
        results.append(
            {
                "task": dict(_TEXT_GENERATION),
                "dataset": evaluation_dataset(evaluation),
                "metrics": text_metrics,
            }
        )
    results += _task_results(tasks)
    return [{"name": name, "results": results}] if results else None
