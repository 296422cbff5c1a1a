"""Token-level scoring shared by :func:`perplexity` and the fidelity metrics (internal).

Every path computes log-probabilities the same way (float32 ``log_softmax`` over the vocabulary,
``ROW_CHUNK`` positions of one window at a time) so that the teacher perplexity of a fidelity
pass equals :func:`perplexity` bit for bit, and so that no [n_tokens, vocab] float32 tensor
exists beyond one chunk.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from slimforge.compression.progress import Reporter

# Positions per float32 log-softmax: the extra memory is a few ROW_CHUNK x vocab float32 tensors
# (about 600 MB per tensor for a 152k vocabulary), whatever the window length and batch size.
ROW_CHUNK = 1024


def check_blocks(blocks: torch.Tensor) -> None:
    """Raise ValueError unless ``blocks`` is an integer tensor [n_blocks >= 1, seq_len >= 2]."""
    if blocks.dim() != 2 or blocks.shape[0] == 0 or blocks.shape[1] < 2:
        raise ValueError(f"blocks must be [n_blocks >= 1, seq_len >= 2], got {tuple(blocks.shape)}")
    if blocks.dtype.is_floating_point or blocks.dtype == torch.bool:
        raise ValueError(f"blocks must hold integer token ids, got {blocks.dtype}")


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (where its input ids must go)."""
    return next(model.parameters()).device


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put the models in eval mode and restore their training flags afterwards."""
    flags = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, flag in zip(models, flags, strict=True):
            m.train(flag)


def batches(
    blocks: torch.Tensor, batch_size: int, reporter: Reporter, message: str
) -> Iterator[torch.Tensor]:
    """Slices of ``batch_size`` blocks; checks cancellation before and reports after each."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    total = math.ceil(blocks.shape[0] / batch_size)
    for i in range(total):
        reporter.check_cancelled()
        yield blocks[i * batch_size : (i + 1) * batch_size]
        reporter.event(message, data={"index": i + 1, "total": total})


def logits_of(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The model's logits [b, T, vocab] (its own dtype and device) for token ids [b, T]."""
    return model(input_ids=batch.to(model_device(model)), use_cache=False).logits


def spans(seq_len: int) -> Iterator[slice]:
    """Position ranges of at most ROW_CHUNK over the seq_len - 1 predicting positions."""
    for start in range(0, seq_len - 1, ROW_CHUNK):
        yield slice(start, min(start + ROW_CHUNK, seq_len - 1))


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """float32 log-softmax [c, vocab] of logits [c, vocab], on the logits' device.

    Each model's log-probabilities are computed on its own device (and only then moved), so a
    model's NLL is the same number whichever function scores it."""
    return F.log_softmax(logits.float(), dim=-1)


def nll_of(logp: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log p(target) [c] from log-probabilities [c, vocab] and target ids [c]."""
    return -logp.gather(-1, targets.to(logp.device).long()[:, None]).squeeze(-1)


def token_nll(logits: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """Next-token NLL in nats, float32 [b, T-1]: position t predicts token t+1."""
    out = torch.empty(batch.shape[0], batch.shape[1] - 1, dtype=torch.float32)
    for j in range(batch.shape[0]):
        for span in spans(batch.shape[1]):
            logp = log_probs(logits[j, span])
            targets = batch[j, span.start + 1 : span.stop + 1]
            out[j, span] = nll_of(logp, targets).cpu()
    return out


def exact_kl(teacher_logp: torch.Tensor, student_logp: torch.Tensor) -> torch.Tensor:
    """KL(p_teacher ‖ p_student) in nats [c] from float32 log-probabilities [c, vocab].

    sum_v p_t(v) (log p_t(v) - log p_s(v)); tokens the teacher gives probability 0 add 0 (the
    0·log 0 = 0 convention), which plain ``F.kl_div`` would turn into NaN."""
    p = teacher_logp.exp()
    terms = torch.where(p > 0, p * (teacher_logp - student_logp), torch.zeros_like(p))
    return terms.sum(-1)


@dataclass
class WindowSums:
    """Per-window sums in float64, each [n_windows] (CPU): teacher and student NLL (nats),
    KL (nats), top-1 agreements (count), teacher tail mass (top-k references only), scored
    positions (count)."""

    teacher_nll: torch.Tensor
    student_nll: torch.Tensor
    kl: torch.Tensor
    agree: torch.Tensor
    tail_mass: torch.Tensor
    scored: torch.Tensor

    @staticmethod
    def of(per_token: dict[str, torch.Tensor]) -> WindowSums:
        """Sum per-token tensors [b, T-1] (keys: the field names except ``scored``) per window."""
        sums = {k: v.double().sum(-1) for k, v in per_token.items()}
        scored = torch.full_like(sums["teacher_nll"], per_token["teacher_nll"].shape[-1])
        return WindowSums(**sums, scored=scored)

    @staticmethod
    def cat(parts: list[WindowSums]) -> WindowSums:
        """Join the sums of successive batches."""
        fields = ("teacher_nll", "student_nll", "kl", "agree", "tail_mass", "scored")
        return WindowSums(*(torch.cat([getattr(p, f) for p in parts]) for f in fields))


def perplexity_of(nll_sums: torch.Tensor, scored: torch.Tensor) -> float:
    """Token-weighted perplexity exp(sum NLL / scored tokens) from per-window sums [n] (float64).

    The single place perplexities are formed, so every path adds in the same order."""
    return math.exp(float(nll_sums.sum()) / float(scored.sum()))
