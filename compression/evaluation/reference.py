"""A precomputed teacher pass, so a student can be evaluated without the teacher in memory.

The teacher's NLL and argmax are stored exactly, so perplexities and top-1 agreement equal those
of :func:`slimforge.compression.evaluation.fidelity`. Its distribution is kept as the top-k
log-probs plus
the log of the remaining mass, so the KL is that of the two distributions coarsened to
{each top-k token} plus {one tail bucket}. By the log-sum inequality (Cover & Thomas, *Elements of
Information Theory*, 2nd ed., Thm 2.7.1) coarsening never raises a KL, and the chain rule for
relative entropy (ibid., Thm 2.5.3) gives the gap exactly:

    KL(p ‖ q) = KL_topk(p ‖ q) + P_tail · KL(p(· | tail) ‖ q(· | tail))

where P_tail is the teacher's mass outside its top-k. The approximation is a lower bound; the
mean P_tail is returned (``teacher_tail_mass``) so a reader sees how much mass it summarises.
The bound is not tight: on SmolLM2-135M-Instruct (8-12 windows of 512 tokens of
data/corpus/evaluation.txt) it was 32 / 18 / 9 % below the exact KL at k = 16 / 64 / 256 for a
student with one layer removed (exact 0.138 nats), 21 / 12 / 6 % for four layers removed
(exact 1.73), with a teacher tail mass of 0.21 / 0.12 / 0.06. Report it as a lower bound (the
metrics do) and use :func:`slimforge.compression.evaluation.fidelity` for the headline KL.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from slimforge.compression.evaluation.fidelity import bos_token_id
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
    log_probs,
    logits_of,
    nll_of,
    spans,
)
from slimforge.compression.progress import NullReporter, Reporter

__all__ = ["TeacherReference", "fidelity_from_reference", "teacher_reference", "topk_kl"]


@dataclass
class TeacherReference:
    """A teacher's pass over ``blocks`` [n, T] (CPU), per predicting position [n, T-1]:
    ``nll`` (float32 nats), ``argmax`` (int32), ``top_logprobs`` [n, T-1, k] (float32,
    descending), ``top_indices`` [n, T-1, k] (int32), ``tail_logmass`` (float32, log of the
    probability outside the top-k; -inf when k = vocab). 12 + 8k bytes per scored token."""

    blocks: torch.Tensor
    nll: torch.Tensor
    argmax: torch.Tensor
    top_logprobs: torch.Tensor
    top_indices: torch.Tensor
    tail_logmass: torch.Tensor
    vocab_size: int
    bos_token_id: int | None

    @property
    def top_k(self) -> int:
        """Teacher log-probs kept per position."""
        return int(self.top_logprobs.shape[-1])

    @property
    def nbytes(self) -> int:
        """Bytes held by the tensors (blocks included)."""
        tensors = (self.blocks, self.nll, self.argmax, self.top_logprobs, self.top_indices)
        return sum(t.numel() * t.element_size() for t in (*tensors, self.tail_logmass))


def _reference_batch(logits: torch.Tensor, batch: torch.Tensor, k: int) -> list[torch.Tensor]:
    """nll, argmax, top log-probs, top indices, tail log-mass for logits [b, T, vocab] (CPU)."""
    b, length = batch.shape
    nll = torch.empty(b, length - 1)
    argmax = torch.empty(b, length - 1, dtype=torch.int32)
    top_lp = torch.empty(b, length - 1, k)
    top_ix = torch.empty(b, length - 1, k, dtype=torch.int32)
    tail = torch.empty(b, length - 1)
    for j in range(b):
        for span in spans(length):
            t = log_probs(logits[j, span])  # [c, vocab]
            nll[j, span] = nll_of(t, batch[j, span.start + 1 : span.stop + 1]).cpu()
            argmax[j, span] = t.argmax(-1).to("cpu", torch.int32)
            top = t.topk(k, dim=-1)
            top_lp[j, span], top_ix[j, span] = top.values.cpu(), top.indices.to("cpu", torch.int32)
            # logsumexp of the rest, not log1p(-sum top): no cancellation when the tail is tiny.
            tail[j, span] = t.scatter(-1, top.indices, float("-inf")).logsumexp(-1).cpu()
    return [nll, argmax, top_lp, top_ix, tail]


@torch.no_grad()
def teacher_reference(
    teacher: nn.Module,
    blocks: torch.Tensor,
    *,
    top_k: int = 64,
    batch_size: int = 4,
    reporter: Reporter | None = None,
) -> TeacherReference:
    """The teacher's pass over ``blocks`` [n_windows, window_tokens] for
    :func:`fidelity_from_reference`: exact NLL and argmax, top-``top_k`` log-probs and the log
    of the remaining mass per scored position (float32 log-softmax, as :func:`fidelity`).

    Raises ValueError on malformed ``blocks`` or ``top_k`` outside [1, vocab],
    :class:`slimforge.compression.progress.Cancelled` when cancelled (checked once per batch).
    """
    reporter = reporter or NullReporter()
    check_blocks(blocks)
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    parts: list[list[torch.Tensor]] = []
    vocab = 0
    with eval_mode(teacher):
        for batch in batches(blocks, batch_size, reporter, "teacher reference batch done"):
            logits = logits_of(teacher, batch)
            vocab = logits.shape[-1]
            if top_k > vocab:
                raise ValueError(f"top_k ({top_k}) is larger than the vocabulary ({vocab})")
            parts.append(_reference_batch(logits, batch, top_k))
    nll, argmax, top_lp, top_ix, tail = (torch.cat(col) for col in zip(*parts, strict=True))
    return TeacherReference(
        blocks=blocks.detach().to("cpu", torch.long).clone(),
        nll=nll,
        argmax=argmax,
        top_logprobs=top_lp,
        top_indices=top_ix,
        tail_logmass=tail,
        vocab_size=vocab,
        bos_token_id=bos_token_id(teacher),
    )


def topk_kl(
    top_logprobs: torch.Tensor,
    top_indices: torch.Tensor,
    tail_logmass: torch.Tensor,
    student_logp: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coarsened KL(teacher ‖ student) [c] (nats) and teacher tail mass [c] from the teacher's
    top-k log-probs [c, k], their token ids [c, k], its tail log-mass [c] and the student's
    float32 log-probs [c, vocab]: sum_top p_t (log p_t - log p_s) + P_t,tail (log P_t,tail -
    log P_s,tail). A lower bound on the exact KL (module docstring)."""
    idx = top_indices.long()
    p_top = top_logprobs.exp()
    head = p_top * (top_logprobs - student_logp.gather(-1, idx))
    head = torch.where(p_top > 0, head, torch.zeros_like(head)).sum(-1)
    student_tail = student_logp.scatter(-1, idx, float("-inf")).logsumexp(-1)
    p_tail = tail_logmass.exp()
    tail = torch.where(p_tail > 0, p_tail * (tail_logmass - student_tail), torch.zeros_like(p_tail))
    return head + tail, p_tail


def _student_batch(
    reference: TeacherReference, start: int, logits: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-token NLLs, top-k KL, agreement and teacher tail mass, float32 [b, T-1] (CPU), for the
    student's logits [b, T, vocab] on windows ``start``.. of the reference."""
    if logits.shape[-1] != reference.vocab_size:
        raise ValueError(
            f"the student has {logits.shape[-1]} logits, the teacher reference "
            f"{reference.vocab_size}"
        )
    b, length = logits.shape[0], reference.blocks.shape[1]
    out = {k: torch.zeros(b, length - 1) for k in ("student_nll", "kl", "agree", "tail_mass")}
    out["teacher_nll"] = reference.nll[start : start + b]
    device = logits.device
    for j in range(b):
        i = start + j
        for span in spans(length):
            s = log_probs(logits[j, span])  # [c, vocab]
            targets = reference.blocks[i, span.start + 1 : span.stop + 1]
            out["student_nll"][j, span] = nll_of(s, targets).cpu()
            kl, mass = topk_kl(
                reference.top_logprobs[i, span].to(device),
                reference.top_indices[i, span].to(device),
                reference.tail_logmass[i, span].to(device),
                s,
            )
            out["kl"][j, span], out["tail_mass"][j, span] = kl.cpu(), mass.cpu()
            teacher_top1 = reference.argmax[i, span].to(device).long()
            out["agree"][j, span] = (teacher_top1 == s.argmax(-1)).float().cpu()
    return out


@torch.no_grad()
def fidelity_from_reference(
    reference: TeacherReference,
    student: nn.Module,
    *,
    batch_size: int = 4,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    packing: str = TOKEN_BLOCKS_PACKING,
    reporter: Reporter | None = None,
) -> FidelityResult:
    """:func:`slimforge.compression.evaluation.fidelity` against a stored teacher pass, on its
    windows.

    Same protocol, perplexities, agreement and intervals as ``fidelity`` (identical numbers for
    the same ``batch_size``); the KL is the top-k + tail-bucket lower bound of the module
    docstring (``protocol.kl_top_k`` set, ``teacher_tail_mass`` reported).
    Raises ValueError on a vocabulary mismatch or a bad interval setting,
    :class:`slimforge.compression.progress.Cancelled` when cancelled (checked once per batch).
    """
    reporter = reporter or NullReporter()
    protocol = make_protocol(
        reference.blocks,
        bos_token_id=reference.bos_token_id,
        packing=packing,
        top_k=reference.top_k,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    parts, start = [], 0
    with eval_mode(student):
        for batch in batches(reference.blocks, batch_size, reporter, "fidelity batch done"):
            parts.append(WindowSums.of(_student_batch(reference, start, logits_of(student, batch))))
            start += batch.shape[0]
    return summarise(WindowSums.cat(parts), protocol)
