"""GPU timing of `lillama` on a 1B-parameter Llama shape with random weights (bf16).

Prints a markdown table: the GPU's measured bf16 matmul peak, the end-to-end compression time
and calibration tokens per second (Grams, SVDs, training, propagation: everything), with the
model on the GPU and streamed (the model in CPU memory, one layer at a time on the GPU, as the
worker runs it) with each one's peak GPU memory, and the training steps alone: tokens per
second and the share of the matmul peak they reach (FLOPs of one step counted by
``torch.utils.flop_counter``, forward and backward).

    python bench/lillama_gpu.py                      # on the lent GPU (see docs/BENCHMARKS.md)
    python bench/lillama_gpu.py --device cpu --tiny  # a smoke test of the script itself

Random weights make the quality meaningless; only the speed is measured.
"""

from __future__ import annotations

import argparse
import copy
import time
from datetime import UTC, datetime
from typing import Any

import torch
from gpu_common import SHAPE_1B, SHAPE_TINY, matmul_peak, random_llama
from gpu_common import sync as _sync
from torch.utils.flop_counter import FlopCounterMode

from slimforge.compression import compress, count_parameters, resolve_target
from slimforge.compression.configs import LillamaConfig
from slimforge.compression.distill.blockwise import train_block
from slimforge.compression.distill.streaming import capture_layer_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a tiny shape (smoke test)")
    parser.add_argument("--tokens", type=int, default=65536, help="calibration tokens")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ratio", type=float, default=0.8)
    parser.add_argument("--timed-steps", type=int, default=20)
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shape = SHAPE_TINY if args.tiny else SHAPE_1B
    seq_len = min(args.seq_len, 64) if args.tiny else args.seq_len
    model = random_llama(shape, dtype=dtype, device=device)
    total = count_parameters(model)
    blocks = torch.randint(0, shape["vocab_size"], (max(1, args.tokens // seq_len), seq_len))
    peak = matmul_peak(device, dtype, 256 if args.tiny else 8192)

    # Training steps alone, on layer 0 after the method's own factorisation of a copy.
    config = LillamaConfig(batch_size=args.batch_size, max_steps_per_block=1)
    probe = copy.deepcopy(model)
    compress(
        probe,
        config,
        blocks=blocks[: args.batch_size],
        target_params=resolve_target(total, ratio=args.ratio),
    )
    layer = probe.model.layers[0].float()
    x, contexts = capture_layer_inputs(model, model.model.layers[0], [blocks[: args.batch_size]])
    x_t = [x[0].to(device)]
    x_s = [x_t[0] + 0.01 * torch.randn_like(x_t[0])]  # a distinct student input: two terms
    y = [x_t[0].float()]
    with FlopCounterMode(display=False) as counter:
        train_block(layer, x_t, x_s, y, contexts, max_steps=1)
    # train_block also evaluates the loss before and after (2 forwards x 2 inputs): remove them.
    with FlopCounterMode(display=False) as eval_counter, torch.no_grad():
        for inp in (x_t[0], x_s[0], x_t[0], x_s[0]):
            layer(inp.float(), *contexts[0][0], **contexts[0][1])
    step_flops = counter.get_total_flops() - eval_counter.get_total_flops()
    _sync(device)
    t0 = time.perf_counter()
    result = train_block(layer, x_t, x_s, y, contexts, max_steps=args.timed_steps, epochs=10**6)
    _sync(device)
    seconds = time.perf_counter() - t0
    # The loss passes before/after cost about 2/3 of a step each (forward only, 2 inputs).
    step_seconds = seconds / (args.timed_steps + 4 / 3)
    step_tokens = args.batch_size * seq_len
    del probe, layer

    # End to end: the whole method on the whole model.
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    student = copy.deepcopy(model)
    _sync(device)
    t0 = time.perf_counter()
    run = compress(
        student,
        LillamaConfig(batch_size=args.batch_size),
        blocks=blocks,
        target_params=resolve_target(total, ratio=args.ratio),
    )
    _sync(device)
    e2e = time.perf_counter() - t0
    peak_mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    del student

    # Streamed, as the worker runs lillama on a GPU: the model in CPU memory, one layer at a
    # time on the device (peak device memory: one layer and one batch of activations).
    student = copy.deepcopy(model).to("cpu")
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    compress(
        student,
        LillamaConfig(batch_size=args.batch_size),
        blocks=blocks,
        target_params=resolve_target(total, ratio=args.ratio),
        device=device,
    )
    _sync(device)
    streamed = time.perf_counter() - t0
    peak_streamed = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"\ndate: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; device: {name}; torch {torch.__version__}"
    )
    print(
        f"model: Llama {shape['num_hidden_layers']} layers x {shape['hidden_size']} "
        f"({total:,} parameters, random, {str(dtype).removeprefix('torch.')}); "
        f"target {args.ratio:.0%}; calibration {blocks.numel():,} tokens, seq_len {seq_len}, "
        f"batch {args.batch_size}\n"
    )
    rows: list[tuple[str, Any]] = [
        ("matmul peak (measured)", f"{peak / 1e12:.1f} TFLOP/s"),
        ("training step (both loss terms, fwd+bwd)", f"{step_seconds * 1e3:.1f} ms"),
        ("training FLOPs per step (counted)", f"{step_flops / 1e12:.3f} TFLOP"),
        ("training throughput per block", f"{step_tokens / step_seconds:,.0f} tokens/s"),
        ("training share of matmul peak", f"{step_flops / step_seconds / peak:.1%}"),
        ("end-to-end compression", f"{e2e:.1f} s"),
        (
            "end-to-end calibration tokens/s (all blocks)",
            f"{blocks.numel() / e2e:,.0f} tokens/s",
        ),
        ("parameters after", f"{run.params_after:,}"),
        ("peak GPU memory", f"{peak_mem / 2**30:.2f} GiB" if peak_mem else "n/a"),
        ("model weights", f"{model_bytes / 2**30:.2f} GiB"),
        ("end-to-end, streamed (model in CPU memory)", f"{streamed:.1f} s"),
        (
            "peak GPU memory, streamed",
            f"{peak_streamed / 2**30:.2f} GiB" if peak_streamed else "n/a",
        ),
        ("timed steps, loss after", f"{result.steps}, {result.loss_after:.4f}"),
    ]
    print("| measure | value |\n|---|---:|")
    for label, value in rows:
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    main()
