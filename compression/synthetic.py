"""Calibration text sampled from the model itself (data-free, as in LLM-QAT, arXiv 2305.17888).

When the only text at hand is narrow (one domain), distilling on it pulls the student toward
that domain; text the teacher writes itself follows the teacher's own distribution instead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimforge.compression.progress import NullReporter, Reporter

__all__ = ["sample_blocks"]


@torch.no_grad()
def sample_blocks(
    model: nn.Module,
    tokenizer: Any,
    *,
    n_blocks: int,
    seq_len: int,
    seed: int = 0,
    temperature: float = 1.0,
    batch_size: int = 64,
    reporter: Reporter | None = None,
) -> torch.Tensor:
    """LongTensor [n_blocks, seq_len] sampled from ``model`` at ``temperature``, each sequence
    started from the tokenizer's BOS (or EOS) token, which is not part of the block. Seeded:
    the same model, seed and sizes give the same tokens on the same device."""
    if n_blocks < 1 or seq_len < 2:
        raise ValueError(f"need n_blocks >= 1 and seq_len >= 2, got {n_blocks} and {seq_len}")
    reporter = reporter or NullReporter()
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to start from")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    out = []
    try:
        for first in range(0, n_blocks, batch_size):
            reporter.check_cancelled()
            b = min(batch_size, n_blocks - first)
            ids = torch.full((b, 1), int(start), dtype=torch.long, device=device)
            cache = None
            step_input = ids
            tokens = []
            for _ in range(seq_len):
                res = model(input_ids=step_input, past_key_values=cache, use_cache=True)
                cache = res.past_key_values
                probs = torch.softmax(res.logits[:, -1].float() / temperature, dim=-1)
                step_input = torch.multinomial(probs, 1, generator=generator)  # [b, 1]
                tokens.append(step_input)
            out.append(torch.cat(tokens, dim=1).cpu())
            reporter.event(
                "sampled calibration text",
                data={"sequences": first + b, "total": n_blocks, "seq_len": seq_len},
            )
    finally:
        model.train(was_training)
    return torch.cat(out)
