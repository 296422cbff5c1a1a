"""Perplexity of one model and artifact sizes."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from slimforge.compression.evaluation.scoring import (
    batches,
    check_blocks,
    eval_mode,
    logits_of,
    perplexity_of,
    token_nll,
)
from slimforge.compression.progress import NullReporter, Reporter

__all__ = ["artifact_size", "perplexity"]


@torch.no_grad()
def perplexity(
    model: nn.Module,
    blocks: torch.Tensor,
    *,
    batch_size: int = 4,
    reporter: Reporter | None = None,
) -> float:
    """exp(mean next-token NLL) over every predicted token of ``blocks`` [n_blocks, seq_len].

    Each block is scored independently (seq_len - 1 predictions per block: the first token is
    predicted from nothing); per-token NLL in nats from a float32 log-softmax, summed per block in
    float64 so the mean does not depend on the batch size. The same protocol and arithmetic as
    the teacher/student perplexities of :func:`slimforge.compression.evaluation.fidelity`.
    Raises ValueError on malformed ``blocks``, :class:`slimforge.compression.progress.Cancelled`
    when the
    reporter says the job was cancelled.
    """
    reporter = reporter or NullReporter()
    check_blocks(blocks)
    sums = []
    with eval_mode(model):
        for batch in batches(blocks, batch_size, reporter, "evaluation batch done"):
            sums.append(token_nll(logits_of(model, batch), batch).double().sum(-1))
    nll_sums = torch.cat(sums)
    return perplexity_of(nll_sums, torch.full_like(nll_sums, blocks.shape[1] - 1))


def artifact_size(path: str | os.PathLike[str]) -> int:
    """Total size in bytes of a file, or of every file under a directory."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if not p.is_dir():
        raise FileNotFoundError(f"no artifact at {p}")
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
