"""A job's stages as plain functions: testable without a broker, called by the Celery task.

load → calibrate → compress → evaluate → export → store. Every stage records its start in the
job's event log; compression code reports per-block progress through :class:`JobReporter`,
which also renews the job's lease and honours cancellation between blocks.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from collections.abc import Callable
from typing import Any, cast

import torch
from sqlalchemy.orm import Session, sessionmaker

from slimforge.app.artifacts.models import Artifact
from slimforge.app.artifacts.service import record_artifact
from slimforge.app.artifacts.storage import LocalArtifactStore, make_store
from slimforge.app.credentials.service import get_hub_token
from slimforge.app.db import session_scope
from slimforge.app.jobs import lifecycle
from slimforge.app.jobs.models import Job
from slimforge.app.limits.quotas import Quotas, effective_quotas, model_size_error
from slimforge.app.settings import Settings
from slimforge.compression import (
    Cancelled,
    UnreachableTargetError,
    compress,
    count_parameters,
    export_artifact,
    get_method,
    load_model,
    perplexity,
    render_model_card,
    resolve_target,
)
from slimforge.compression.configs import METHOD_CONFIGS, KdConfig, MethodConfig
from slimforge.compression.distill.kd_resume import KdCheckpoint
from slimforge.worker import job_rows, webhooks
from slimforge.worker.distill_stage import prepare_distillation, run_distillation
from slimforge.worker.job_spec import (
    base_license,
    describe_base,
    job_device,
    model_source,
    target_text,
    text_blocks,
)
from slimforge.worker.memory import OUT_OF_MEMORY, PeakMemory, is_out_of_memory, release_memory
from slimforge.worker.publish import PublishError, publish_artifact
from slimforge.worker.reporter import (
    JobReporter,
    JobTimeLimit,
    LeaseLost,
    ResourceLimit,
    default_owner,
)

__all__ = ["JobReporter", "JobTimeLimit", "LeaseLost", "ResourceLimit", "default_owner", "run_job"]

log = logging.getLogger("slimforge.worker")


def _check_disk_space(settings: Settings, model: torch.nn.Module) -> None:
    """Fail before exporting when the scratch folder cannot hold the artifact: the weights at
    their dtype plus 10 % headroom, and ``min_free_disk_bytes`` left over."""
    folder = settings.work_root
    folder.mkdir(parents=True, exist_ok=True)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    needed = int(weights * 1.1) + settings.min_free_disk_bytes
    free = shutil.disk_usage(folder).free
    if free < needed:
        reserve = (
            f", plus {settings.min_free_disk_bytes:,} to keep free (min_free_disk_bytes)"
            if settings.min_free_disk_bytes
            else ""
        )
        raise ResourceLimit(
            f"not enough disk space to export the artifact in {folder}: about {needed:,} bytes "
            f"needed (the weights plus 10 %{reserve}), {free:,} free; free some space or "
            "point SLIMFORGE_HOME to a larger disk"
        )


def _execute(
    *,
    settings: Settings,
    job_id: str,
    spec: dict[str, Any],
    reporter: JobReporter,
    max_params: int | None = None,
) -> dict[str, Any]:
    """Run every stage; returns the job's metrics. Raises Cancelled / errors to the caller."""
    metrics: dict[str, Any] = {"stage_seconds": {}}
    timings: dict[str, float] = metrics["stage_seconds"]
    device = job_device(settings)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    method_name = spec["method"]["name"]
    config = cast(MethodConfig, METHOD_CONFIGS[method_name].model_validate(spec["method"]))
    method = get_method(method_name)
    memory = PeakMemory(device=device)
    memory.start()
    try:
        # --- loading: the model, its size, and whether the target is reachable at all.
        t0 = time.monotonic()
        reporter.enter("loading")
        model, tokenizer = load_model(model_source(spec), dtype=dtype, device=device)
        params_before = count_parameters(model)
        if max_params is not None and params_before > max_params:
            raise ResourceLimit(model_size_error(params_before, max_params))
        target = spec["target"]
        target_params = resolve_target(
            params_before, params=target.get("params"), ratio=target.get("ratio")
        )
        plan = method.plan(model, config, target_params=target_params)
        reporter.event(
            "model loaded",
            data={
                "params": params_before,
                "target_params": target_params,
                "planned_params": plan.params_after,
                "device": device,
            },
        )
        timings["loading"] = round(time.monotonic() - t0, 3)

        # --- calibrating: tokenise the calibration (and evaluation) text; teacher baseline.
        t0 = time.monotonic()
        reporter.enter("calibrating")
        calib = spec["calibration"]
        blocks = text_blocks(model, tokenizer, calib, reporter=reporter)
        eval_blocks = None
        if spec.get("evaluation"):
            ev = spec["evaluation"]
            eval_blocks = text_blocks(model, tokenizer, ev)
            metrics["teacher_perplexity"] = perplexity(model, eval_blocks, reporter=reporter)
            metrics["evaluation_tokens"] = int(eval_blocks.numel())
            reporter.event("teacher perplexity", data={"perplexity": metrics["teacher_perplexity"]})
        reporter.event("calibration data ready", data={"tokens": int(blocks.numel())})
        kd_plan = None
        if spec.get("distill"):  # capture the teacher now, before the method changes the model
            kd_config = KdConfig.model_validate(spec["distill"])
            kd_blocks = text_blocks(
                model, tokenizer, calib, max_tokens=kd_config.tokens, seed=1, reporter=reporter
            )
            kd_plan = prepare_distillation(model, config=kd_config, blocks=kd_blocks)
        timings["calibrating"] = round(time.monotonic() - t0, 3)

        # --- compressing
        t0 = time.monotonic()
        reporter.enter("compressing")
        # A method that streams layers gets the model in CPU memory and the accelerator as its
        # compute device: GPU memory then holds one layer and its activations, not the model.
        streaming = method.streams_layers and device != "cpu"
        if streaming:
            model.to("cpu")
            memory.begin_stage()
        result = compress(
            model,
            config,
            blocks=blocks,
            target_params=target_params,
            reporter=reporter,
            workdir=settings.work_root / job_id,
            device=device if streaming else None,
        )
        if streaming:
            metrics["peak_gpu_bytes_compressing"] = memory.stage_gpu_bytes()
            model.to(device)
        params_after = count_parameters(model)
        metrics.update(
            params_before=params_before,
            params_after=params_after,
            target_params=target_params,
            achieved_ratio=round(params_after / params_before, 6),
            target_error=round(params_after / target_params - 1.0, 6),
            tokens_used=result.tokens_used,
            ranks=result.ranks,
            method_details=result.details,
        )
        timings["compressing"] = round(time.monotonic() - t0, 3)

        # --- distilling (optional): logit KD from the original model into the student.
        if kd_plan is not None:
            t0 = time.monotonic()
            reporter.enter("distilling")
            metrics.update(
                run_distillation(
                    model,
                    kd_plan,
                    reporter=reporter,
                    eval_blocks=eval_blocks,
                    # Saved as it trains: a job killed mid-stage goes on from the last save.
                    checkpoint=KdCheckpoint(
                        settings.work_root / job_id / "kd",
                        every_seconds=settings.kd_checkpoint_seconds,
                    ),
                )
            )
            timings["distilling"] = round(time.monotonic() - t0, 3)

        # --- evaluating
        t0 = time.monotonic()
        reporter.enter("evaluating")
        if eval_blocks is not None:
            metrics["student_perplexity"] = perplexity(model, eval_blocks, reporter=reporter)
            metrics["perplexity_ratio"] = (
                metrics["student_perplexity"] / metrics["teacher_perplexity"]
            )
            reporter.event(
                "student perplexity",
                data={
                    "perplexity": metrics["student_perplexity"],
                    "ratio": metrics["perplexity_ratio"],
                },
            )
        else:
            reporter.event("no evaluation data given; perplexity not measured")
        timings["evaluating"] = round(time.monotonic() - t0, 3)
        metrics.update(memory.snapshot())

        # --- exporting: a Hugging Face folder in the job's scratch space (atomic rename).
        t0 = time.monotonic()
        reporter.enter("exporting")
        _check_disk_space(settings, model)
        dest = settings.work_root / job_id / "artifact"
        if dest.exists():  # a previous attempt died after exporting: start clean
            shutil.rmtree(dest)
        card = render_model_card(
            base_model=describe_base(spec),
            method=method_name + (" + kd" if kd_plan is not None else ""),
            target=target_text(target),
            params_before=params_before,
            params_after=params_after,
            metrics=metrics,
            ranks=result.ranks or None,
            job_parameters={"job_id": job_id, **spec},
            license=base_license(spec),
            repo_id=(spec.get("output") or {}).get("hub_repo"),
        )
        files = export_artifact(
            model.to("cpu"),
            tokenizer,
            dest,
            model_card=card,
            lowrank_ranks=result.ranks or None,
            metadata={"job_id": job_id, "method": method_name, "metrics": metrics},
        )
        metrics["artifact_bytes"] = sum(f.size for f in files)
        timings["exporting"] = round(time.monotonic() - t0, 3)

        # --- storing: into the artifact store (local folder or S3), then the manifest.
        t0 = time.monotonic()
        reporter.enter("storing")
        location = make_store(settings).put_folder(job_id, dest)
        timings["storing"] = 0.0
        metrics.update(memory.snapshot())

        def store_manifest(_attempt: int) -> None:
            # Safe to repeat: record_artifact replaces the manifest, merge_metrics the same keys.
            with session_scope(reporter.factory) as session:
                record_artifact(
                    session,
                    job_id=job_id,
                    location=location,
                    files=[{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files],
                )
                timings["storing"] = round(time.monotonic() - t0, 3)
                # One commit with the manifest: a stored artifact always has its metrics, and a
                # restarted job that finds it goes straight to publishing.
                lifecycle.merge_metrics(session, job_id=job_id, metrics=metrics)

        reporter.db_retry(store_manifest, what="artifact manifest")
        return metrics
    finally:
        memory.stop()


def _publish(*, settings: Settings, job: Job, reporter: JobReporter) -> None:
    """The ``publishing`` stage: push the stored artifact to ``output.hub_repo``."""
    reporter.enter("publishing")
    output = job.spec["output"]

    def read_token(_attempt: int) -> str | None:
        with session_scope(reporter.factory) as session:
            try:
                return get_hub_token(session, tenant_id=job.tenant_id, settings=settings)
            except ValueError as exc:  # a credential encrypted with another key
                raise PublishError(str(exc)) from None

    token = reporter.db_retry(read_token, what="hub token")
    if token is None:
        raise PublishError("no Hugging Face token is set: PUT /v1/credentials/hub")
    message = output.get("commit_message") or f"slimforge: {job.method} (job {job.id})"
    store = make_store(settings)

    def read_manifest(_attempt: int) -> tuple[str, list[dict[str, Any]]]:
        with session_scope(reporter.factory) as session:
            artifact = session.get(Artifact, job.id)
            assert artifact is not None  # stored before publishing
            return artifact.location, list(artifact.files)

    location, files = reporter.db_retry(read_manifest, what="artifact manifest")
    if isinstance(store, LocalArtifactStore):
        folder = store.job_dir(location)
    else:  # fetch it (checking every sha256) to push from a folder
        folder = settings.work_root / job.id / "publish"
        shutil.rmtree(folder, ignore_errors=True)
        store.download(location, files, folder)
    hub = publish_artifact(
        folder=folder,
        output=output,
        token=token,
        endpoint=settings.hub_endpoint,
        commit_message=message,
        reporter=reporter,
        attempts=settings.publish_attempts,
        backoff=settings.publish_backoff_seconds,
    )

    def record_push(_attempt: int) -> None:
        with session_scope(reporter.factory) as session:  # safe to repeat: the same key
            lifecycle.merge_metrics(session, job_id=job.id, metrics={"hub": hub})

    reporter.db_retry(record_push, what="hub metrics")


def run_job(
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    job_id: str,
    owner: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> str | None:
    """Run a job if this worker wins its lease; returns its final status, None if skipped.

    Safe to call for a redelivered message: a job running elsewhere or already ended is left
    alone. A cancelled job's partial artifact is removed; a failure records a clear error.
    """
    owner = owner or default_owner()

    job = job_rows.claim_job(
        session_factory=session_factory,
        job_id=job_id,
        owner=owner,
        lease_seconds=settings.lease_seconds,
        retry_seconds=settings.db_retry_seconds,
    )
    if job is None:
        log.info("job %s is not runnable here (running elsewhere, ended or unknown)", job_id)
        return None
    if job.attempts == 1:  # a resumed job (worker lost, publish retried) did not start anew
        webhooks.emit(
            settings=settings, session_factory=session_factory, job_id=job_id, event="job.started"
        )
    reporter = JobReporter(
        session_factory,
        job_id,
        owner,
        settings.lease_seconds,
        time_limit=settings.max_job_seconds,
        clock=clock,
        db_retry_seconds=settings.db_retry_seconds,
    )
    reporter.start_heartbeat()
    status, error, out_of_memory = "succeeded", None, False
    try:

        def read_state(_attempt: int) -> tuple[bool, Quotas]:
            with session_factory() as session:
                stored = session.get(Artifact, job_id) is not None
                return stored, effective_quotas(session, tenant_id=job.tenant_id, settings=settings)

        stored, quotas = reporter.db_retry(read_state, what="artifact and quotas")
        if stored:  # an earlier attempt got as far as storing: only publishing is left
            reporter.event("artifact already stored; continuing from there")
        else:
            _execute(
                settings=settings,
                job_id=job_id,
                spec=job.spec,
                reporter=reporter,
                max_params=quotas.max_model_params,
            )
        if (job.spec.get("output") or {}).get("hub_repo"):
            if (job.metrics or {}).get("hub"):  # pushed before the worker died: not twice
                reporter.event("already pushed to the Hub", data=job.metrics["hub"])
            else:
                _publish(settings=settings, job=job, reporter=reporter)
    except PublishError as exc:
        status, error = (
            "failed",
            f"{exc}. The artifact is kept: POST /v1/jobs/{job_id}/publish retries the push.",
        )
    except LeaseLost:
        log.warning("job %s: lease lost to another worker; stopping", job_id)
        return None
    except (JobTimeLimit, ResourceLimit) as exc:
        status, error = "failed", str(exc)
    except Cancelled:
        status = "cancelled"  # nothing was stored: partial work lives in the scratch folder
    except UnreachableTargetError as exc:
        status, error = "failed", str(exc)
    except (FileNotFoundError, ValueError) as exc:
        status, error = "failed", str(exc)
    except Exception as exc:
        out_of_memory = is_out_of_memory(exc)  # CUDA's OutOfMemoryError or the CPU allocator's
        if out_of_memory:
            log.error("job %s ran out of memory: %s", job_id, exc)
            status, error = "failed", OUT_OF_MEMORY
        else:
            log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            status, error = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        reporter.stop_heartbeat()
    if out_of_memory:
        release_memory()  # the frames that held the model are gone now
    ended = job_rows.finish_job(
        session_factory=session_factory,
        job_id=job_id,
        owner=owner,
        status=status,
        error=error,
        retry_seconds=settings.db_retry_seconds,
    )
    if ended:
        webhooks.emit(
            settings=settings, session_factory=session_factory, job_id=job_id, event=f"job.{status}"
        )
    # Checkpoints only serve a restart of an unfinished job.
    shutil.rmtree(settings.work_root / job_id, ignore_errors=True)
    return status
