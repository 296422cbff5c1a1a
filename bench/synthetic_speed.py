"""How fast the teacher writes its own calibration text on this machine (tokens per second).

Two comparisons on SmolLM2-135M-Instruct (or any HF folder with ``--model``):

1. **own loop vs transformers' generate**, same work: ``rows`` sequences from BOS, ``steps``
   sampled tokens each, KV cache, ancestral sampling. The own loop is the sampler slimforge
   had before (``model(...)`` per step, ``torch.multinomial``, a growing cache); ``generate``
   with a growing ("dynamic", transformers' default and what ``compression.synthetic`` uses)
   and a preallocated ("static") cache.
2. **the calibration sampler itself** (``compression.synthetic.sample_stream``): chat-formatted
   instructions, answers ending at EOS, rounds ending when three quarters of the rows ended.
   Tokens per second counts sampled tokens only (the prompts are read, not sampled).

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python bench/synthetic_speed.py --threads 1

Prints a markdown table and the machine line. Besides wall time it gives CPU time (this
process's, ``time.process_time``): on a machine others share, tokens per CPU-second is the
figure that does not move with their load (with one thread it is the tokens/s of an idle core).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch

from bench.common import GGUF, load_teacher, machine_line
from slimforge.compression import ModelSource, load_model
from slimforge.compression.synthetic import sample_stream

T = TypeVar("T")


def timed(work: Callable[[], T]) -> tuple[T, float, float]:
    """(``work()``, wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, time.perf_counter() - wall, time.process_time() - cpu


@torch.no_grad()
def own_loop(model: Any, start: int, rows: int, steps: int, seed: int = 0) -> None:
    """``rows`` x ``steps`` tokens with a hand-written KV-cached loop."""
    generator = torch.Generator().manual_seed(seed)
    step_input = torch.full((rows, 1), start, dtype=torch.long)
    cache = None
    for _ in range(steps):
        out = model(input_ids=step_input, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        probs = torch.softmax(out.logits[:, -1].float(), dim=-1)
        step_input = torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
def with_generate(model: Any, start: int, pad: int, rows: int, steps: int, cache: str) -> None:
    """The same work through ``model.generate`` with a "dynamic" or "static" KV cache (EOS not
    allowed to stop it)."""
    ids = torch.full((rows, 1), start, dtype=torch.long)
    torch.manual_seed(0)
    model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=steps,
        min_new_tokens=steps,
        pad_token_id=pad,
        cache_implementation=cache,
        disable_compile=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="HF model folder (default: SmolLM2's GGUF)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, nargs="+", default=[16, 32])
    parser.add_argument(
        "--steps", type=int, default=256, help="tokens per row in comparison 1 (0: skip it)"
    )
    parser.add_argument("--tokens", type=int, default=4096, help="stream tokens, comparison 2")
    parser.add_argument("--seq-len", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model is not None:
        model, tokenizer = load_model(ModelSource(path=str(args.model)))
    else:
        model, tokenizer = load_teacher(GGUF)
    model.eval()
    start, pad = int(tokenizer.bos_token_id), int(tokenizer.pad_token_id or 0)
    print("| sampler | rows | tokens | wall s | tokens/s | CPU s | tokens per CPU-s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")

    def row(name: str, rows: int, tokens: int, what: str, wall: float, cpu: float) -> None:
        print(
            f"| {name} | {rows} | {what} | {wall:.1f} | {tokens / wall:.1f} | {cpu:.1f} | "
            f"{tokens / cpu:.1f} |",
            flush=True,
        )

    for rows in args.rows if args.steps else []:
        n = rows * args.steps
        runs: list[tuple[str, Callable[[], None]]] = [
            ("own loop, dynamic cache", partial(own_loop, model, start, rows, args.steps)),
        ]
        for cache in ("dynamic", "static"):
            work = partial(with_generate, model, start, pad, rows, args.steps, cache)
            runs.append((f"generate, {cache} cache", work))
        for name, run in runs:
            _, wall, cpu = timed(run)
            row(f"{name} (BOS, {args.steps} steps)", rows, n, f"{n:,}", wall, cpu)
    for rows in args.rows:
        sample = partial(
            sample_stream, model, tokenizer, tokens=args.tokens, seq_len=args.seq_len, rows=rows
        )
        text, wall, cpu = timed(sample)
        what = (
            f"{text.sampled_tokens:,} sampled, {text.stream.numel():,} in stream, "
            f"{text.live_share:.0%} of row-steps live"
        )
        label = f"calibration sampler ({'chat' if text.chat else 'BOS'}, seq_len {args.seq_len})"
        row(label, rows, text.sampled_tokens, what, wall, cpu)
    print(f"\n{machine_line()}")


if __name__ == "__main__":
    main()
