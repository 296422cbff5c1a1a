"""The report of ``gpu_check.py``: a wall-clock guard that skips what no longer fits, and one
markdown table (and its JSON) written to stdout and, after every part, under ``$OUT``."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from gpu_common import Row

__all__ = ["Deadline", "OutOfTime", "Part", "Report", "commit", "machine"]

ROOT = Path(__file__).resolve().parent.parent


class OutOfTime(BaseException):
    """The guard's alarm. A BaseException, so that no ``except Exception`` in the library
    swallows it."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise OutOfTime


class Deadline:
    """Runs parts until ``seconds`` after its creation; a part still running then is
    interrupted (SIGALRM, main thread only; a long C call finishes first)."""

    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.end = self.start + seconds

    def elapsed(self) -> float:
        """Seconds since the guard started."""
        return time.monotonic() - self.start

    def run(self, fn: Callable[[], list[Row]]) -> list[Row]:
        """``fn()``; raises OutOfTime at once when no time is left, or when it runs past."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise OutOfTime
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, left)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


@dataclass
class Part:
    """A named step of the check, the row names it reports (for rows of a part that did not
    run) and what runs it."""

    name: str
    measures: Sequence[str]
    run: Callable[[], list[Row]]


def commit() -> str:
    """The checkout's commit (``git rev-parse --short HEAD``, with ``-dirty`` when the tree has
    changes), else ``$SLIMFORGE_COMMIT`` (a copied tree without .git), else 'unknown'."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("SLIMFORGE_COMMIT", "unknown")


def machine(device: torch.device) -> str:
    """The device, torch and the CPU, for the report's caption."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    return (
        f"{name}; torch {torch.__version__}; {platform.machine()}, {os.cpu_count()} CPU cores "
        f"(torch threads: {torch.get_num_threads()})"
    )


@dataclass
class Report:
    """Header lines and rows; :meth:`write` puts them under ``out`` (if given) as
    ``gpu_check.md`` and ``gpu_check.json``."""

    header: dict[str, str]
    out: Path | None
    rows: list[Row] = field(default_factory=list)
    errors: int = 0

    def add(self, part: Part, deadline: Deadline) -> None:
        """Run ``part`` under ``deadline``; its rows, or a row per measure saying why not."""
        t0 = deadline.elapsed()
        try:
            rows = deadline.run(part.run)
        except OutOfTime:
            rows = [Row(part.name, m, text="skipped (time)") for m in part.measures]
        except Exception as exc:  # report it and go on: the other parts still count
            traceback.print_exc()
            self.errors += 1
            text = f"error: {type(exc).__name__}: {exc}"[:200]
            rows = [Row(part.name, m, text=text, verdict="FAIL") for m in part.measures]
        self.rows += rows
        print(f"[{deadline.elapsed():6.1f} s] {part.name}: {deadline.elapsed() - t0:.1f} s")
        self.write()

    def skip(self, part: Part, reason: str) -> None:
        """Rows of a part that cannot run here (``reason``)."""
        self.rows += [Row(part.name, m, text=reason) for m in part.measures]

    def markdown(self) -> str:
        """The header lines, then one table: part, measure, value, check, verdict."""
        lines = [f"{key}: {value}" for key, value in self.header.items()]
        lines += ["", "| part | measure | value | check | verdict |", "|---|---|---:|---|---|"]
        for r in self.rows:
            lines.append(f"| {r.part} | {r.measure} | {r.cell()} | {r.check} | {r.verdict} |")
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        """Both files under ``out``, rewritten whole (a run cut short leaves what it had)."""
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.md").write_text(self.markdown())
        data: dict[str, Any] = {**self.header, "rows": [asdict(r) for r in self.rows]}
        (self.out / "gpu_check.json").write_text(json.dumps(data, indent=1) + "\n")


def now() -> str:
    """The date and time in UTC, to the minute."""
    return f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
