"""Fidelity of a student to its teacher: both models in one pass over the same windows."""

from __future__ import annotations

import torch
from torch import nn

from slimforge.compression.evaluation.results import (
    TOKEN_BLOCKS_PACKING,
    FidelityResult,
    make_protocol,
    summarise,
)
from slimforge.compression.evaluation.scoring import (
    WindowSums,
    batches,
    check_blocks,
    eval_mode,
    exact_kl,
    log_probs,
    logits_of,
    model_device,
    nll_of,
    spans,
)
from slimforge.compression.progress import NullReporter, Reporter

__all__ = ["bos_token_id", "fidelity"]


def bos_token_id(model: nn.Module) -> int | None:
    """The model config's ``bos_token_id`` when it names one integer, else None."""
    bos = getattr(getattr(model, "config", None), "bos_token_id", None)
    return bos if isinstance(bos, int) else None


def _compare_batch(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, batch: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-token teacher/student NLL, exact KL and top-1 agreement, float32 [b, T-1] each (CPU),
    from logits [b, T, vocab] that may sit on different devices."""
    if teacher_logits.shape[-1] != student_logits.shape[-1]:
        raise ValueError(
            f"teacher and student vocabularies differ: {teacher_logits.shape[-1]} vs "
            f"{student_logits.shape[-1]} logits"
        )
    b, length = batch.shape
    keys = ("teacher_nll", "student_nll", "kl", "agree", "tail_mass")
    out = {k: torch.zeros(b, length - 1, dtype=torch.float32) for k in keys}
    device = student_logits.device
    for j in range(b):
        for span in spans(length):
            targets = batch[j, span.start + 1 : span.stop + 1]
            t = log_probs(teacher_logits[j, span])  # [c, vocab], teacher's device
            s = log_probs(student_logits[j, span])  # [c, vocab], student's device
            out["teacher_nll"][j, span] = nll_of(t, targets).cpu()
            out["student_nll"][j, span] = nll_of(s, targets).cpu()
            teacher_top1 = t.argmax(-1).to(device)
            t = t.to(device)
            out["kl"][j, span] = exact_kl(t, s).cpu()
            out["agree"][j, span] = (teacher_top1 == s.argmax(-1)).float().cpu()
    return out


@torch.no_grad()
def fidelity(
    teacher: nn.Module,
    student: nn.Module,
    blocks: torch.Tensor,
    *,
    batch_size: int = 4,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    packing: str = TOKEN_BLOCKS_PACKING,
    reporter: Reporter | None = None,
) -> FidelityResult:
    """Teacher and student scored in the same pass over ``blocks`` [n_windows, window_tokens].

    Protocol (returned as ``result.protocol``): every row of ``blocks`` is one window scored on
    its own, windows do not overlap (stride = window length) and carry no context over; position
    t predicts token t+1, so the first token of each window is not scored and a window gives
    ``window_tokens - 1`` scored tokens; no BOS is prepended (windows from
    :func:`slimforge.compression.data.token_blocks` start mid-stream, documents joined by EOS: see
    ``packing``). Per scored token, in float32 from each model's log-softmax:

    - NLL (nats) of the true next token for each model; perplexity = exp(total NLL / scored
      tokens), token-weighted; ratio = student / teacher. The teacher's equals
      :func:`slimforge.compression.evaluation.perplexity` with the same ``batch_size`` exactly.
    - KL(p_teacher ‖ p_student) = sum_v p_t(v) log(p_t(v) / p_s(v)) over the whole vocabulary
      (the forward KL distillation minimises; Hinton et al. 2015), averaged over scored tokens.
    - top-1 agreement: argmax p_student == argmax p_teacher, averaged over scored tokens.
    - 95 % (``confidence``) percentile bootstrap intervals for the ratio, the KL and the
      agreement: windows resampled with replacement ``n_resamples`` times (seeded by ``seed``),
      teacher and student sums taken on the same draws (paired). Windows are treated as
      independent; with few windows (under ~30) the interval is too narrow. None for 1 window.

    Memory: ``batch_size`` windows at a time; each model's logits [b, T, vocab] stay on its own
    device (models may live on different devices and dtypes), log-softmaxes are taken 1024
    positions at a time; the teacher's float32 log-probs are moved to the student's device for
    the KL. Reports one event per batch and checks ``reporter`` for cancellation before each.

    Raises ValueError on malformed ``blocks``, a vocabulary mismatch or a bad interval setting,
    :class:`slimforge.compression.progress.Cancelled` when the job is cancelled.
    """
    reporter = reporter or NullReporter()
    check_blocks(blocks)
    protocol = make_protocol(
        blocks,
        bos_token_id=bos_token_id(teacher),
        packing=packing,
        top_k=None,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    model_device(student)  # fail before the teacher pass if the student has no parameters
    parts = []
    with eval_mode(teacher, student):
        for batch in batches(blocks, batch_size, reporter, "fidelity batch done"):
            per_token = _compare_batch(logits_of(teacher, batch), logits_of(student, batch), batch)
            parts.append(WindowSums.of(per_token))
    return summarise(WindowSums.cat(parts), protocol)
