"""How fast the teacher writes its own calibration text on this machine (tokens per second).

Two comparisons on SmolLM2-135M-Instruct (or any HF folder with ``--model``):

1. **own loop vs transformers' generate**, same work: ``rows`` sequences from BOS, ``steps``
   sampled tokens each, KV cache, ancestral sampling. The own loop is the sampler slimforge
   had before (``model(...)`` per step, ``torch.multinomial``); ``generate`` is what
   ``compression.synthetic`` uses now.
2. **the calibration sampler itself** (``compression.synthetic.sample_stream``): chat-formatted
   instructions, answers ending at EOS, rounds ending when three quarters of the rows ended.
   Tokens per second counts sampled tokens only (the prompts are read, not sampled).

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python bench/synthetic_speed.py --threads 1

Prints a markdown table and the machine line.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import GGUF, load_teacher, machine_line
from slimforge.compression import ModelSource, load_model
from slimforge.compression.synthetic import sample_stream


@torch.no_grad()
def own_loop(model: Any, start: int, rows: int, steps: int, seed: int = 0) -> float:
    """Seconds for ``rows`` x ``steps`` tokens with a hand-written KV-cached loop."""
    generator = torch.Generator().manual_seed(seed)
    step_input = torch.full((rows, 1), start, dtype=torch.long)
    cache = None
    began = time.perf_counter()
    for _ in range(steps):
        out = model(input_ids=step_input, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        probs = torch.softmax(out.logits[:, -1].float(), dim=-1)
        step_input = torch.multinomial(probs, 1, generator=generator)
    return time.perf_counter() - began


@torch.no_grad()
def with_generate(model: Any, start: int, pad: int, rows: int, steps: int) -> float:
    """Seconds for the same work through ``model.generate`` (EOS not allowed to stop it)."""
    ids = torch.full((rows, 1), start, dtype=torch.long)
    torch.manual_seed(0)
    began = time.perf_counter()
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
    )
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="HF model folder (default: SmolLM2's GGUF)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--steps", type=int, default=64, help="tokens per row in comparison 1")
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
    print("| sampler | rows | tokens | seconds | tokens/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for rows in args.rows:
        n = rows * args.steps
        if args.steps == 0:
            break
        for name, run in (
            ("own loop (BOS, fixed length)", lambda r=rows: own_loop(model, start, r, args.steps)),
            (
                "generate (BOS, fixed length)",
                lambda r=rows: with_generate(model, start, pad, r, args.steps),
            ),
        ):
            seconds = run()
            print(f"| {name} | {rows} | {n:,} | {seconds:.1f} | {n / seconds:.1f} |", flush=True)
    for rows in args.rows:
        text = sample_stream(
            model, tokenizer, tokens=args.tokens, seq_len=args.seq_len, rows=rows, seed=0
        )
        label = f"calibration sampler ({'chat' if text.chat else 'BOS'}, seq_len {args.seq_len})"
        print(
            f"| {label} | {rows} | {text.sampled_tokens:,} sampled, {text.stream.numel():,} "
            f"in stream ({text.live_share:.0%} of row-steps live) | {text.seconds:.1f} | "
            f"{text.tokens_per_second:.1f} |",
            flush=True,
        )
    print(f"\n{machine_line()}")


if __name__ == "__main__":
    main()
