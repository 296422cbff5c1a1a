"""How the client commands show jobs and events: plain lines, a live progress line on a
terminal, a job summary."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO, TypeGuard

if TYPE_CHECKING:
    from slimforge.contract.jobs import EventOut, JobOut

__all__ = ["Progress", "format_event", "mask", "size", "summary"]


def size(n: float) -> str:
    """A byte count for people: '315.3 KB'."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def mask(key: str | None) -> str | None:
    """An API key with only its first and last four characters shown."""
    if not key:
        return None
    return key[:4] + "…" + key[-4:] if len(key) > 12 else "…"


def _event_detail(data: dict[str, Any]) -> str:
    """'3/24, loss 0.0123' from an event's data, when it carries them."""
    parts = []
    if isinstance(data.get("index"), int) and isinstance(data.get("total"), int):
        parts.append(f"{data['index']}/{data['total']}")
    elif isinstance(data.get("step"), int) and isinstance(data.get("steps"), int):
        parts.append(f"step {data['step']}/{data['steps']}")
    elif isinstance(data.get("tokens"), int) and isinstance(data.get("total"), int):
        parts.append(f"{data['tokens']:,}/{data['total']:,} tokens")  # sampling text
    if isinstance(data.get("tokens_per_second"), int | float):
        parts.append(f"{data['tokens_per_second']:.1f} tokens/s")
    loss = data.get("loss", data.get("loss_after"))
    if isinstance(loss, int | float):
        parts.append(f"loss {loss:.4g}")
    if isinstance(data.get("perplexity"), int | float):
        parts.append(f"perplexity {data['perplexity']:.4g}")
    return ", ".join(parts)


def format_event(event: EventOut) -> str:
    """One plain line for an event: time, level, stage, message and its progress figures."""
    detail = _event_detail(event.data)
    level = "" if event.level == "info" else f"{event.level.upper()} "
    stage = f"[{event.stage}] " if event.stage else ""
    return f"{event.time.astimezone():%H:%M:%S} {level}{stage}{event.message}" + (
        f" ({detail})" if detail else ""
    )


class Progress:
    """Events as a live progress line on a terminal (one line per stage, rewritten with \\r),
    or as plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.stage: str | None = None
        self.start = time.monotonic()
        self._open = False

    def __call__(self, event: EventOut) -> None:
        if not self.tty or event.level != "info":
            self._newline()
            print(format_event(event), file=self.stream, flush=True)
            return
        if event.stage != self.stage:
            self._newline()
            self.stage = event.stage
        width = shutil.get_terminal_size((100, 20)).columns - 1
        data = event.data
        bar = ""
        count = data.get("index", data.get("tokens"))
        if isinstance(count, int) and isinstance(data.get("total"), int):
            done = min(20, int(20 * count / max(1, data["total"])))
            bar = "[" + "#" * done + "." * (20 - done) + "] "
        detail = _event_detail(data)
        line = (
            f"{self.stage or 'job'}: {bar}{detail + '  ' if detail else ''}{event.message}"
            f"  ({time.monotonic() - self.start:.0f} s)"
        )
        self.stream.write("\r" + line[:width].ljust(width))
        self.stream.flush()
        self._open = True

    def _newline(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

    def close(self) -> None:
        self._newline()


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fidelity_line(fidelity: Any) -> list[str]:
    """'ratio 1.003 [0.998, 1.007], KL 0.0004 nats/token, top-1 77.0%' (metrics.fidelity)."""
    if not isinstance(fidelity, dict):
        return []
    parts = []
    if _number(ratio := fidelity.get("perplexity_ratio")):
        low_high = fidelity.get("perplexity_ratio_interval")
        interval = (
            f" [{low_high[0]:.3f}, {low_high[1]:.3f}]"
            if isinstance(low_high, list) and len(low_high) == 2 and all(map(_number, low_high))
            else ""
        )
        parts.append(f"perplexity ratio {ratio:.3f}{interval}")
    if _number(kl := fidelity.get("kl_per_token")):
        parts.append(f"KL {kl:.4g} nats/token")
    if _number(top1 := fidelity.get("top1_agreement")):
        parts.append(f"top-1 agreement {top1:.1%}")
    return [f"  fidelity    {', '.join(parts)}"] if parts else []


def _task_lines(tasks: Any) -> list[str]:
    """One line per zero-shot task: accuracy of teacher and student, retention (metrics.tasks)."""
    lines = []
    for name, entry in tasks.items() if isinstance(tasks, dict) else ():
        teacher, student = entry.get("teacher") or {}, entry.get("student") or {}
        if not (_number(teacher.get("acc")) and _number(student.get("acc"))):
            continue
        retention = entry.get("retention")
        kept = f", retention {retention:.1%}" if _number(retention) else ""
        limit = f"; at most {entry['limit']} examples" if _number(entry.get("limit")) else ""
        lines.append(
            f"  task        {name}: acc teacher {teacher['acc']:.3f}, student "
            f"{student['acc']:.3f}{kept}{limit}"
        )
    return lines


def _quality_lines(m: dict[str, Any]) -> list[str]:
    """Fidelity to the teacher, the evaluation text's overlap and zero-shot tasks, where the
    job measured them (issue 16: results where users look)."""
    lines = _fidelity_line(m.get("fidelity"))
    overlap = m.get("overlap")
    if isinstance(overlap, dict) and _number(share := overlap.get("share")):
        note = "  NOT held out" if share > 0.01 else ""
        lines.append(
            f"  overlap     {share:.1%} of the evaluation {overlap.get('ngram', 13)}-grams are"
            f" in the calibration/kd text{note}"
        )
    return lines + _task_lines(m.get("tasks"))


def summary(job: JobOut) -> list[str]:
    show_stage = job.stage and job.status in ("running", "failed", "cancelled")
    lines = [f"{job.id}  {job.status}" + (f" (stage {job.stage})" if show_stage else "")]
    lines.append(f"  method      {job.method}")
    lines.append(f"  created     {job.created_at.astimezone():%Y-%m-%d %H:%M:%S}")
    if job.started_at and job.finished_at:
        lines.append(f"  ran for     {(job.finished_at - job.started_at).total_seconds():.1f} s")
    m = job.metrics
    if "params_before" in m and "params_after" in m:
        target = f" (target {m['target_params']:,})" if "target_params" in m else ""
        lines.append(f"  parameters  {m['params_before']:,} → {m['params_after']:,}{target}")
    if "student_perplexity" in m:
        teacher = m.get("teacher_perplexity")
        before = f"teacher {teacher:.4g}, " if isinstance(teacher, int | float) else ""
        lines.append(f"  perplexity  {before}student {m['student_perplexity']:.4g}")
    lines += _quality_lines(m)
    if "artifact_bytes" in m:
        stored = size(m["artifact_bytes"])
        lines.append(f"  artifact    {stored}  (slimforge download {job.id} DIR)")
    if job.error:
        lines.append(f"  error       {job.error}")
    return lines
