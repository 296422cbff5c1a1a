"""File size and llama.cpp speed of GGUF exports (f16, q8_0, q4_k_m ...) of Hugging Face folders.

    SLIMFORGE_SMOLLM2_DIR=$(.venv/bin/slimforge fetch-demo-model --dest .cache/models | tail -1) \
        .venv/bin/python bench/gguf_speed.py --teacher [HF_FOLDER ...] [--types f16 q8_0 q4_k_m]

Each folder is exported with ``slimforge.compression.gguf_export.export_gguf`` (llama.cpp's
converter and
quantiser) and run by llama.cpp through llama-cpp-python on the CPU: one prompt of
``--prompt-tokens`` tokens of data/corpus/evaluation.txt, then ``--gen-tokens`` greedy tokens.
Speeds are llama.cpp's own counters (``llama_perf_context``: prompt = batched prompt decode,
generation = one-token decodes), the best of ``--repeats`` runs after a warm-up run: on a shared
machine the best run is the one least slowed by other processes (as ``timeit`` advises), and the
load average is printed beside the table. ``--teacher`` adds SmolLM2 (dequantised from its Q4_1
GGUF, saved as safetensors) and the Q4_1 file as shipped.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import llama_cpp
from llama_cpp import Llama

from slimforge.compression import ModelSource, export_gguf, load_model

ROOT = Path(__file__).resolve().parent.parent
EVAL_TEXT = ROOT / "data" / "corpus" / "evaluation.txt"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def speed(path: Path, args: argparse.Namespace) -> tuple[float, float]:
    """Best (prompt, generation) speed in tokens/s of llama.cpp on ``path``."""
    llm = Llama(
        model_path=str(path),
        n_ctx=args.prompt_tokens + args.gen_tokens + 8,
        n_batch=args.prompt_tokens,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    text = EVAL_TEXT.read_text()[: 20 * args.prompt_tokens]
    prompt = llm.tokenize(text.encode(), add_bos=True)[: args.prompt_tokens]
    prompt_speeds, gen_speeds = [], []
    for _ in range(args.repeats + 1):  # the first run warms caches up, as llama-bench's does
        llm.reset()
        llama_cpp.llama_perf_context_reset(llm.ctx)
        tokens = llm.generate(prompt, temp=0.0, top_k=1, reset=True)
        for _, _token in zip(range(args.gen_tokens), tokens, strict=False):
            pass
        perf = llama_cpp.llama_perf_context(llm.ctx)
        prompt_speeds.append(1e3 * perf.n_p_eval / perf.t_p_eval_ms)
        gen_speeds.append(1e3 * perf.n_eval / perf.t_eval_ms)
    llm.close()
    return max(prompt_speeds[1:]), max(gen_speeds[1:])


def teacher_folder(dest: Path) -> Path:
    """SmolLM2 dequantised from its GGUF and saved as a Hugging Face folder under ``dest``."""
    folder = Path(os.environ["SLIMFORGE_SMOLLM2_DIR"])
    model, tok = load_model(ModelSource(path=str(folder), gguf_file=GGUF))
    out = dest / "SmolLM2-135M-Instruct"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def student_folder(dest: Path, ratio: float) -> Path:
    """SmolLM2 pruned by minitron (MLP width only, refit, no kd: speed depends on the shape
    alone) to ``ratio`` of its parameters on 8,192 tokens of general English, saved under
    ``dest``."""
    from slimforge.compression import (
        TextSource,
        compress,
        count_parameters,
        load_texts,
        resolve_target,
        token_blocks,
    )
    from slimforge.compression.configs import MinitronConfig

    folder = Path(os.environ["SLIMFORGE_SMOLLM2_DIR"])
    model, tok = load_model(ModelSource(path=str(folder), gguf_file=GGUF))
    texts = load_texts(TextSource(path=str(ROOT / "data" / "corpus" / "english-calibration.txt")))
    blocks = token_blocks(texts, tok, seq_len=256, max_tokens=8192)
    target = resolve_target(count_parameters(model), ratio=ratio)
    compress(model, MinitronConfig(axes=["mlp"]), blocks=blocks, target_params=target)
    out = dest / f"SmolLM2-135M-Instruct-minitron-{ratio:g}"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, help="Hugging Face model folders")
    parser.add_argument("--teacher", action="store_true", help="add SmolLM2 (teacher) rows")
    parser.add_argument("--types", nargs="+", default=["f16", "q8_0", "q4_k_m"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--minitron", type=float, nargs="*", default=[], help="add SmolLM2 students at these ratios"
    )
    args = parser.parse_args()
    if not args.folders and not args.teacher and not args.minitron:
        parser.error("give HF folders and/or --teacher")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = list(args.folders)
        if args.teacher:
            shipped = Path(os.environ["SLIMFORGE_SMOLLM2_DIR"]) / GGUF
            rows.append(("SmolLM2-135M-Instruct (as shipped)", "q4_1", shipped))
            folders.insert(0, teacher_folder(Path(tmp)))
        folders += [student_folder(Path(tmp), ratio) for ratio in args.minitron]
        for i, folder in enumerate(folders):
            for gguf_type in args.types:
                out = export_gguf(folder, Path(tmp) / f"{i}.{gguf_type}.gguf", gguf_type=gguf_type)
                rows.append((folder.name, gguf_type, out))
        cpu = platform.processor() or platform.machine()
        print(
            f"llama-cpp-python {llama_cpp.__version__}, {args.threads} threads, {cpu}, "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; prompt {args.prompt_tokens} tokens, "
            f"generation {args.gen_tokens} tokens, best of {args.repeats}; "
            f"load average {os.getloadavg()[0]:.1f} at the start\n"
        )
        print("| model | GGUF type | file MiB | prompt tok/s | generation tok/s |")
        print("|---|---|---:|---:|---:|")
        for name, gguf_type, path in rows:
            prompt_speed, gen_speed = speed(path, args)
            size = path.stat().st_size / 2**20
            print(f"| {name} | {gguf_type} | {size:.1f} | {prompt_speed:.0f} | {gen_speed:.1f} |")
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
