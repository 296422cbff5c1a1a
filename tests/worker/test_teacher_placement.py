"""kd's teacher copy waits where the student's compute is not (CPU memory) while the method
runs, so a streaming method's "the GPU holds one layer" holds with kd too (issue 15, case 11).
No GPU here: the placement is checked with the meta device standing in for the place asked
for, and on a real job by looking where the teacher is while the method runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from bench.tiny import save_tiny_llama
from slimforge.app.settings import Settings
from slimforge.compression.configs import KdConfig
from slimforge.worker import runner
from slimforge.worker.kd import TEACHER_HOME, prepare_distillation
from slimforge.worker.runner import run_job
from slimforge.worker.stages import compress as compress_stage
from tests.compression.helpers import tiny_llama
from tests.worker.test_runner import submit


def test_the_teacher_copy_goes_to_its_home_and_the_model_stays() -> None:
    model = tiny_llama(0, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    blocks = torch.randint(0, 256, (2, 8))
    plan = prepare_distillation(model, config=KdConfig(tokens=64), blocks=blocks, home="meta")
    assert plan.teacher is not None
    assert {p.device.type for p in plan.teacher.parameters()} == {"meta"}
    assert not any(p.requires_grad for p in plan.teacher.parameters())
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the round trip kept it


def test_while_lillama_runs_the_teacher_waits_in_cpu_memory(
    api: TestClient,
    auth,
    settings: Settings,
    tmp_path: Path,
    text_files,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict[str, Any]] = []
    real = compress_stage.compress

    def spy(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        ctx_teacher = spy.ctx.kd_plan.teacher  # type: ignore[attr-defined]
        seen.append(
            {
                "teacher": {p.device.type for p in ctx_teacher.parameters()},
                "shared": {p.data_ptr() for p in ctx_teacher.parameters()}
                & {p.data_ptr() for p in model.parameters()},
            }
        )
        return real(model, *args, **kwargs)

    real_run = compress_stage.run

    def run_with_ctx(ctx: Any) -> None:
        spy.ctx = ctx  # type: ignore[attr-defined]
        real_run(ctx)

    monkeypatch.setattr(compress_stage, "compress", spy)
    monkeypatch.setattr(
        runner,
        "STAGES",
        tuple(
            replace(s, run=run_with_ctx) if s.name == "compressing" else s for s in runner.STAGES
        ),
    )
    h = auth()
    method = {"name": "lillama", "max_steps_per_block": 2, "batch_size": 4}
    job_id = submit(
        api, h, save_tiny_llama(tmp_path / "tiny"), text_files, method=method,
        distill={"tokens": 256, "batch_size": 2},
    )  # fmt: skip
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "succeeded"
    assert seen == [{"teacher": {TEACHER_HOME}, "shared": set()}]
