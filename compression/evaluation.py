"""Quality and size measurements of a (compressed) model."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

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

    Each block is scored independently (seq_len - 1 predictions per block); the NLL is summed in
    float64 so the mean does not depend on the batch size.
    """
    reporter = reporter or NullReporter()
    if blocks.dim() != 2 or blocks.shape[0] == 0 or blocks.shape[1] < 2:
        raise ValueError(f"blocks must be [n_blocks >= 1, seq_len >= 2], got {tuple(blocks.shape)}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll_sum, count = 0.0, 0
    n_batches = (blocks.shape[0] + batch_size - 1) // batch_size
    try:
        for i in range(n_batches):
            reporter.check_cancelled()
            batch = blocks[i * batch_size : (i + 1) * batch_size].to(device)  # [b, T]
            logits = model(input_ids=batch, use_cache=False).logits  # [b, T, vocab]
            # Position t predicts token t+1: logits[:, :-1] against batch[:, 1:].
            nll = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                batch[:, 1:].reshape(-1),
                reduction="sum",
            )
            nll_sum += float(nll.double())
            count += batch[:, 1:].numel()
            reporter.event("evaluation batch done", data={"index": i + 1, "total": n_batches})
    finally:
        model.train(was_training)
    return math.exp(nll_sum / count)


def artifact_size(path: str | os.PathLike[str]) -> int:
    """Total size in bytes of a file, or of every file under a directory."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if not p.is_dir():
        raise FileNotFoundError(f"no artifact at {p}")
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
