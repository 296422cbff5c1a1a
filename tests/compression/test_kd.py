"""The ``kd`` stage: loss maths against written-out references, and training on tiny models."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from pydantic import ValidationError

from slimforge.compression import compress
from slimforge.compression.configs import KdConfig, SvdConfig
from slimforge.compression.distill.kd import (
    _layer_map,
    _lr_at,
    distill_logits,
    hidden_cosine_loss,
    kd_loss,
    teacher_topk,
    topk_kd_loss,
)
from slimforge.compression.lowrank import count_parameters
from slimforge.compression.planning import resolve_target
from slimforge.compression.progress import Cancelled, RecordingReporter
from tests.compression.helpers import correlated_blocks, tiny_llama


def reference_kl(s: torch.Tensor, t: torch.Tensor, temp: float, mask: torch.Tensor | None) -> float:
    """sum_v p_t(v) log(p_t(v)/p_s(v)) per token in float64 with explicit loops over tokens."""
    s, t = s.double().reshape(-1, s.shape[-1]), t.double().reshape(-1, t.shape[-1])
    m = torch.ones(s.shape[0], dtype=torch.float64) if mask is None else mask.double().reshape(-1)
    total = 0.0
    for i in range(s.shape[0]):
        p_t = torch.exp(t[i] / temp) / torch.exp(t[i] / temp).sum()
        p_s = torch.exp(s[i] / temp) / torch.exp(s[i] / temp).sum()
        total += float(m[i] * (p_t * (p_t / p_s).log()).sum())
    return total / float(m.sum()) * temp**2


@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_kd_loss_matches_reference(temp: float) -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    for m in (None, mask):
        got = float(kd_loss(s, t, temperature=temp, mask=m))
        assert got == pytest.approx(reference_kl(s, t, temp, m), rel=1e-5)
    # Agrees with torch's own KL (batchmean over tokens) and is zero for equal logits.
    flat_s, flat_t = s.reshape(-1, 11), t.reshape(-1, 11)
    torch_kl = torch.nn.functional.kl_div(
        torch.log_softmax(flat_s / temp, -1),
        torch.log_softmax(flat_t / temp, -1),
        log_target=True,
        reduction="batchmean",
    )
    assert float(kd_loss(s, t, temperature=temp)) == pytest.approx(
        float(torch_kl) * temp**2, rel=1e-5
    )
    assert float(kd_loss(t, t, temperature=temp)) == pytest.approx(0.0, abs=1e-6)


def test_topk_loss_equals_full_kl_when_k_is_the_vocabulary_and_bounds_it_otherwise() -> None:
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(3, 4, 13, generator=g), torch.randn(3, 4, 13, generator=g) * 3
    top = t.topk(13, dim=-1)
    full = float(kd_loss(s, t))
    assert float(topk_kd_loss(s, top.values, top.indices)) == pytest.approx(full, rel=1e-5)
    # With k < vocab the teacher is renormalised over its top tokens; a student that copies the
    # teacher exactly still pays for the mass it puts outside them, and one that puts all its
    # mass there in the right proportions pays nothing.
    top3 = t.topk(3, dim=-1)
    assert float(topk_kd_loss(t, top3.values, top3.indices)) > 0
    sharp = torch.full_like(t, -1e4).scatter(-1, top3.indices, top3.values)
    assert float(topk_kd_loss(sharp, top3.values, top3.indices)) == pytest.approx(0.0, abs=1e-5)


def test_hidden_cosine_loss() -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.randn(2, 3, 8, generator=g)
    assert float(hidden_cosine_loss([a], [2.5 * a])) == pytest.approx(0.0, abs=1e-6)
    assert float(hidden_cosine_loss([a], [-a])) == pytest.approx(2.0, abs=1e-6)
    b = torch.randn(2, 3, 8, generator=g)
    expected = 1 - torch.nn.functional.cosine_similarity(a, b, dim=-1).mean()
    both = hidden_cosine_loss([a, a], [b, -a])
    assert float(both) == pytest.approx((float(expected) + 2.0) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="pair up"):
        hidden_cosine_loss([a], [])


def test_layer_map_and_schedule() -> None:
    assert _layer_map(4, 4, None) == [0, 1, 2, 3]
    assert _layer_map(2, 4, None) == [1, 3]  # the last student layer pairs with the last
    assert _layer_map(3, 5, [0, 1, 4]) == [0, 1, 4]
    with pytest.raises(ValueError):
        _layer_map(2, 4, [0, 9])
    lrs = [_lr_at(i, 10, 1.0, 2) for i in range(10)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[-1] > 0.1 and all(a >= b for a, b in itertools.pairwise(lrs[1:]))


def test_config_rejects_hidden_loss_with_topk_cache() -> None:
    with pytest.raises(ValidationError, match="hidden_weight"):
        KdConfig(top_k=8, hidden_weight=1.0)
    with pytest.raises(ValidationError):
        KdConfig(tokens=100, unknown=1)  # type: ignore[call-arg]


def _student_and_teacher() -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    """A tiny Llama compressed by svd to -20 % (the student) and its original (the teacher)."""
    teacher = tiny_llama(seed=3)
    with torch.no_grad():  # random init gives near-uniform logits: make them peaked
        for p in teacher.parameters():
            p.mul_(8.0 if p.dim() > 1 else 1.0)
    student = copy.deepcopy(teacher)
    blocks = correlated_blocks(16, 32, seed=3)
    target = resolve_target(count_parameters(student), ratio=0.8)
    compress(student, SvdConfig(), blocks=blocks, target_params=target)
    return student, teacher, blocks


@torch.no_grad()
def _kl(student: torch.nn.Module, teacher: torch.nn.Module, blocks: torch.Tensor) -> float:
    return float(kd_loss(student(input_ids=blocks).logits, teacher(input_ids=blocks).logits))


@pytest.mark.parametrize("mode", ["teacher", "topk", "hidden"])
def test_distillation_brings_the_student_closer_to_the_teacher(mode: str) -> None:
    student, teacher, blocks = _student_and_teacher()
    before = _kl(student, teacher, blocks)
    params_before = count_parameters(student)
    kwargs: dict[str, object] = {"tokens": 16 * 32 * 6, "learning_rate": 3e-3, "batch_size": 4}
    if mode == "topk":
        kwargs["top_k"] = 64
    if mode == "hidden":
        kwargs["hidden_weight"] = 0.5
    config = KdConfig.model_validate(kwargs)
    reporter = RecordingReporter()
    emb_before = student.get_input_embeddings().weight.clone()
    if mode == "topk":
        cache = teacher_topk(teacher, blocks, k=64)
        assert cache.values.dtype == torch.bfloat16 and cache.indices.shape == (16, 32, 64)
        result = distill_logits(student, blocks, config, teacher_cache=cache, reporter=reporter)
    else:
        result = distill_logits(student, blocks, config, teacher=teacher, reporter=reporter)
    after = _kl(student, teacher, blocks)
    assert after < 0.7 * before, (before, after)
    assert result.steps == 24 and result.tokens == 16 * 32 * 6
    assert math.isfinite(result.loss_last) and result.loss_last < result.loss_first
    # The embeddings (tied with lm_head) stay the teacher's; everything keeps its count.
    assert torch.equal(student.get_input_embeddings().weight, emb_before)
    assert count_parameters(student) == params_before
    assert all(p.grad is None for p in student.parameters())
    points = [d for _, msg, d in reporter.events if msg == "distillation step"]
    assert 1 <= len(points) <= 24 and points[-1]["step"] == 24
    assert {"loss", "lr", "tokens", "seconds"} <= set(points[-1])


def test_distillation_is_deterministic_and_cancellable() -> None:
    config = KdConfig(tokens=16 * 32 * 2, learning_rate=1e-3)
    runs = []
    for _ in range(2):
        student, teacher, blocks = _student_and_teacher()
        distill_logits(student, blocks, config, teacher=teacher)
        runs.append(student.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    student, teacher, blocks = _student_and_teacher()
    with pytest.raises(Cancelled):
        distill_logits(
            student, blocks, config, teacher=teacher, reporter=RecordingReporter(cancel_after=2)
        )
    with pytest.raises(ValueError, match="exactly one"):
        distill_logits(student, blocks, config)


def test_a_distillation_killed_midway_resumes_to_the_same_weights(tmp_path) -> None:
    """Stopped after a few steps (a killed job), run again with the same checkpoint folder: it
    goes on from the last saved step and ends with exactly the weights of an uninterrupted
    run. A state saved by another run (another config) is not resumed."""
    from slimforge.compression.distill.kd_resume import KdCheckpoint

    # 12 steps, a seeded pass over the 16 blocks every 4: the resumed run draws the third.
    config = KdConfig(tokens=16 * 32 * 3, learning_rate=1e-3, batch_size=4)
    student, teacher, blocks = _student_and_teacher()
    distill_logits(student, blocks, config, teacher=teacher)
    reference = student.state_dict()

    folder = tmp_path / "kd"
    student, teacher, blocks = _student_and_teacher()
    stopped = RecordingReporter(cancel_after=5)
    with pytest.raises(Cancelled):
        distill_logits(
            student,
            blocks,
            config,
            teacher=teacher,
            reporter=stopped,
            checkpoint=KdCheckpoint(folder, every_seconds=0),
        )
    student, teacher, blocks = _student_and_teacher()  # a new worker: the model rebuilt
    resumed = RecordingReporter()
    result = distill_logits(
        student,
        blocks,
        config,
        teacher=teacher,
        reporter=resumed,
        checkpoint=KdCheckpoint(folder, every_seconds=0),
    )
    (start,) = [d for _, m, d in resumed.events if m.startswith("distillation resumed")]
    assert 4 < start["step"] < 8
    assert result.steps == 12 and result.curve[-1]["step"] == 12
    state = student.state_dict()
    assert all(torch.equal(state[k], reference[k]) for k in reference)

    other = config.model_copy(update={"learning_rate": 2e-3})
    student, teacher, blocks = _student_and_teacher()
    fresh = RecordingReporter()
    distill_logits(
        student,
        blocks,
        other,
        teacher=teacher,
        reporter=fresh,
        checkpoint=KdCheckpoint(folder, every_seconds=0),
    )
    assert not [m for _, m, _ in fresh.events if m.startswith("distillation resumed")]
