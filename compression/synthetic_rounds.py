"""One round of sampling from a model: the documents' starts, the seeded choice of starts per
round, and ``model.generate`` with a per-step watch (progress, cancellation, the round's end).

The how and why are in ``slimforge.compression.synthetic``, which strings rounds into a stream.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from slimforge.compression.prompts import PROMPTS

__all__ = [
    "ROUND_ENDS_AT",
    "RoundWatch",
    "chat_starts",
    "document_starts",
    "eos_ids",
    "round_seed",
    "round_starts",
    "sample_round",
]

ROUND_ENDS_AT = 0.75  # share of a round's rows that must have ended for the round to end


def eos_ids(model: nn.Module, tokenizer: Any) -> set[int]:
    """The token ids that end a document: the tokenizer's EOS and the model's generation
    config's (a chat model often ends its turn with another token than the tokenizer's)."""
    ids = {tokenizer.eos_token_id}
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(config_eos) if isinstance(config_eos, list) else {config_eos}
    return {int(i) for i in ids if i is not None}


def chat_starts(tokenizer: Any, prompts: Sequence[str] = PROMPTS) -> list[list[int]] | None:
    """Token ids [len(prompts)][prompt tokens] of each instruction as a user turn through the
    tokenizer's chat template with the generation prompt (the assistant's turn opened), or
    None when the tokenizer has no chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    starts = []
    for prompt in prompts:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        # The template writes its own special tokens (BOS included where it wants one).
        starts.append(list(tokenizer(str(text), add_special_tokens=False)["input_ids"]))
    return starts


def round_starts(
    starts: list[list[int]], seed: int, round_index: int, rows: int
) -> list[list[int]]:
    """The starts of round ``round_index``: row i of the whole run takes the (i mod n)-th
    entry of a shuffle of the n starts seeded by (seed, i div n), so every start is used
    equally often and each round's choice depends on its index only."""
    n, chosen = len(starts), []
    for i in range(round_index * rows, (round_index + 1) * rows):
        order = list(range(n))
        random.Random(f"{seed}:{i // n}").shuffle(order)
        chosen.append(starts[order[i % n]])
    return chosen


def document_starts(tokenizer: Any) -> tuple[list[list[int]], bool]:
    """(starts, chat): the chat-formatted instructions of :func:`chat_starts` (chat True), or
    one start of the BOS token, else EOS, for a tokenizer without a chat template (chat
    False). Raises ValueError when there is neither BOS nor EOS."""
    starts = chat_starts(tokenizer)
    if starts is not None:
        return starts, True
    first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if first is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to start from")
    return [[int(first)]], False


class RoundWatch(StoppingCriteria):
    """Called by ``generate`` after every decoding step: counts the tokens rows produced,
    reports progress, checks cancellation, and ends the round when enough rows ended."""

    def __init__(self, rows: int, eos: set[int], on_tokens: Callable[[int], None]) -> None:
        self.ended = torch.zeros(rows, dtype=torch.bool)
        self.eos = torch.tensor(sorted(eos), dtype=torch.long)
        self.on_tokens = on_tokens
        self.quorum = math.ceil(ROUND_ENDS_AT * rows)
        self.steps = 0  # decoding steps so far: rows x steps is the work done

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        last = input_ids[:, -1].cpu()
        self.steps += 1
        self.on_tokens(int((~self.ended).sum()))  # each live row wrote one token (EOS too)
        self.ended |= torch.isin(last, self.eos)
        stop = bool(self.ended.sum() >= self.quorum)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def sample_round(
    model: nn.Module,
    starts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    pad_id: int,
    watch: RoundWatch,
) -> list[list[int]]:
    """One round: each start [prompt tokens] followed by its sampled continuation, up to and
    including its EOS. Seeds torch's global generator (which ``generate`` samples from) inside
    a fork, so the caller's random state is left as it was."""
    device = next(model.parameters()).device
    width = max(len(s) for s in starts)
    ids = torch.full((len(starts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, start in enumerate(starts):  # left padding: every row's last token is aligned
        ids[row, width - len(start) :] = torch.tensor(start)
        mask[row, width - len(start) :] = 1
    forked = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        out = cast(Any, model).generate(  # a transformers causal LM
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=top_p,
            repetition_penalty=1.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id,
            eos_token_id=watch.eos.tolist(),
            stopping_criteria=StoppingCriteriaList([watch]),
        )
    docs = []
    eos = set(watch.eos.tolist())
    for start, tokens in zip(starts, out[:, width:].tolist(), strict=True):
        end = next((j + 1 for j, t in enumerate(tokens) if t in eos), len(tokens))
        docs.append(start + tokens[:end])  # rows that ended early are padded after EOS
    return docs


def round_seed(seed: int, round_index: int) -> int:
    """A 31-bit seed for round ``round_index`` of a run seeded with ``seed``."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{round_index}".encode()).digest()[:4]) >> 1
