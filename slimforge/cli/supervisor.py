"""``slimforge serve``'s child processes (its workers), kept running.

A child that exits while ``serve`` runs (the kernel's out-of-memory killer, a crash, a stray
``kill -9``) is logged with its exit status or signal, reported to ``on_exit`` and started again
after a backoff that doubles with each quick death (1 s, 2 s, 4 s … at most 30 s) and resets once
a child has run for ``stable_seconds``. :meth:`Supervisor.status` is what ``/readyz`` shows.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["Supervisor", "describe_exit"]

log = logging.getLogger("slimforge.serve")


def describe_exit(returncode: int) -> str:
    """``-9`` -> ``"killed by SIGKILL"``; ``1`` -> ``"exited with status 1"``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


@dataclass
class _Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None
    last_exit: str = ""
    pids: list[int] = field(default_factory=list)


class Supervisor:
    """Start ``children`` (name -> argv), watch them from a thread, restart the ones that die.

    ``on_exit(name, pid, description)`` runs in the watching thread after each unexpected exit
    (``serve`` ends the dead worker's job leases there); an exception in it is logged, never
    raised.
    """

    def __init__(
        self,
        children: Mapping[str, Sequence[str]],
        *,
        env: Mapping[str, str] | None = None,
        on_exit: Callable[[str, int, str], None] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 30.0,
        stable_seconds: float = 60.0,
        poll_seconds: float = 0.2,
    ) -> None:
        self._children = [_Child(name, list(argv)) for name, argv in children.items()]
        self._env, self._on_exit, self._preexec_fn = env, on_exit, preexec_fn
        self._backoff, self._max_backoff = backoff_seconds, max_backoff_seconds
        self._stable, self._poll = stable_seconds, poll_seconds
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="slimforge-supervisor", daemon=True
        )

    def start(self) -> None:
        for child in self._children:
            self._spawn(child)
        self._thread.start()

    def pids(self) -> dict[str, int | None]:
        """The running process of each child (None while it waits to be restarted)."""
        with self._lock:
            return {c.name: c.process.pid if c.process else None for c in self._children}

    def status(self) -> dict[str, str]:
        """``{"worker:<name>": "ok" | "<why it is missing>"}`` for ``/readyz``."""
        now = time.monotonic()
        out: dict[str, str] = {}
        with self._lock:
            for c in self._children:
                if c.process is not None and c.process.poll() is None:
                    out[f"worker:{c.name}"] = "ok"
                elif c.process is not None:  # dead; the watching thread has not seen it yet
                    why = f"process {c.process.pid} {describe_exit(c.process.returncode)}"
                    out[f"worker:{c.name}"] = f"missing: {why}; restarting"
                else:
                    wait = max(0.0, (c.restart_at or now) - now)
                    out[f"worker:{c.name}"] = f"missing: {c.last_exit}; restarting in {wait:.0f} s"
        return out

    def stop(self, timeout: float = 30.0) -> None:
        """Stop watching, SIGTERM every child, SIGKILL those still alive after ``timeout``."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        running = [c.process for c in self._children if c.process and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _spawn(self, child: _Child) -> None:
        env = dict(self._env) if self._env is not None else None
        process = subprocess.Popen(child.argv, env=env, preexec_fn=self._preexec_fn)
        with self._lock:
            child.process, child.started_at, child.restart_at = process, time.monotonic(), None
            child.pids.append(process.pid)

    def _watch(self) -> None:
        while not self._stopped.wait(self._poll):
            for child in self._children:
                if child.process is not None and child.process.poll() is not None:
                    self._died(child)
                elif child.process is None and time.monotonic() >= (child.restart_at or 0.0):
                    log.warning("starting worker %r again", child.name)
                    self._spawn(child)

    def _died(self, child: _Child) -> None:
        assert child.process is not None
        pid, returncode = child.process.pid, child.process.returncode
        now = time.monotonic()
        ran = now - child.started_at
        child.quick_deaths = 0 if ran >= self._stable else child.quick_deaths + 1
        delay = min(self._max_backoff, self._backoff * 2 ** max(0, child.quick_deaths - 1))
        description = f"process {pid} {describe_exit(returncode)}"
        with self._lock:
            child.process, child.restart_at, child.last_exit = None, now + delay, description
        log.error(
            "worker %r (%s) after %.0f s; restarting in %.1f s", child.name, description, ran, delay
        )
        if self._on_exit is not None:
            try:
                self._on_exit(child.name, pid, description)
            except Exception:
                log.exception("handling the exit of worker %r failed", child.name)
