"""One validated settings class for the API, the worker and the CLI.

Values come from environment variables prefixed ``SLIMFORGE_`` (or are passed in by tests).
Nothing reads settings at import time: ``Settings()`` is built by the entry points and passed
down explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Runtime configuration. Empty URLs are derived from ``home`` (the embedded mode)."""

    model_config = SettingsConfigDict(env_prefix="SLIMFORGE_", extra="ignore")

    home: Path = Field(
        default_factory=lambda: Path.home() / ".slimforge",
        description="Data folder of the embedded mode: database, broker queue, artifacts.",
    )
    database_url: str = Field(default="", description="SQLAlchemy URL; default SQLite in home.")
    broker_url: str = Field(
        default="", description="Celery broker URL; default a file-system queue in home."
    )
    artifact_dir: Path | None = Field(default=None, description="Local artifact store root.")
    cache_dir: Path | None = Field(
        default=None,
        description="Worker cache: calibration text sampled from a model, kept per model so a "
        "later job on the same model does not sample it again. Default: home/cache.",
    )
    artifact_store_url: str = Field(
        default="",
        description="'s3://bucket/prefix' to keep artifacts in S3-compatible storage (shared by "
        "API replicas and workers; credentials from the usual AWS_* variables); empty: the "
        "local folder artifact_dir.",
    )
    s3_endpoint_url: str = Field(default="", description="S3-compatible endpoint (MinIO …).")
    s3_region: str = Field(default="", description="S3 region, where the server needs one.")
    artifact_retention_days: float | None = Field(
        default=None,
        gt=0,
        description="Delete artifacts of jobs that ended more than this many days ago "
        "(the job record stays); unset: keep them until the job is deleted.",
    )
    local_roots: list[Path] | None = Field(
        default=None,
        description="Directories under which jobs may read local models and data. "
        "Relative paths in job bodies resolve against the first one. "
        "Default: the server's working directory and home.",
    )
    # Longest job we expect, in seconds: the Redis visibility timeout must exceed it so an
    # unacknowledged (acks_late) job is not redelivered while it still runs. The worker also
    # enforces it: a job that runs longer fails with a message naming this setting.
    max_job_seconds: int = Field(default=6 * 3600, ge=60)
    db_pool_size: int = Field(
        default=10,
        ge=1,
        description="Pooled connections per process. An API process serves at most pool size + "
        "overflow requests that use the database at once; the others wait their turn (503 with "
        "Retry-After after db_pool_timeout_seconds).",
    )
    db_max_overflow: int = Field(
        default=10,
        ge=0,
        description="Extra connections per process under load. Keep API processes x "
        "(pool size + overflow) under PostgreSQL's max_connections (100 by default).",
    )
    db_pool_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Wait for a pooled connection before answering 503."
    )
    resend_queued_after_seconds: int = Field(
        default=900,
        ge=10,
        description="A job queued this long with nothing happening gets its broker message "
        "sent again (a broker restarted without persistence may have lost it).",
    )
    lease_seconds: int = Field(
        default=120, ge=5, description="A running job's lease; renewed while it makes progress."
    )
    db_retry_seconds: float = Field(
        default=60,
        ge=0,
        description="How long a worker retries, with backoff, a running job's database reads "
        "and writes (events, progress, lease renewal, stage, final status) while the database "
        "is unreachable (a restart, a fail-over, dropped connections) before giving up on it "
        "as on any other error; 0 does not retry.",
    )
    kd_checkpoint_seconds: float = Field(
        default=600,
        ge=0,
        description="How often the kd stage saves its training state (parameters, optimiser, "
        "batch order) to the worker's scratch folder; a job whose worker died resumes it from "
        "the last save. 0: after every step.",
    )
    queue_name: str = "gpu"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    sse_poll_seconds: float = Field(default=0.5, gt=0)
    hub_endpoint: str = Field(
        default="https://huggingface.co",
        description="Hugging Face Hub (or a compatible server) that jobs push artifacts to.",
    )
    secret_key: str | None = Field(
        default=None,
        description="Key material for encrypting stored credentials. Unset: a random key in "
        "home/secret.key (one machine only; set the same value on the API and every worker).",
    )
    publish_attempts: int = Field(
        default=4, ge=1, le=20, description="Tries per Hub call on 5xx, 429 or network errors."
    )
    publish_backoff_seconds: float = Field(
        default=2.0, ge=0, description="First retry delay; doubles after each failed try."
    )
    webhook_allow_private_addresses: bool = Field(
        default=False,
        description="Let webhooks reach private, loopback and link-local addresses (on-prem "
        "receivers, tests). Off: such URLs are refused at submit and at delivery.",
    )
    webhook_retry_delays: list[float] = Field(
        default_factory=lambda: [10.0, 30.0, 120.0, 600.0],
        max_length=20,
        description="Seconds before each retry of a failed webhook delivery; attempts are "
        "one more than the delays.",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long one webhook delivery may take."
    )
    webhook_queue: str = Field(
        default="",
        description="Celery queue of webhook deliveries; empty: queue_name (a delivery then "
        "waits for the job worker to be free). Set it (e.g. 'webhooks') for the API and every "
        "worker, and run a delivery worker: `slimforge worker --webhooks` (`slimforge serve` "
        "starts one itself).",
    )
    webhook_concurrency: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Deliveries at once in a delivery worker (`slimforge worker --webhooks`).",
    )
    webhook_resend_after_seconds: int = Field(
        default=300,
        ge=10,
        description="A webhook attempt still pending this long after it was due gets its "
        "broker message sent again (a broker restarted without persistence may have lost "
        "it); the wait then doubles at each resend. Never sent twice: an attempt is only "
        "made while it is pending.",
    )
    quota_concurrent_jobs: int | None = Field(
        default=None,
        ge=1,
        description="Default per-tenant limit of jobs queued or running at once (429 beyond "
        "it); unset: unlimited. A tenant's own quota overrides it.",
    )
    quota_jobs_per_day: int | None = Field(
        default=None,
        ge=1,
        description="Default per-tenant limit of jobs submitted in any rolling 24 hours; "
        "unset: unlimited.",
    )
    quota_max_model_params: int | None = Field(
        default=None,
        ge=1,
        description="Default per-tenant limit of a job's model size in parameters (checked at "
        "submit for local checkpoints, by the worker after loading otherwise); unset: none.",
    )
    rate_limit_per_minute: int | None = Field(
        default=600,
        ge=0,
        description="Requests per minute per API key (per client address without a valid "
        "key): per API process, or across all of them with rate_limit_redis_url; 0 or unset: "
        "no limit.",
    )
    rate_limit_burst: int | None = Field(
        default=None,
        ge=1,
        description="Requests allowed at once above the steady rate; unset: a sixth of "
        "rate_limit_per_minute.",
    )
    rate_limit_redis_url: str | None = Field(
        default=None,
        description="Redis URL (e.g. redis://redis:6379/1) holding the rate-limit buckets, "
        "shared by every API process: the limit is then one figure across processes and "
        "machines. Unset: each API process keeps its own buckets in memory. While Redis is "
        "unreachable, requests are not limited (fail open; a warning is logged).",
    )
    max_request_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond)."
    )
    min_free_disk_bytes: int = Field(
        default=0,
        ge=0,
        description="Disk space to keep free in the scratch folder on top of the artifact's "
        "estimated size; a job that would leave less fails before exporting.",
    )
    metrics_enabled: bool = Field(
        default=True,
        description="Serve Prometheus metrics at GET /metrics (no authentication, like "
        "/healthz: keep it on the internal network).",
    )
    metrics_recent_jobs: int = Field(
        default=100,
        ge=1,
        le=10000,
        description="Ended jobs whose stage durations and peak memory /metrics summarises.",
    )
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        self.home = self.home.expanduser()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'slimforge.db'}"
        if not self.broker_url:
            self.broker_url = "filesystem://"
        if self.artifact_dir is None:
            self.artifact_dir = self.home / "artifacts"
        if self.cache_dir is None:
            self.cache_dir = self.home / "cache"
        if self.local_roots is None:
            self.local_roots = [Path.cwd(), self.home]
        self.local_roots = [p.expanduser().resolve() for p in self.local_roots]
        return self

    @property
    def broker_folder(self) -> Path:
        """Folder of the serverless file-system broker (embedded mode only)."""
        return self.home / "broker"

    @property
    def is_embedded_broker(self) -> bool:
        return self.broker_url.startswith("filesystem://")

    @property
    def work_root(self) -> Path:
        """Scratch folders of running jobs (checkpoints), kept across a job's attempts."""
        return self.home / "work"

    @property
    def cache_root(self) -> Path:
        """The worker's cache folder (``cache_dir``, home/cache by default)."""
        assert self.cache_dir is not None  # set by the validator
        return self.cache_dir

    @property
    def artifacts_root(self) -> Path:
        assert self.artifact_dir is not None  # set by the validator
        return self.artifact_dir

    def ensure_dirs(self) -> None:
        """Create the folders the embedded mode writes to."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.artifacts_root.mkdir(parents=True, exist_ok=True)
        if self.is_embedded_broker:
            for sub in ("queue", "processed", "control"):
                (self.broker_folder / sub).mkdir(parents=True, exist_ok=True)
