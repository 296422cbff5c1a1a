"""What a job's stages share: the validated request, the settings and reporter, and what each
stage leaves for the next (the model, its token blocks, the method's result, the files)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from slimforge.app.jobs.models import Job
from slimforge.app.settings import Settings
from slimforge.compression import ArtifactFile, MethodConfig, MethodResult, RankPlan
from slimforge.contract.jobs import JobCreate
from slimforge.worker.kd import DistillPlan
from slimforge.worker.memory import PeakMemory
from slimforge.worker.reporter import JobReporter

__all__ = ["JobContext"]


@dataclass
class JobContext:
    """One attempt of one job. Built once from the stored request (``JobCreate``, validated
    again: the defaults are the contract's); the stages fill in the rest, in order.

    ``metrics`` is what the job stores; ``stored_metrics`` what an earlier attempt stored
    (a push already made, for instance).
    """

    settings: Settings
    job_id: str
    tenant_id: str
    request: JobCreate
    reporter: JobReporter
    device: str  # where the job computes: "cpu" or "cuda"
    max_params: int | None = None  # the tenant's model size quota
    stored_metrics: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=lambda: {"stage_seconds": {}})
    memory: PeakMemory | None = None
    stage_started: float = 0.0  # time.monotonic() when the current stage began
    # Filled in by the stages, in order.
    model: Any = None  # a transformers causal LM
    tokenizer: Any = None
    source_dtype: torch.dtype | None = None  # the checkpoint's own precision
    params_before: int = 0
    target_params: int = 0
    plan: RankPlan | None = None
    blocks: torch.Tensor | None = None  # calibration tokens [n, seq_len]
    eval_blocks: torch.Tensor | None = None  # evaluation tokens [n, seq_len]
    kd_plan: DistillPlan | None = None
    # A frozen copy of the original model, kept in CPU memory (see
    # slimforge.worker.kd.TEACHER_HOME) when
    # the evaluation compares teacher and student or kd trains on the fly.
    teacher: Any = None
    teacher_texts: list[str] | None = None  # the teacher's greedy continuations
    result: MethodResult | None = None
    gguf_types: list[str] = field(default_factory=list)  # GGUF files to write (loading decides)
    files: list[ArtifactFile] = field(default_factory=list)

    @classmethod
    def for_job(
        cls, job: Job, *, settings: Settings, reporter: JobReporter, device: str, **extra: Any
    ) -> JobContext:
        """The context of ``job`` (its stored request validated by the contract)."""
        return cls(
            settings=settings,
            job_id=job.id,
            tenant_id=job.tenant_id,
            request=JobCreate.model_validate(job.spec),
            reporter=reporter,
            device=device,
            stored_metrics=dict(job.metrics or {}),
            **extra,
        )

    @property
    def method(self) -> MethodConfig:
        return self.request.method

    @property
    def workdir(self) -> Path:
        """The job's scratch folder: checkpoints and the exported artifact, kept across
        attempts and removed when the job ends."""
        return self.settings.work_root / self.job_id

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per stage (``metrics.stage_seconds``), written by the runner's loop."""
        timings: dict[str, float] = self.metrics["stage_seconds"]
        return timings

    def stage_seconds(self) -> float:
        """Seconds since the current stage began."""
        return round(time.monotonic() - self.stage_started, 3)

    @property
    def hub_repo(self) -> str | None:
        return self.request.output.hub_repo if self.request.output else None
