"""How the client commands show jobs and events: plain lines, a live progress line on a
terminal, a job summary."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

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
        if isinstance(data.get("index"), int) and isinstance(data.get("total"), int):
            done = int(20 * data["index"] / max(1, data["total"]))
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
    if "artifact_bytes" in m:
        stored = size(m["artifact_bytes"])
        lines.append(f"  artifact    {stored}  (slimforge download {job.id} DIR)")
    if job.error:
        lines.append(f"  error       {job.error}")
    return lines
