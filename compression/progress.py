"""Progress reporting and cooperative cancellation for long compression runs.

The worker passes a :class:`Reporter` that stores events and reads the job's cancellation flag;
library users and tests pass :class:`NullReporter`. This module imports no torch.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Cancelled", "NullReporter", "RecordingReporter", "Reporter"]


class Cancelled(Exception):
    """Raised by :meth:`Reporter.check_cancelled` when the job was cancelled."""


@runtime_checkable
class Reporter(Protocol):
    """What the compression code needs from its caller to report progress."""

    def event(
        self, message: str, *, level: str = "info", data: dict[str, Any] | None = None
    ) -> None:
        """Record one progress event (at most about one per block / batch)."""
        ...

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if the job was cancelled; called between units of work."""
        ...


class NullReporter:
    """A reporter that records nothing and is never cancelled."""

    def event(
        self, message: str, *, level: str = "info", data: dict[str, Any] | None = None
    ) -> None:
        """Ignore the event."""

    def check_cancelled(self) -> None:
        """Never cancelled."""


class RecordingReporter:
    """Keeps events in memory; cancels itself after ``cancel_after`` checks (tests, notebooks)."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.checks = 0
        self.cancel_after = cancel_after

    def event(
        self, message: str, *, level: str = "info", data: dict[str, Any] | None = None
    ) -> None:
        """Append ``(level, message, data)`` to :attr:`events`."""
        self.events.append((level, message, dict(data or {})))

    def check_cancelled(self) -> None:
        """Count the check and raise :class:`Cancelled` once the budget is used up."""
        self.checks += 1
        if self.cancel_after is not None and self.checks > self.cancel_after:
            raise Cancelled(f"cancelled after {self.cancel_after} checks")
