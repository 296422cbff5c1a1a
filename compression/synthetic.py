"""Calibration text sampled from the model itself (data-free, as in LLM-QAT, arXiv 2305.17888).

When the only text at hand is narrow (one domain), distilling on it pulls the student toward
that domain; text the teacher writes itself follows the teacher's own distribution instead.

How the text is made:

- **Starts.** A model whose tokenizer has a chat template answers our fixed list of user
  instructions (``slimforge.compression.prompts``), each put through
  ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``; a document is the
  formatted request followed by the sampled answer, so the student sees the chat format it
  will be used in. A base model starts from its BOS token (EOS when it has none).
- **Rounds.** Documents are sampled ``rows`` at a time with transformers' ``model.generate``
  (left padding, KV cache, sampling at ``temperature`` from the nucleus of ``top_p``), each row
  ending at EOS or after ``ANSWER_TOKENS`` (256) new tokens, or ``seq_len`` when shorter. A
  round ends when three quarters of its rows have ended; the others are cut there
  (calibration needs text, not whole answers, and waiting for the longest answer leaves most
  rows idle). Round ``r`` is seeded with ``(seed, r)`` and its instructions are a seeded
  shuffle of the list, so the stream of documents is the same for any number of tokens: the
  text for fewer tokens is a prefix of the text for more, and a cache
  (``slimforge.compression.synthetic_cache``) can hand out prefixes.
- **Blocks.** Documents are joined into one token stream and cut into blocks of ``seq_len``
  (as ``token_blocks`` does with files). Rounds are sampled until the stream fills the blocks
  asked for; what the last round gives beyond that goes to the cache.
- **Progress.** An event after the first decoding step that ends ``progress_seconds`` or more
  after the last one (tokens done, total, tokens per second), and a cancellation check at
  every decoding step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimforge.compression.progress import NullReporter, Reporter
from slimforge.compression.prompts import PROMPTS_VERSION
from slimforge.compression.synthetic_cache import (
    StreamCache,
    model_fingerprint,
    tokenizer_fingerprint,
)
from slimforge.compression.synthetic_rounds import (
    RoundWatch,
    document_starts,
    eos_ids,
    round_seed,
    round_starts,
    sample_round,
)

__all__ = [
    "ANSWER_TOKENS",
    "DEFAULT_ROWS",
    "PROGRESS_SECONDS",
    "TOP_P",
    "SampledText",
    "sample_blocks",
    "sample_stream",
]

PROGRESS_SECONDS = 10.0  # longest wait between two progress events
# Nucleus sampling (Holtzman et al. 2020, arXiv 1904.09751): the tail beyond the top 95 % of
# probability, sampled token after token, pulled SmolLM2-135M's answers into invented words
# within a few sentences (read here); cutting it keeps the text the model actually writes.
TOP_P = 0.95
# Longest answer, in new tokens (or seq_len when shorter). Measured on SmolLM2-135M-Instruct
# (top-p 0.95, seq_len 512, 32 instructions): 13 answers had not ended after 512 tokens, and
# such tails loop or drift; the rows of a round wait for each other, so at 512 only 69 % of
# the decoding work made tokens, at 256 90 % (and each token reads a shorter KV cache).
ANSWER_TOKENS = 256
# Documents sampled at once, by device type. On a CPU, 32 rows make about a third more tokens
# per CPU-second than 16 (bench/synthetic_speed.py), but what the last round gives beyond the
# need is lost to this job (kept for later ones in the cache), and a round of 16 is already
# ~4 k tokens. A GPU needs wider batches to be busy.
DEFAULT_ROWS = {"cpu": 16, "cuda": 64}


@dataclass(frozen=True)
class SampledText:
    """A token stream sampled from a model: ``stream`` LongTensor [tokens] (at least the
    tokens asked for; whole rounds), ``chat`` whether documents start with chat-formatted
    instructions, ``sampled_tokens`` how many tokens this call sampled (prompt tokens are read,
    not sampled; 0 when the cache had them all), ``seconds`` the call's wall time and
    ``row_steps`` the decoding work (rows x steps; rows that ended idle until their round
    does)."""

    stream: torch.Tensor
    chat: bool
    sampled_tokens: int
    seconds: float
    row_steps: int = 0

    @property
    def tokens_per_second(self) -> float:
        """Tokens sampled per second (0 when nothing was sampled)."""
        return self.sampled_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def live_share(self) -> float:
        """Share of the decoding work that made tokens (1 when nothing was sampled)."""
        return self.sampled_tokens / self.row_steps if self.row_steps else 1.0


class _Progress:
    """Emits "sampling calibration text" at least every ``every`` seconds while tokens come:
    stream tokens so far (whole rounds, plus the tokens of the round under way), the total
    asked for, and tokens sampled per second."""

    def __init__(self, reporter: Reporter, total: int, every: float) -> None:
        self.reporter, self.total, self.every = reporter, total, every
        self.stream = self.in_round = self.generated = 0
        self.started = self.last = time.monotonic()

    def new_round(self, stream_tokens: int) -> None:
        self.stream, self.in_round = stream_tokens, 0

    def add(self, tokens: int) -> None:
        self.reporter.check_cancelled()
        self.in_round += tokens
        self.generated += tokens
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.reporter.event("sampling calibration text", data=self.figures())

    def figures(self) -> dict[str, Any]:
        seconds = time.monotonic() - self.started
        return {
            "tokens": min(self.total, self.stream + self.in_round),
            "total": self.total,
            "tokens_per_second": round(self.generated / seconds, 1) if seconds > 0 else 0.0,
        }


@dataclass(frozen=True)
class _Setup:
    """What the sampled stream depends on, besides the model and tokenizer."""

    starts: list[list[int]]
    chat: bool
    eos: set[int]
    pad_id: int
    seed: int
    seq_len: int
    rows: int
    temperature: float
    top_p: float

    @property
    def answer_tokens(self) -> int:
        """New tokens a document may have at most."""
        return min(self.seq_len, ANSWER_TOKENS)

    def cache_entry(self, cache_dir: Path, model: nn.Module, tokenizer: Any) -> StreamCache:
        """The cache entry of this model, tokenizer and setup."""
        param = next(model.parameters())
        return StreamCache.for_setup(
            cache_dir,
            model=model_fingerprint(model),
            tokenizer=tokenizer_fingerprint(tokenizer),
            prompts_version=PROMPTS_VERSION if self.chat else None,
            device=param.device.type,
            dtype=str(param.dtype),
            seed=self.seed,
            seq_len=self.seq_len,
            answer_tokens=self.answer_tokens,
            rows=self.rows,
            temperature=self.temperature,
            top_p=self.top_p,
        )

    def round(
        self, model: nn.Module, index: int, on_tokens: Callable[[int], None]
    ) -> tuple[torch.Tensor, int]:
        """Round ``index``'s documents joined, LongTensor [tokens], and its row-steps."""
        watch = RoundWatch(self.rows, self.eos, on_tokens)
        docs = sample_round(
            model,
            round_starts(self.starts, self.seed, index, self.rows),
            max_new_tokens=self.answer_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=round_seed(self.seed, index),
            pad_id=self.pad_id,
            watch=watch,
        )
        return torch.tensor([t for d in docs for t in d], dtype=torch.long), self.rows * watch.steps


def _saved(
    cache: StreamCache, stream: torch.Tensor, rounds: int, reporter: Reporter
) -> StreamCache | None:
    """Save to ``cache``; on a disk error warn and go on without a cache (None): the text is
    still good, only a later job will sample it again."""
    try:
        cache.save(stream, rounds)
    except OSError as exc:
        reporter.event(
            "cannot write the sample cache: going on without it",
            level="warning",
            data={"path": str(cache.path), "error": str(exc)},
        )
        return None
    return cache


def _setup(model: nn.Module, tokenizer: Any, *, rows: int | None, **sampling: Any) -> _Setup:
    """The setup of a call (rows by the model's device type unless given)."""
    if rows is None:
        rows = DEFAULT_ROWS.get(next(model.parameters()).device.type, DEFAULT_ROWS["cpu"])
    starts, chat = document_starts(tokenizer)
    eos = eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos, default=0)
    return _Setup(starts, chat, eos, int(pad_id), rows=rows, **sampling)


def sample_stream(
    model: nn.Module,
    tokenizer: Any,
    *,
    tokens: int,
    seq_len: int,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = TOP_P,
    rows: int | None = None,
    cache_dir: Path | None = None,
    reporter: Reporter | None = None,
    progress_seconds: float = PROGRESS_SECONDS,
) -> SampledText:
    """At least ``tokens`` tokens of documents sampled from ``model`` as the module doc says
    (answers of at most ``min(seq_len, ANSWER_TOKENS)`` new tokens, ``rows`` documents per
    round: by default
    ``DEFAULT_ROWS`` for the model's device type), taken from and added to the cache under
    ``cache_dir`` when given. The model is put in eval mode for the call. Raises ValueError
    for non-positive sizes or temperature, a ``top_p`` outside (0, 1], or a tokenizer with
    neither BOS nor EOS; ``Cancelled`` when the reporter says so."""
    if tokens < 1 or seq_len < 2 or (rows or 1) < 1 or temperature <= 0 or not 0 < top_p <= 1:
        raise ValueError(
            "need tokens >= 1, seq_len >= 2, rows >= 1, temperature > 0 and 0 < top_p <= 1, "
            f"got {tokens}, {seq_len}, {rows}, {temperature} and {top_p}"
        )
    reporter = reporter or NullReporter()
    setup = _setup(
        model,
        tokenizer,
        rows=rows,
        seed=seed,
        seq_len=seq_len,
        temperature=temperature,
        top_p=top_p,
    )
    cache = setup.cache_entry(cache_dir, model, tokenizer) if cache_dir is not None else None
    stream, rounds = cache.load() if cache is not None else (torch.zeros(0, dtype=torch.long), 0)
    cached = length = int(stream.numel())
    progress, row_steps = _Progress(reporter, tokens, progress_seconds), 0
    was_training = model.training
    model.eval()
    try:
        while length < tokens:
            progress.new_round(length)
            joined, steps = setup.round(model, rounds, progress.add)
            stream, rounds = torch.cat([stream, joined]), rounds + 1
            length, row_steps = int(stream.numel()), row_steps + steps
            if cache is not None:  # saved after every round: a cancelled job keeps its rounds
                cache = _saved(cache, stream, rounds, reporter)
    finally:
        model.train(was_training)
    progress.new_round(length)
    seconds = time.monotonic() - progress.started
    result = SampledText(stream, setup.chat, progress.generated, seconds, row_steps)
    reporter.event(
        "sampled calibration text",
        data={
            **progress.figures(),
            "cached_tokens": min(cached, tokens),
            "chat": setup.chat,
            "seconds": round(seconds, 3),
        },
    )
    return result


def sample_blocks(
    model: nn.Module,
    tokenizer: Any,
    *,
    n_blocks: int,
    seq_len: int,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = TOP_P,
    batch_size: int | None = None,
    cache_dir: Path | None = None,
    reporter: Reporter | None = None,
    progress_seconds: float = PROGRESS_SECONDS,
) -> torch.Tensor:
    """LongTensor [n_blocks, seq_len]: the first ``n_blocks * seq_len`` tokens of
    :func:`sample_stream` (``batch_size`` documents per round, by default as there). Seeded:
    the same model, seed, sizes and device give the same tokens, and fewer blocks are a prefix
    of more. Raises as :func:`sample_stream` does (ValueError for ``n_blocks < 1``)."""
    if n_blocks < 1:
        raise ValueError(f"need n_blocks >= 1, got {n_blocks}")
    sampled = sample_stream(
        model,
        tokenizer,
        tokens=n_blocks * seq_len,
        seq_len=seq_len,
        seed=seed,
        temperature=temperature,
        top_p=top_p,
        rows=batch_size,
        cache_dir=cache_dir,
        reporter=reporter,
        progress_seconds=progress_seconds,
    )
    return sampled.stream[: n_blocks * seq_len].view(n_blocks, seq_len)
