"""kd after minitron: the hidden-state loss pairs each student layer with the teacher layer
minitron kept, and a student of another hidden size is refused for that loss with a message
that says what to change, before any training step (issue 15, case 7)."""

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
from slimforge.compression.distill.kd import distill_logits
from slimforge.compression.pruning.importance import measure_importance
from slimforge.compression.pruning.layout import arch_of
from slimforge.compression.pruning.prune import prune_model
from slimforge.worker.runner import run_job
from slimforge.worker.stages import distill as distill_stage
from tests.compression.helpers import tiny_llama
from tests.worker.test_runner import submit

MINITRON = {"name": "minitron", "mlp_multiple": 1, "search_tokens": 128, "max_candidates": 2}
KD = {"tokens": 512, "batch_size": 2, "hidden_weight": 1.0, "learning_rate": 1e-3}


def test_the_hidden_state_loss_pairs_the_layers_minitron_kept(
    api: TestClient,
    auth,
    settings: Settings,
    tmp_path: Path,
    text_files,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    given: list[Any] = []
    real = distill_stage.run_distillation

    def spy(*args: Any, **kwargs: Any) -> Any:
        given.append(kwargs.get("layer_map"))
        return real(*args, **kwargs)

    monkeypatch.setattr(distill_stage, "run_distillation", spy)
    h = auth()
    model = save_tiny_llama(tmp_path / "tiny4", layers=4)
    method = {**MINITRON, "axes": ["depth", "mlp"], "shape": {"num_hidden_layers": 3}}
    job_id = submit(api, h, model, text_files, method=method, target={"ratio": 0.7}, distill=KD)
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "succeeded"
    kept = api.get(f"/v1/jobs/{job_id}", headers=h).json()["metrics"]["method_details"][
        "kept_layers"
    ]
    assert len(kept) == 3 and given == [kept]


def test_a_hidden_size_cut_refuses_the_hidden_state_loss_clearly(
    api: TestClient, auth, settings: Settings, tmp_path: Path, text_files
) -> None:
    h = auth()
    model = save_tiny_llama(tmp_path / "tiny4", layers=4)
    method = {**MINITRON, "axes": ["hidden", "mlp"], "hidden_multiple": 16}
    method["shape"] = {"hidden_size": 48}
    job_id = submit(api, h, model, text_files, method=method, target={"ratio": 0.7}, distill=KD)
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "failed"
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert job["stage"] == "distilling"
    assert "distill.hidden_weight" in job["error"] and "48" in job["error"]
    assert "64" in job["error"] and "size mismatch" not in job["error"]
    events = api.get(f"/v1/jobs/{job_id}/events?limit=1000", headers=h).json()["items"]
    assert not any(e["message"] == "distillation step" for e in events)


def test_distill_logits_refuses_hidden_pairs_of_different_widths() -> None:
    teacher = tiny_llama(0, 2).eval()
    student = tiny_llama(0, 2)
    blocks = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    importance = measure_importance(student, blocks)
    shape = replace(arch_of(student), hidden=48)
    prune_model(student, shape, importance, layers=[0, 1])
    config = KdConfig(tokens=64, batch_size=2, hidden_weight=1.0)
    with pytest.raises(ValueError, match=r"hidden size is 48 and the teacher's 64"):
        distill_logits(student, blocks, config, teacher=teacher)
    # Without the hidden-state loss the same pair distils (logits share the vocabulary).
    logits_only = config.model_copy(update={"hidden_weight": 0.0})
    result = distill_logits(student, blocks, logits_only, teacher=teacher)
    assert result.steps > 0
