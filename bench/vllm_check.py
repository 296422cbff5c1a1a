"""Serve a pruned slimforge artifact with vLLM and check a completion against transformers.

Needs a GPU and ``pip install vllm`` (not part of slimforge's dependencies); run it on a lent
GPU machine. Pruned (``minitron``) and distilled artifacts are standard transformers checkpoints
(``LlamaForCausalLM`` …), which vLLM serves as they are; low-rank (``svd``/``lillama``) ones
need their own modelling code (``trust_remote_code``), which vLLM does not run, and are refused
here up front.

    python bench/vllm_check.py ARTIFACT_DIR [--port 8011] [--max-new-tokens 32]

Starts ``vllm serve ARTIFACT_DIR`` on 127.0.0.1, waits for ``/v1/models``, asks ``/v1/completions``
for a greedy (temperature 0) continuation of each prompt and compares it with
``generate(do_sample=False)`` from transformers on the same GPU in float32 and bf16. Prints a
table: prompt, whether the texts are equal, and the length of their common token prefix (bf16
kernels may differ in the last tokens; the first tokens must agree). Exits 1 when a prompt's
first 8 tokens differ.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

PROMPTS = [
    "The capital of France is",
    "To make a cup of tea, first",
    "Once upon a time, in a small village,",
]


def _servable(folder: Path) -> str | None:
    """Why vLLM cannot serve ``folder``, or None when it can."""
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") == "slimforge_lowrank" or "auto_map" in config:
        return (
            "a low-rank artifact needs its own modelling code (trust_remote_code), which vLLM "
            "does not run; only pruned/distilled (standard architecture) artifacts are servable"
        )
    return None


def _get(url: str, payload: dict[str, Any] | None = None, timeout: float = 600) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _wait_ready(base: str, server: subprocess.Popen[bytes], limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"vllm serve exited with {server.returncode}")
        try:
            _get(f"{base}/v1/models", timeout=5)
            return
        except OSError:
            time.sleep(2)
    raise SystemExit(f"vllm serve did not answer within {limit:.0f} s")


def vllm_completions(folder: Path, port: int, max_new_tokens: int) -> list[str]:
    """Greedy completions of PROMPTS from ``vllm serve folder`` (started and stopped here)."""
    base = f"http://127.0.0.1:{port}"
    cmd = ["vllm", "serve", str(folder), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--dtype", "bfloat16", "--max-model-len", "2048", "--gpu-memory-utilization", "0.5"]
    server = subprocess.Popen(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        _wait_ready(base, server, limit=600)
        out = []
        for prompt in PROMPTS:
            body = {"model": str(folder), "prompt": prompt, "max_tokens": max_new_tokens}
            body |= {"temperature": 0.0}
            out.append(_get(f"{base}/v1/completions", body)["choices"][0]["text"])
        return out
    finally:
        server.terminate()
        server.wait(timeout=60)


def transformers_completions(folder: Path, max_new_tokens: int) -> tuple[list[str], Any]:
    """Greedy completions of PROMPTS with plain transformers (bf16 on the GPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).to("cuda").eval()
    out = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").to("cuda")
        gen = model.generate(**ids, do_sample=False, max_new_tokens=max_new_tokens)
        out.append(tokenizer.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    return out, tokenizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    reason = _servable(args.artifact)
    if reason is not None:
        print(f"not servable by vLLM: {reason}", file=sys.stderr)
        return 2
    reference, tokenizer = transformers_completions(args.artifact, args.max_new_tokens)
    served = vllm_completions(args.artifact, args.port, args.max_new_tokens)
    print("| prompt | equal | common prefix (tokens) |\n|---|---|---:|")
    worst = None
    for prompt, ref, got in zip(PROMPTS, reference, served, strict=True):
        a, b = tokenizer(ref)["input_ids"], tokenizer(got)["input_ids"]
        pairs = enumerate(zip(a, b, strict=False))
        common = next((i for i, (x, y) in pairs if x != y), min(len(a), len(b)))
        worst = common if worst is None else min(worst, common)
        print(f"| {prompt!r} | {ref == got} | {common} |")
    return 0 if worst is not None and worst >= 8 else 1


if __name__ == "__main__":
    raise SystemExit(main())
