"""The card's markdown for the evaluation: teacher vs student table, protocol, overlap, zero-shot
tasks and sample continuations (the figures as :mod:`.figures` reads them)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from slimforge.compression.model_card.figures import Fidelity, Overlap, TaskFigure

__all__ = ["evaluation_section", "generations_section", "text_name"]

# Above this share of shared n-grams the card warns that perplexity is partly in-sample
# (issue 16: the worker warns in the events above 1 %).
OVERLAP_WARNING = 0.01


def text_name(evaluation: Mapping[str, Any] | None) -> str:
    """The evaluation text in words, from the card's (public) parameters."""
    ev = evaluation or {}
    if ev.get("dataset"):
        parts = [f"split `{ev.get('split') or 'train'}`"]
        parts += [f"config `{ev['config_name']}`"] if ev.get("config_name") else []
        parts += [f"revision `{ev['revision']}`"] if ev.get("revision") else []
        return f"the Hub dataset `{ev['dataset']}` ({', '.join(parts)})"
    if ev.get("path"):
        digest = f" (sha256 `{ev['sha256']}`)" if ev.get("sha256") else ""
        return f"the file `{ev['path']}`{digest}"
    return "the evaluation text"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _fidelity_rows(fid: Fidelity) -> list[str]:
    rows = [f"| perplexity | {_fmt(fid.teacher_perplexity)} | {_fmt(fid.student_perplexity)} |"]
    if fid.perplexity_ratio is not None:
        ratio = f"{fid.perplexity_ratio:.3f}"
        label = "perplexity ratio, student / teacher"
        if fid.ratio_interval is not None:
            label += f" ({fid.confidence:.0%} bootstrap interval)"
            ratio += f" [{fid.ratio_interval[0]:.3f}, {fid.ratio_interval[1]:.3f}]"
        rows.append(f"| {label} | 1.000 | {ratio} |")
    if fid.kl_per_token is not None:
        bound = " (lower bound, top-k)" if fid.protocol.get("kl_top_k") else ""
        rows.append(
            f"| KL(teacher ‖ student), nats per token{bound} | 0 | {fid.kl_per_token:.4f} |"
        )
    if fid.top1_agreement is not None:
        rows.append(f"| top-1 agreement with the teacher | 100% | {_pct(fid.top1_agreement)} |")
    return rows


def _protocol_lines(fid: Fidelity) -> list[str]:
    if not fid.protocol:
        return []
    lines = ["", "How the figures were measured (identical for teacher and student):", ""]
    for key, value in fid.protocol.items():
        if value is None:  # unset options (e.g. no top-k): nothing to say
            continue
        lines.append(f"- {key.replace('_', ' ')}: {value}")
    return lines


def _overlap_lines(overlap: Overlap | None) -> list[str]:
    if overlap is None:
        return []
    run = (
        f"; the longest shared run is {overlap.longest_run_tokens:,} tokens"
        if overlap.longest_run_tokens is not None
        else ""
    )
    lines = [
        "",
        f"Overlap with the training text: {overlap.share:.2%} of the evaluation text's "
        f"{overlap.ngram}-grams (of tokens) also occur in the calibration and kd text{run}.",
    ]
    if overlap.share > OVERLAP_WARNING:
        lines += [
            "",
            f"**That is above {OVERLAP_WARNING:.0%}: part of the evaluation text was seen in "
            "calibration or distillation, so the perplexity figures flatter the student.**",
        ]
    return lines


def _task_lines(tasks: list[TaskFigure]) -> list[str]:
    if not tasks:
        return []

    def cell(value: float | None, err: float | None) -> str:
        return _fmt(value) + (f" ± {err:.3f}" if err is not None and value is not None else "")

    limits = sorted({t.limit for t in tasks if t.limit is not None})
    shots = sorted({t.num_fewshot for t in tasks})
    lines = [
        "",
        "### Zero-shot tasks",
        "",
        "Run with lm-evaluation-harness on teacher and student alike "
        f"({', '.join(str(s) for s in shots)}-shot"
        + (f"; at most {', '.join(str(n) for n in limits)} examples per task" if limits else "")
        + "; ± one standard error).",
        "",
        "| task | metric | teacher | student | retention |",
        "|---|---|---|---|---|",
    ]
    for t in tasks:
        lines.append(
            f"| {t.task} | {t.metric} | {cell(t.teacher, t.teacher_stderr)} | "
            f"{cell(t.student, t.student_stderr)} | {_pct(t.retention)} |"
        )
    return lines


def evaluation_section(
    *,
    params_before: int,
    params_after: int,
    fidelity: Fidelity,
    overlap: Overlap | None,
    tasks: list[TaskFigure],
    evaluation: Mapping[str, Any] | None,
) -> list[str]:
    """``## Evaluation``: the teacher vs student table (perplexity on ``evaluation``, ratio with
    its interval, KL, top-1 agreement), the protocol, the overlap and the tasks table."""
    lines = [
        "",
        "## Evaluation",
        "",
        "The teacher is the original model, the student this one.",
        "",
        "| metric | teacher | student |",
        "|---|---|---|",
        f"| parameters | {params_before:,} | {params_after:,} |",
    ]
    measured = fidelity.teacher_perplexity is not None or fidelity.student_perplexity is not None
    if measured:
        lines += _fidelity_rows(fidelity)
        tokens = f" ({fidelity.tokens:,} scored tokens)" if fidelity.tokens else ""
        lines += [
            "",
            f"Perplexity, KL and agreement are measured on {text_name(evaluation)}{tokens}.",
        ]
        lines += _protocol_lines(fidelity)
    lines += _overlap_lines(overlap)
    lines += _task_lines(tasks)
    return lines


def _fenced(text: str) -> list[str]:
    """``text`` in a code block whose fence no run of backticks inside it can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + "text", text or "(nothing: the model ended at once)", fence]


def generations_section(generations: Any) -> list[str]:
    """``## Sample continuations`` from ``metrics["generations"]``; empty when there are none."""
    if not isinstance(generations, list):
        return []
    items = [g for g in generations if isinstance(g, Mapping) and isinstance(g.get("prompt"), str)]
    if not items:
        return []
    chat = any(g.get("chat_template") for g in items)
    how = " The prompts were given through the tokenizer's chat template." if chat else ""
    lines = [
        "",
        "## Sample continuations",
        "",
        "Greedy (deterministic) continuations of fixed prompts by the teacher (the original "
        f"model) and the student (this model).{how}",
    ]
    for i, g in enumerate(items, 1):
        lines += ["", f"### {i}. “{g['prompt']}”", ""]
        for role in ("teacher", "student"):
            lines += [f"**{role.capitalize()}**", "", *_fenced(str(g.get(role) or "")), ""]
        lines.pop()
    return lines
