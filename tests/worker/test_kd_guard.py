"""kd's guard: the stage never hands back a student further from the teacher, on held-back kd
text, than the one it received (measured need: kd at lr 2e-4 pushed low-rank SmolLM2 students
away from the teacher, docs/BENCHMARKS.md)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from slimforge.compression.configs import KdConfig
from slimforge.compression.distill.guard import guard_kl, split_guard
from slimforge.compression.distill.kd import trainable_parameters
from slimforge.compression.evaluation import fidelity
from slimforge.compression.progress import RecordingReporter
from slimforge.worker import kd as kd_module
from slimforge.worker.kd import prepare_distillation, run_distillation
from tests.compression.helpers import correlated_blocks, tiny_llama


def _student(teacher: torch.nn.Module) -> torch.nn.Module:
    """The teacher with noise on every weight: a student kd can bring closer."""
    student = copy.deepcopy(teacher)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    return student


def _run(lr: float, guard: bool = True) -> tuple[torch.nn.Module, torch.nn.Module, dict, list]:
    teacher = tiny_llama(0, 2).eval()
    blocks = correlated_blocks(16, 16)
    student = _student(teacher)
    config = KdConfig(tokens=16 * 16 * 2, learning_rate=lr, batch_size=4, guard=guard)
    plan = prepare_distillation(teacher, config=config, blocks=blocks)
    reporter = RecordingReporter()
    metrics = run_distillation(student, plan, reporter=reporter, eval_blocks=None)
    return teacher, student, metrics["distill"], reporter.events


def test_blocks_are_held_back_from_four_on() -> None:
    for n, held in ((3, 0), (4, 1), (16, 1), (17, 2), (64, 4)):
        train, back = split_guard(torch.zeros(n, 8, dtype=torch.long))
        assert (0 if back is None else back.shape[0]) == held
        assert train.shape[0] == n - held


def test_a_diverging_kd_is_undone_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    real = kd_module.distill_logits

    def diverging(student: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        """The real stage, then a step that wrecks the weights it trains (what too high a
        rate does)."""
        result = real(student, *args, **kwargs)
        with torch.no_grad():
            for p in trainable_parameters(student, train_embeddings=False):
                p.mul_(1.5)
        return result

    monkeypatch.setattr(kd_module, "distill_logits", diverging)
    teacher = tiny_llama(0, 2).eval()
    blocks = correlated_blocks(16, 16)
    received = _student(teacher)
    expected = {k: v.clone() for k, v in received.state_dict().items()}
    config = KdConfig(tokens=512, learning_rate=1e-3, batch_size=4)
    plan = prepare_distillation(teacher, config=config, blocks=blocks)
    reporter = RecordingReporter()
    out = run_distillation(received, plan, reporter=reporter, eval_blocks=None)["distill"]
    guard = out["guard"]
    assert guard["kept"] == "before" and guard["kl_after"] > guard["kl_before"], guard
    assert guard["tokens"] == 16 and out["distinct_tokens"] == 15 * 16
    for k, v in received.state_dict().items():  # exactly the weights it received
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0)
    warnings = [m for level, m, _ in reporter.events if level == "warning"]
    assert any("distill.learning_rate" in m for m in warnings), warnings
    # the KL the guard reports is the reference fidelity's on the held-back block
    reference = fidelity(teacher, received, blocks[-1:], n_resamples=1).kl_per_token
    assert guard["kl_before"] == reference


def test_a_helpful_kd_is_kept() -> None:
    teacher, student, out, events = _run(lr=1e-3)
    guard = out["guard"]
    assert guard["kept"] == "distilled" and guard["kl_after"] < guard["kl_before"], guard
    assert guard_kl(teacher, student, correlated_blocks(16, 16)[-1:]) == guard["kl_after"]
    assert not [e for e in events if e[0] == "warning"]


def test_without_the_guard_every_block_trains_and_nothing_is_checked() -> None:
    _, _, out, events = _run(lr=1e-3, guard=False)
    assert out["guard"] is None and out["distinct_tokens"] == 16 * 16
    assert not [e for e in events if "held-back" in e[1]]


def test_a_kd_whose_loss_stops_being_finite_leaves_the_student_as_it_came(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = kd_module.distill_logits

    def blows_up(student: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        real(student, *args, **kwargs)  # the weights have moved when the loss goes non-finite
        raise FloatingPointError("the distillation loss is not finite at step 3")

    monkeypatch.setattr(kd_module, "distill_logits", blows_up)
    teacher = tiny_llama(0, 2).eval()
    received = _student(teacher)
    expected = {k: v.clone() for k, v in received.state_dict().items()}
    plan = prepare_distillation(
        teacher, config=KdConfig(tokens=512), blocks=correlated_blocks(8, 16)
    )
    reporter = RecordingReporter()
    out = run_distillation(received, plan, reporter=reporter, eval_blocks=None)["distill"]
    assert out["diverged"].endswith("step 3") and out["guard"]["kept"] == "before"
    for k, v in received.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0)
    assert any(lvl == "warning" and "diverged" in m for lvl, m, _ in reporter.events)
    assert plan.teacher is None
    # without the guard there is nothing to go back to: the error is the job's
    plan = prepare_distillation(
        teacher, config=KdConfig(tokens=512, guard=False), blocks=correlated_blocks(8, 16)
    )
    with pytest.raises(FloatingPointError):
        run_distillation(received, plan, reporter=reporter, eval_blocks=None)


def test_the_snapshot_copies_only_what_kd_trains() -> None:
    model = tiny_llama(0, 2)
    frozen = {"model.embed_tokens.weight"}
    assert (
        set(kd_module._snapshot(model, train_embeddings=False))
        == {name for name, _ in model.named_parameters()} - frozen
    )
    assert frozen <= set(kd_module._snapshot(model, train_embeddings=True))
