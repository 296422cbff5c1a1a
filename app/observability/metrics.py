"""Prometheus metrics of one API app, in a registry of its own (tests build many apps).

HTTP metrics are observed by the request middleware. Job metrics are read from the database at
scrape time by :class:`JobsCollector`, so they are right whichever process ran the jobs, with any
broker and any number of API replicas (each replica reports the same values: aggregate them
with ``max``, not ``sum``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from slimforge.app.jobs.models import Job
from slimforge.contract.jobs import TERMINAL_STATUSES

__all__ = ["JOB_STATUSES", "UNMATCHED_ROUTE", "JobsCollector", "Metrics"]

log = logging.getLogger("slimforge.metrics")

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
# Label of requests that matched no route: raw paths would make one series per URL.
UNMATCHED_ROUTE = "<unmatched>"
QUANTILES = (0.5, 0.9, 1.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of a non-empty sorted list (q=1: the maximum)."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class JobsCollector(Collector):
    """Jobs by status, queue depth, and stage durations and peak memory of recent jobs.

    Two queries per scrape: one ``GROUP BY status`` and the ``metrics`` column of the last
    ``recent_jobs`` ended jobs. Workers cannot be scraped through the API, so their GPU memory
    is what the jobs recorded (``peak_gpu_bytes``), not a live reading.
    """

    def __init__(self, session_factory: sessionmaker[Session], *, recent_jobs: int) -> None:
        self.session_factory = session_factory
        self.recent_jobs = recent_jobs

    def describe(self) -> Iterable[Metric]:
        return []  # no query at registration; names are not checked against other collectors

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "slimforge_metrics_database_up",
            "1 when the job metrics below could be read from the database at this scrape.",
        )
        try:
            with self.session_factory() as session:
                counts: dict[str, int] = {
                    status: int(n)
                    for status, n in session.execute(
                        select(Job.status, func.count()).group_by(Job.status)
                    ).all()
                }
                recent = list(
                    session.scalars(
                        select(Job.metrics)
                        .where(Job.status.in_(sorted(TERMINAL_STATUSES)))
                        .order_by(Job.seq.desc())
                        .limit(self.recent_jobs)
                    )
                )
        except Exception as exc:  # a scrape must not fail because the database is down
            log.warning("job metrics unavailable: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from self._counts(counts)
        yield from self._recent([m for m in recent if isinstance(m, dict)])

    def _counts(self, counts: dict[str, int]) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "slimforge_jobs", "Jobs in the database by status.", labels=["status"]
        )
        for status in sorted(set(JOB_STATUSES) | set(counts)):
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        yield GaugeMetricFamily(
            "slimforge_queue_depth",
            "Jobs waiting for a worker (status queued), from the database: any broker.",
            value=counts.get("queued", 0),
        )

    def _recent(self, recent: list[dict[str, Any]]) -> Iterator[Metric]:
        # ``recent`` is newest first.
        window = GaugeMetricFamily(
            "slimforge_recent_jobs", "Ended jobs the recent_job metrics are computed over."
        )
        window.add_metric([], len(recent))
        yield window

        stages: dict[str, list[float]] = {}
        for metrics in recent:
            timings = metrics.get("stage_seconds")
            if isinstance(timings, dict):
                for stage, seconds in timings.items():
                    if isinstance(seconds, int | float):
                        stages.setdefault(str(stage), []).append(float(seconds))
        durations = GaugeMetricFamily(
            "slimforge_recent_job_stage_seconds",
            "Stage durations of recent ended jobs (worker timings): quantile 0.5, 0.9 and 1 (max).",
            labels=["stage", "quantile"],
        )
        samples = GaugeMetricFamily(
            "slimforge_recent_job_stage_samples",
            "Recent ended jobs that recorded a duration for the stage.",
            labels=["stage"],
        )
        for stage, values in sorted(stages.items()):
            values.sort()
            for q in QUANTILES:
                durations.add_metric([stage, str(q)], _quantile(values, q))
            samples.add_metric([stage], len(values))
        yield durations
        yield samples

        for key, name, what in (
            ("peak_gpu_bytes", "slimforge_recent_job_peak_gpu_bytes", "GPU memory"),
            ("peak_rss_bytes", "slimforge_recent_job_peak_rss_bytes", "resident memory"),
        ):
            values = [
                int(m[key]) for m in recent if isinstance(m.get(key), int | float) and m[key] >= 0
            ]
            gauge = GaugeMetricFamily(
                name,
                f"Peak worker {what} recorded by recent ended jobs: the newest job's ('last') "
                "and the largest ('max'). Jobs report it; workers are not scraped.",
                labels=["stat"],
            )
            if values:
                gauge.add_metric(["last"], values[0])
                gauge.add_metric(["max"], max(values))
            yield gauge


class Metrics:
    """The registry of one app with its HTTP metrics and the jobs collector."""

    def __init__(self, session_factory: sessionmaker[Session], *, recent_jobs: int = 100) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "slimforge_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "slimforge_http_request_duration_seconds",
            "Time from the request to the end of the response body, by route template "
            "(event streams count until they close).",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(JobsCollector(session_factory, recent_jobs=recent_jobs))

    def observe_request(self, *, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
