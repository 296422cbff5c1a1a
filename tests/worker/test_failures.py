"""The runner's one table from what a stage raises to how the job ends: the most specific
class of the exception decides."""

from __future__ import annotations

import pytest

from slimforge.app.artifacts.storage import ChecksumMismatch
from slimforge.compression import Cancelled
from slimforge.compression.loading import RemoteCodeRequired
from slimforge.worker.memory import OUT_OF_MEMORY
from slimforge.worker.publish import PublishError
from slimforge.worker.reporter import JobTimeLimit, LeaseLost, ResourceLimit
from slimforge.worker.runner import Outcome, _outcome


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (Cancelled("cancelled on request"), Outcome("cancelled")),
        (LeaseLost("j1"), Outcome(None)),
        (ResourceLimit("disk"), Outcome("failed", "disk")),
        (JobTimeLimit("slow"), Outcome("failed", "slow")),
        (FileNotFoundError("no file"), Outcome("failed", "no file")),
        (RemoteCodeRequired("set it"), Outcome("failed", "set it")),  # a ValueError
        (RuntimeError("can't allocate memory"), Outcome("failed", OUT_OF_MEMORY)),
        (KeyError("x"), Outcome("failed", "KeyError: 'x'")),
    ],
)
def test_each_exception_ends_the_job_as_the_table_says(exc: Exception, expected: Outcome) -> None:
    assert _outcome(exc, "j1") == expected


def test_publishing_failures_say_what_happens_to_the_artifact() -> None:
    pushed = _outcome(PublishError("the Hub refused the token (401)"), "j1")
    assert pushed.status == "failed" and "POST /v1/jobs/j1/publish retries" in str(pushed.error)
    damaged = _outcome(ChecksumMismatch("artifact file 'a' does not match its sha256"), "j1")
    assert damaged.status == "failed" and "nothing was pushed" in str(damaged.error)
