"""The default calibration text: general English mixed with text the teacher writes itself.

Calibrating (and distilling) on one domain fits the student to that domain and loses the rest
(measured here: 2.56 times the teacher's general-English perplexity after ``kd`` on the Python
reference). The general-purpose default therefore mixes, by tokens:

- **general English**, the first tokens of ``english-calibration.txt`` shipped in the package
  (``slimforge.compression.corpora``: novels, speeches, encyclopaedia prose; its held-out
  partner is ``data/corpus/english-evaluation.txt``);
- **the teacher's own text** (``slimforge.compression.synthetic``): answers to a fixed list of
  instructions through the chat template for an instruct model, BOS-started text for a base
  model, so the student follows the teacher's whole distribution (LLM-QAT's data-free
  calibration, arXiv 2305.17888).

Half and half by default (``synthetic_share``). The blocks of the two sources alternate evenly
(not one source then the other), so any run of consecutive blocks (a calibration batch) holds
both in proportion. When the English text runs out, the rest is sampled, and a warning event
says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimforge.compression.corpora import ENGLISH_CALIBRATION
from slimforge.compression.data import TextSource, load_texts, token_blocks
from slimforge.compression.progress import NullReporter, Reporter
from slimforge.compression.synthetic import sample_stream

__all__ = [
    "ENGLISH_CALIBRATION",
    "GeneralCalibration",
    "general_calibration",
    "general_calibration_blocks",
    "interleave",
]


@dataclass(frozen=True)
class GeneralCalibration:
    """The mixture's ``blocks`` LongTensor [n, seq_len] and where they came from:
    ``english_blocks`` + ``synthetic_blocks`` == n; ``chat`` whether the sampled text starts
    from chat-formatted instructions (None: nothing sampled); ``sampled_tokens`` and
    ``sampling_seconds``: what this call sampled (0 when the cache had it all)."""

    blocks: torch.Tensor
    english_blocks: int
    synthetic_blocks: int
    chat: bool | None
    sampled_tokens: int
    sampling_seconds: float

    def summary(self) -> dict[str, Any]:
        """The figures a job stores (``metrics["calibration"]``): tokens of each source."""
        seq_len = int(self.blocks.shape[1])
        return {
            "source": "general mixture",
            "english_tokens": self.english_blocks * seq_len,
            "synthetic_tokens": self.synthetic_blocks * seq_len,
            "synthetic_chat": self.chat,
            "english_text": ENGLISH_CALIBRATION.name,
        }


def interleave(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Blocks [n1 + n2, seq_len] of ``first`` [n1, seq_len] and ``second`` [n2, seq_len], each
    in its own order, spread evenly: block i comes from ``second`` when ⌊(i+1)·n2/n⌋ grows
    (Bresenham's line), so every window of k blocks holds k·n2/n of them, ±1."""
    n1, n2 = first.shape[0], second.shape[0]
    n = n1 + n2
    if n == 0:
        return first
    steps = torch.arange(n + 1) * n2 // n  # [n + 1]: how many of second are placed by i
    from_second = steps[1:] > steps[:-1]  # [n] bool
    out = torch.empty((n, *first.shape[1:]), dtype=first.dtype)
    out[from_second] = second
    out[~from_second] = first
    return out


def _split(n_blocks: int, synthetic_share: float) -> int:
    """Synthetic blocks out of ``n_blocks``: the share rounded, at least one of each source
    when the share is strictly between 0 and 1 and there are two blocks or more."""
    n_syn = round(n_blocks * synthetic_share)
    if 0.0 < synthetic_share < 1.0 and n_blocks >= 2:
        n_syn = min(max(n_syn, 1), n_blocks - 1)
    return n_syn


def _english(tokenizer: Any, path: Path | None, n_blocks: int, seq_len: int) -> torch.Tensor:
    """The first ``n_blocks`` blocks [<= n_blocks, seq_len] of the English text (fewer when it
    runs out; none for ``n_blocks == 0``)."""
    if n_blocks < 1:
        return torch.zeros((0, seq_len), dtype=torch.long)
    texts = load_texts(TextSource(path=str(path or ENGLISH_CALIBRATION), label="calibration"))
    return token_blocks(texts, tokenizer, seq_len=seq_len, max_tokens=n_blocks * seq_len)


def general_calibration(
    model: nn.Module,
    tokenizer: Any,
    *,
    tokens: int,
    seq_len: int,
    seed: int = 0,
    synthetic_share: float = 0.5,
    english_path: Path | None = None,
    cache_dir: Path | None = None,
    reporter: Reporter | None = None,
) -> GeneralCalibration:
    """The mixture of ``tokens // seq_len`` blocks as the module doc says, with its make-up.

    ``english_path``: another general text file (.txt/.md/.jsonl) instead of the shipped one.
    ``cache_dir``: the sampled text is read from and added to the cache there
    (``slimforge.compression.synthetic_cache``). ``seed`` seeds the sampling only (the English
    part is the text's first tokens).

    Raises ValueError when ``tokens < seq_len`` or ``synthetic_share`` is outside [0, 1], and
    what sampling or reading the text raises (``Cancelled`` through the reporter).
    """
    if not 0.0 <= synthetic_share <= 1.0:
        raise ValueError(f"synthetic_share must be within [0, 1], got {synthetic_share}")
    n_blocks = tokens // seq_len if seq_len >= 2 else 0
    if n_blocks < 1:
        raise ValueError(f"tokens ({tokens}) must hold at least one block of seq_len={seq_len}")
    reporter = reporter or NullReporter()
    n_syn = _split(n_blocks, synthetic_share)
    english = _english(tokenizer, english_path, n_blocks - n_syn, seq_len)
    if english.shape[0] < n_blocks - n_syn:
        reporter.event(
            "the general English text ran out: the rest of the calibration is sampled",
            level="warning",
            data={"english_tokens": int(english.numel()), "tokens": n_blocks * seq_len},
        )
        n_syn = n_blocks - english.shape[0]
    synthetic = torch.zeros((0, seq_len), dtype=torch.long)
    chat, sampled, seconds = None, 0, 0.0
    if n_syn > 0:
        text = sample_stream(
            model,
            tokenizer,
            tokens=n_syn * seq_len,
            seq_len=seq_len,
            seed=seed,
            cache_dir=cache_dir,
            reporter=reporter,
        )
        synthetic = text.stream[: n_syn * seq_len].view(n_syn, seq_len)
        chat, sampled, seconds = text.chat, text.sampled_tokens, text.seconds
    return GeneralCalibration(
        blocks=interleave(english, synthetic),
        english_blocks=int(english.shape[0]),
        synthetic_blocks=n_syn,
        chat=chat,
        sampled_tokens=sampled,
        sampling_seconds=seconds,
    )


def general_calibration_blocks(model: nn.Module, tokenizer: Any, **options: Any) -> torch.Tensor:
    """LongTensor [tokens // seq_len, seq_len] of the general-purpose calibration mixture:
    general English and text sampled from ``model`` (chat-formatted for a tokenizer with a
    chat template), ``synthetic_share`` of the blocks sampled (0: English only, 1: sampled
    only), the two interleaved evenly. :func:`general_calibration`'s ``blocks``: see it for the
    keyword ``options`` (``tokens`` and ``seq_len`` required) and the errors."""
    return general_calibration(model, tokenizer, **options).blocks
