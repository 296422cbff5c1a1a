"""Perplexity and teacher-student fidelity vs float64 references, and artifact sizes."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from slimforge.compression.data import token_blocks
from slimforge.compression.evaluation import (
    artifact_size,
    fidelity,
    fidelity_from_reference,
    perplexity,
    teacher_reference,
)
from slimforge.compression.progress import Cancelled, RecordingReporter
from tests.compression.helpers import VOCAB, correlated_blocks, tiny_llama


def teacher_student(
    scale: float = 10.0, noise: float = 0.3
) -> tuple[LlamaForCausalLM, LlamaForCausalLM]:
    """A tiny untied Llama whose next-token distributions are far from uniform (its output head
    scaled by ``scale``) and a student: the same weights plus Gaussian noise of ``noise`` times
    each matrix's standard deviation. (Tied tiny models mostly predict their input token.)"""
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    teacher = LlamaForCausalLM(config).eval()
    student = copy.deepcopy(teacher)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        teacher.lm_head.weight.mul_(scale)
        student.lm_head.weight.mul_(scale)
        for p in student.parameters():
            if p.dim() == 2:
                p.add_(torch.randn(p.shape, generator=g) * p.std() * noise)
    return teacher, student


def reference_logprobs(model: torch.nn.Module, blocks: torch.Tensor) -> torch.Tensor:
    """float64 log-softmax [n, T-1, V] of the predicting positions, all at once."""
    with torch.no_grad():
        logits = model(input_ids=blocks).logits
    return torch.log_softmax(logits[:, :-1].double(), dim=-1)


def test_perplexity_matches_float64_reference() -> None:
    model = tiny_llama()
    blocks = correlated_blocks(5, 12)
    logp = reference_logprobs(model, blocks)
    expected = math.exp(float(-logp.gather(-1, blocks[:, 1:, None]).mean()))
    for batch_size in (1, 2, 5):
        got = perplexity(model, blocks, batch_size=batch_size)
        assert got == pytest.approx(expected, rel=1e-5)
    # A random model over 256 tokens is close to uniform.
    assert 100 < expected < 600


def test_perplexity_checks_cancellation_and_input() -> None:
    model = tiny_llama()
    with pytest.raises(Cancelled):
        perplexity(model, correlated_blocks(4, 8), batch_size=1, reporter=RecordingReporter(2))
    with pytest.raises(ValueError):
        perplexity(model, torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(ValueError):
        perplexity(model, torch.zeros(3, 4))


def test_a_model_against_itself() -> None:
    model, _ = teacher_student()
    result = fidelity(model, model, correlated_blocks(6, 10), batch_size=4)
    assert result.kl_per_token == 0.0
    assert result.top1_agreement == 1.0
    assert result.perplexity_ratio == 1.0
    assert result.teacher_perplexity == result.student_perplexity
    assert result.perplexity_ratio_interval is not None
    assert (result.perplexity_ratio_interval.low, result.perplexity_ratio_interval.high) == (1, 1)


def test_fidelity_matches_full_vocabulary_reference() -> None:
    teacher, student = teacher_student()
    blocks = correlated_blocks(6, 10, seed=3)
    t, s = reference_logprobs(teacher, blocks), reference_logprobs(student, blocks)
    kl = F.kl_div(s, t, reduction="none", log_target=True).sum(-1)  # [n, T-1]
    targets = blocks[:, 1:, None]
    t_nll, s_nll = -t.gather(-1, targets).mean(), -s.gather(-1, targets).mean()
    agreement = (t.argmax(-1) == s.argmax(-1)).double().mean()

    result = fidelity(teacher, student, blocks, batch_size=4)
    assert result.kl_per_token == pytest.approx(float(kl.mean()), rel=1e-4)
    assert result.top1_agreement == pytest.approx(float(agreement), abs=1e-12)
    assert result.teacher_perplexity == pytest.approx(math.exp(float(t_nll)), rel=1e-5)
    assert result.student_perplexity == pytest.approx(math.exp(float(s_nll)), rel=1e-5)
    assert result.perplexity_ratio == pytest.approx(math.exp(float(s_nll - t_nll)), rel=1e-5)
    # Far from uniform and from each other: the figures are not trivially 0 or 1.
    assert float(kl.mean()) > 0.1 and 0.0 < float(agreement) < 1.0


def test_perplexities_equal_perplexity_exactly() -> None:
    teacher, student = teacher_student()
    blocks = correlated_blocks(7, 9)
    for batch_size in (1, 3):
        result = fidelity(teacher, student, blocks, batch_size=batch_size)
        assert result.teacher_perplexity == perplexity(teacher, blocks, batch_size=batch_size)
        assert result.student_perplexity == perplexity(student, blocks, batch_size=batch_size)


def test_interval_contains_the_estimate_and_narrows_with_more_windows() -> None:
    teacher, student = teacher_student()
    widths = []
    for n in (8, 64):
        result = fidelity(teacher, student, correlated_blocks(n, 10, seed=5), batch_size=16)
        intervals = (
            (result.perplexity_ratio_interval, result.perplexity_ratio),
            (result.kl_interval, result.kl_per_token),
            (result.top1_agreement_interval, result.top1_agreement),
        )
        for interval, estimate in intervals:
            assert interval is not None and estimate in interval
            assert interval.low < interval.high
        assert result.perplexity_ratio_interval is not None
        widths.append(result.perplexity_ratio_interval.high - result.perplexity_ratio_interval.low)
    assert widths[1] < widths[0] / 1.5


def test_interval_is_seeded_and_absent_for_one_window() -> None:
    teacher, student = teacher_student()
    blocks = correlated_blocks(10, 8)
    a, b = (fidelity(teacher, student, blocks, seed=s) for s in (7, 7))
    c = fidelity(teacher, student, blocks, seed=8)
    assert a.perplexity_ratio_interval == b.perplexity_ratio_interval
    assert a.perplexity_ratio_interval != c.perplexity_ratio_interval
    single = fidelity(teacher, student, blocks[:1])
    assert single.perplexity_ratio_interval is None and single.kl_interval is None
    with pytest.raises(ValueError):
        fidelity(teacher, student, blocks, confidence=1.0)


def test_bf16_student() -> None:
    teacher, _ = teacher_student()
    student = copy.deepcopy(teacher).bfloat16()
    blocks = correlated_blocks(4, 12, seed=2)
    t, s = reference_logprobs(teacher, blocks), reference_logprobs(student, blocks)
    kl = F.kl_div(s, t, reduction="none", log_target=True).sum(-1).mean()
    result = fidelity(teacher, student, blocks, batch_size=3)
    assert result.kl_per_token == pytest.approx(float(kl), rel=1e-3)
    # Rounding the weights to bf16 moves the distribution a little, not to zero or to noise.
    assert 0.0 < result.kl_per_token < 0.1
    assert result.student_perplexity == perplexity(student, blocks, batch_size=3)
    assert next(student.parameters()).dtype == torch.bfloat16


def test_topk_reference_with_the_whole_vocabulary_is_exact() -> None:
    teacher, student = teacher_student()
    blocks = correlated_blocks(5, 10)
    exact = fidelity(teacher, student, blocks, batch_size=2)
    ref = teacher_reference(teacher, blocks, top_k=VOCAB, batch_size=3)
    approx = fidelity_from_reference(ref, student, batch_size=2)
    assert approx.kl_per_token == pytest.approx(exact.kl_per_token, rel=1e-5)
    assert approx.teacher_perplexity == exact.teacher_perplexity
    assert approx.student_perplexity == exact.student_perplexity
    assert approx.top1_agreement == exact.top1_agreement
    assert approx.perplexity_ratio_interval == exact.perplexity_ratio_interval
    assert approx.teacher_tail_mass == 0.0 and approx.protocol.kl_top_k == VOCAB
    # As documented: int64 blocks, then 12 + 8k bytes per scored token.
    assert ref.nbytes == blocks.numel() * 8 + 5 * 9 * (12 + 8 * VOCAB)


@pytest.mark.parametrize("top_k", [1, 8, 32])
def test_topk_kl_is_a_lower_bound_with_the_stated_gap(top_k: int) -> None:
    teacher, student = teacher_student()
    blocks = correlated_blocks(4, 10)
    exact = fidelity(teacher, student, blocks)
    approx = fidelity_from_reference(teacher_reference(teacher, blocks, top_k=top_k), student)
    # The gap is P_tail * KL(p(.|tail) || q(.|tail)) (chain rule for relative entropy).
    t, s = reference_logprobs(teacher, blocks), reference_logprobs(student, blocks)
    top = t.topk(top_k, dim=-1).indices
    tail_t = t.scatter(-1, top, float("-inf"))
    tail_s = s.scatter(-1, top, float("-inf"))
    mass_t, mass_s = tail_t.logsumexp(-1, keepdim=True), tail_s.logsumexp(-1, keepdim=True)
    cond_t, cond_s = tail_t - mass_t, tail_s - mass_s
    p = cond_t.exp()
    cond_kl = torch.where(p > 0, p * (cond_t - cond_s), torch.zeros_like(p)).sum(-1)
    gap = (mass_t.squeeze(-1).exp() * cond_kl).mean()
    assert approx.kl_per_token <= exact.kl_per_token + 1e-6
    assert exact.kl_per_token - approx.kl_per_token == pytest.approx(float(gap), abs=1e-5)
    assert approx.teacher_tail_mass == pytest.approx(float(mass_t.exp().mean()), rel=1e-4)
    assert approx.top1_agreement == exact.top1_agreement
    metrics = approx.metrics()
    assert "kl_per_token" not in metrics and "kl_interval" not in metrics
    assert metrics["kl_per_token_lower_bound"] == approx.kl_per_token


def test_reference_checks_its_inputs() -> None:
    teacher = tiny_llama()
    blocks = correlated_blocks(2, 6)
    with pytest.raises(ValueError):
        teacher_reference(teacher, blocks, top_k=VOCAB + 1)
    with pytest.raises(ValueError):
        teacher_reference(teacher, blocks, top_k=0)
    ref = teacher_reference(teacher, blocks, top_k=4)
    ref.vocab_size = VOCAB + 1  # as if the student's vocabulary differed
    with pytest.raises(ValueError):
        fidelity_from_reference(ref, tiny_llama(1))


def test_vocabulary_mismatch_is_refused() -> None:
    teacher = tiny_llama()
    student = copy.deepcopy(teacher)
    student.resize_token_embeddings(VOCAB + 8)
    with pytest.raises(ValueError, match="vocabularies differ"):
        fidelity(teacher, student, correlated_blocks(2, 6))


def test_progress_cancellation_and_training_flags() -> None:
    teacher, student = tiny_llama(0), tiny_llama(1).train()
    blocks = correlated_blocks(5, 6)
    reporter = RecordingReporter()
    fidelity(teacher, student, blocks, batch_size=2, reporter=reporter)
    assert [e[2] for e in reporter.events] == [{"index": i, "total": 3} for i in (1, 2, 3)]
    assert reporter.checks == 3
    assert student.training and not teacher.training
    with pytest.raises(Cancelled):
        fidelity(teacher, student, blocks, batch_size=1, reporter=RecordingReporter(2))
    ref = teacher_reference(teacher, blocks, top_k=4, batch_size=2)
    with pytest.raises(Cancelled):
        fidelity_from_reference(ref, student, batch_size=1, reporter=RecordingReporter(1))


def test_protocol_of_token_blocks(tokenizer: PreTrainedTokenizerFast) -> None:
    texts = ["The cat sat on the mat.", "A second document, longer than the first one."] * 4
    blocks = token_blocks(texts, tokenizer, seq_len=16, max_tokens=10_000)
    teacher = tiny_llama()
    result = fidelity(teacher, tiny_llama(1), blocks)
    protocol = result.protocol
    assert (protocol.window_tokens, protocol.stride_tokens) == (16, 16)
    assert protocol.n_windows == blocks.shape[0]
    assert protocol.scored_tokens == blocks.shape[0] * 15
    assert not protocol.first_token_scored and not protocol.bos_prepended
    # token_blocks joins documents with EOS and adds no BOS, as the protocol says.
    assert protocol.windows_starting_with_bos == 0
    assert int((blocks == tokenizer.bos_token_id).sum()) == 0
    assert int((blocks == tokenizer.eos_token_id).sum()) > 0
    with_bos = blocks.clone()
    with_bos[:2, 0] = 1  # the tiny models' bos_token_id
    assert fidelity(teacher, teacher, with_bos).protocol.windows_starting_with_bos == 2
    metrics = json.loads(json.dumps(result.metrics()))
    assert metrics["evaluation_tokens"] == protocol.scored_tokens
    assert metrics["teacher_perplexity"] == result.teacher_perplexity
    assert metrics["protocol"]["window_tokens"] == 16
    assert len(metrics["perplexity_ratio_interval"]) == 2


def test_artifact_size(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_bytes(b"y" * 5)
    assert artifact_size(tmp_path) == 15
    assert artifact_size(tmp_path / "a.bin") == 10
    with pytest.raises(FileNotFoundError):
        artifact_size(tmp_path / "missing")
