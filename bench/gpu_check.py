"""The one prepared script for a lent GPU (issue 18, item 4): the worker's CUDA path end to end.

1. the device's measured matmul peak in its compute dtype (bf16 on a GPU);
2. parity (``gpu_parity.py``): svd, minitron (MLP axis) and lillama at ``--ratio`` on the CPU
   in float32 and on the device path (bf16, lillama streamed), both students scored against the
   teacher on held-out text; PASS / FAIL per method within a stated tolerance. The teacher is
   SmolLM2-135M-Instruct (``--teacher-gguf``, else ``$SLIMFORGE_SMOLLM2_DIR``; skipped
   without), or a tiny random Llama with ``--tiny``;
3. speed (``gpu_speed.py``) on a 1B Llama shape with random bf16 weights: ``kd`` with the
   teacher on the fly and a streamed ``lillama`` job: tokens/s, share of the matmul peak, peak
   GPU memory against the model's and one layer's bytes.

One markdown table (and JSON) goes to stdout and, after every part, to ``$OUT/gpu_check.md``
and ``$OUT/gpu_check.json`` when ``$OUT`` is set. ``--max-seconds`` guards the wall clock:
parts that no longer fit are reported as "skipped (time)". Exit status 1 when a part failed
with an error (its rows say which), else 0.

    python bench/gpu_check.py                          # on the lent GPU (docs/BENCHMARKS.md)
    python bench/gpu_check.py --tiny --device cpu      # smoke test, about a minute on 1 thread
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path
from typing import Any

import torch
from common import GGUF, corpus_blocks, load_teacher
from gpu_common import SHAPE_1B, SHAPE_TINY, Row, compute_dtype, matmul_peak, random_llama
from gpu_parity import FLOOR, METHODS, Parity, parity_measures
from gpu_report import Deadline, Part, Report, commit, machine, now
from gpu_speed import KD_MEASURES, LILLAMA_MEASURES, kd_speed, lillama_streamed
from tiny import char_tokenizer, tiny_llama

# --tiny: sizes that run in about a minute on one CPU thread (4 layers: lillama's timing
# needs three trained blocks).
TINY = {"seq_len": 64, "calib_tokens": 1024, "eval_tokens": 512, "speed_tokens": 1024,
        "speed_seq_len": 64, "speed_batch": 4, "kd_steps": 2, "matmul_n": 256}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny models and token counts (smoke)")
    p.add_argument("--max-seconds", type=float, default=420.0, help="wall-clock guard")
    p.add_argument(
        "--parts",
        default="peak,parity,kd,lillama",
        help="which parts, comma-separated (the peak always runs)",
    )
    p.add_argument(
        "--device-dtype",
        choices=["auto", "bfloat16", "float32"],
        default="auto",
        help="the device path's dtype (auto: the worker's: bf16 on a GPU)",
    )
    p.add_argument("--teacher-gguf", type=Path, help="SmolLM2 GGUF (default: the demo model)")
    p.add_argument("--ratio", type=float, default=0.8, help="target share of parameters")
    p.add_argument("--seq-len", type=int, default=256, help="parity: tokens per block")
    p.add_argument("--calib-tokens", type=int, default=4096, help="parity: calibration")
    p.add_argument("--eval-tokens", type=int, default=2048, help="parity: held-out scoring")
    p.add_argument("--lillama-batch", type=int, default=4, help="parity: lillama batch")
    p.add_argument("--speed-tokens", type=int, default=65536, help="1B lillama calibration")
    p.add_argument("--speed-seq-len", type=int, default=1024)
    p.add_argument("--speed-batch", type=int, default=8, help="1B lillama batch")
    p.add_argument("--kd-batch", type=int, default=4)
    p.add_argument("--kd-steps", type=int, default=20, help="timed kd steps")
    p.add_argument("--matmul-n", type=int, help="peak: n x n x n matmul (8192; 2048 on a CPU)")
    args = p.parse_args(argv)
    if args.tiny:
        for key, value in TINY.items():
            if p.get_default(key) == getattr(args, key):
                setattr(args, key, value)
    if args.matmul_n is None:
        args.matmul_n = 8192 if torch.device(args.device).type == "cuda" else 2048
    return args


def _device_dtype(args: argparse.Namespace, device: torch.device) -> torch.dtype:
    if args.device_dtype == "auto":
        return compute_dtype(device)
    dtype: torch.dtype = getattr(torch, args.device_dtype)
    return dtype


class Check:
    """The parts of the check and what they share: the teacher for parity (loaded on first
    use), the random Llama for speed, the measured peak."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.dtype = _device_dtype(args, self.device)
        self.peak = 0.0
        self.parity: Parity | None = None
        self.teacher_name = "tiny random Llama (2 layers)" if args.tiny else "SmolLM2-135M"
        self.gguf = self._gguf()

    def _gguf(self) -> Path | None:
        if self.args.tiny:
            return None
        if self.args.teacher_gguf is not None:
            return self.args.teacher_gguf
        folder = os.environ.get("SLIMFORGE_SMOLLM2_DIR")
        return Path(folder) / GGUF.name if folder else None

    def measure_peak(self) -> list[Row]:
        self.peak = matmul_peak(self.device, self.dtype, self.args.matmul_n)
        n = self.args.matmul_n
        what = f"{n} x {n} x {n}, {str(self.dtype).removeprefix('torch.')}"
        return [Row("matmul peak", "measured", self.peak / 1e12, "TFLOP/s", what)]

    def _parity(self) -> Parity:
        if self.parity is None:
            a = self.args
            if a.tiny:
                teacher: Any = tiny_llama(layers=2)
                tokenizer: Any = char_tokenizer()
            else:
                assert self.gguf is not None  # main() skips parity without a teacher
                teacher, tokenizer = load_teacher(self.gguf)
                layers = teacher.config.num_hidden_layers
                self.teacher_name = f"{self.gguf.name} ({layers} layers)"
            calib = corpus_blocks("english-calibration", tokenizer, seq_len=a.seq_len,
                                  max_tokens=a.calib_tokens)  # fmt: skip
            held = corpus_blocks("english-evaluation", tokenizer, seq_len=a.seq_len,
                                 max_tokens=a.eval_tokens)  # fmt: skip
            self.parity = Parity(teacher, calib, held, device=self.device, dtype=self.dtype,
                                 ratio=a.ratio, lillama_batch=a.lillama_batch,
                                 mlp_multiple=8 if a.tiny else 32)  # fmt: skip
        return self.parity

    def floor(self) -> list[Row]:
        return self._parity().rounding_floor()

    def method(self, name: str) -> list[Row]:
        return self._parity().method(name)

    def _speed_shape(self) -> dict[str, Any]:
        return {**SHAPE_TINY, "num_hidden_layers": 4} if self.args.tiny else SHAPE_1B

    def _speed_blocks(self, tokens: int) -> torch.Tensor:
        a, vocab = self.args, self._speed_shape()["vocab_size"]
        generator = torch.Generator().manual_seed(0)
        n = max(1, tokens // a.speed_seq_len)
        return torch.randint(0, vocab, (n, a.speed_seq_len), generator=generator)

    def _release_parity(self) -> None:
        """Free the parity teacher (a float32 copy sits on the device for scoring), so the
        speed parts' peak memory counts only their own tensors."""
        self.parity = None
        gc.collect()

    def kd(self) -> list[Row]:
        self._release_parity()
        a, shape = self.args, self._speed_shape()
        teacher = random_llama(shape, dtype=self.dtype, device=self.device, seed=0)
        student = random_llama(shape, dtype=self.dtype, device=self.device, seed=1)
        blocks = self._speed_blocks(a.kd_batch * a.speed_seq_len * 4)
        return kd_speed(teacher, student, blocks, device=self.device, batch_size=a.kd_batch,
                        steps=a.kd_steps, peak=self.peak)  # fmt: skip

    def lillama(self) -> list[Row]:
        self._release_parity()
        a = self.args
        model = random_llama(self._speed_shape(), dtype=self.dtype, device=self.device).to("cpu")
        blocks = self._speed_blocks(a.speed_tokens)
        return lillama_streamed(
            model, blocks, device=self.device, batch_size=a.speed_batch, ratio=a.ratio,
            peak=self.peak,
        )  # fmt: skip

    def parts(self) -> list[tuple[Part, str]]:
        """Every part in running order, with the ``--parts`` group it belongs to."""
        parts = [(Part("matmul peak", ("measured",), self.measure_peak), "peak"),
                 (Part(FLOOR, parity_measures(FLOOR), self.floor), "parity")]  # fmt: skip
        for name in METHODS:
            method = Part(name, parity_measures(name), lambda n=name: self.method(n))
            parts.append((method, "parity"))
        parts.append((Part("kd, teacher on the fly", KD_MEASURES, self.kd), "kd"))
        parts.append((Part("lillama, streamed", LILLAMA_MEASURES, self.lillama), "lillama"))
        return parts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = Deadline(args.max_seconds)
    check = Check(args)
    out = os.environ.get("OUT")
    command = " ".join(["python bench/gpu_check.py", *(sys.argv[1:] if argv is None else argv)])
    header = {"command": command, "commit": commit(), "date": now()}
    header["machine"] = machine(check.device)
    report = Report(header, Path(out) if out else None)
    wanted = set(args.parts.split(","))
    for part, group in check.parts():
        if group not in wanted | {"peak"}:
            continue
        if part.name in (FLOOR, *METHODS) and not args.tiny and check.gguf is None:
            print(f"{part.name}: skipped, no SmolLM2 (set SLIMFORGE_SMOLLM2_DIR or --teacher-gguf)")
            report.skip(part, "skipped (no SmolLM2)")
            continue
        report.add(part, deadline)
    report.header["teacher"] = check.teacher_name
    report.header["seconds"] = f"{deadline.elapsed():.0f}"
    report.write()
    print("\n" + report.markdown())
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
