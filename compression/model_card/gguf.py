"""The model card's GGUF section: the files for llama.cpp / Ollama, their types, sizes and
perplexity as llama.cpp runs them, and how to run them. Torch-free.

Read from the job's ``metrics["gguf"]`` (written by the worker's exporting stage)::

    {"files": [{"path": "x.Q4_K_M.gguf", "gguf_type": "q4_k_m", "size": 61_000_000,
                "perplexity": 31.2}, ...],          # perplexity: None when not measured
     "eval_tokens": 4096,                            # tokens each perplexity was taken on
     "student_perplexity": 30.9,                     # transformers, safetensors, same tokens
     "llama_cpp_python": "0.3.36"}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["gguf_section"]

_PROMPT = "The capital of France is"


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _table(files: list[Mapping[str, Any]]) -> list[str]:
    rows = ["| File | Type | Size | Perplexity (llama.cpp) |", "|---|---|---|---|"]
    for f in files:
        ppl = f.get("perplexity")
        shown = f"{ppl:.3f}" if isinstance(ppl, int | float) else "not measured"
        rows.append(f"| `{f['path']}` | {f['gguf_type'].upper()} | {_size(f['size'])} | {shown} |")
    return rows


def _how_measured(gguf: Mapping[str, Any]) -> list[str]:
    tokens, reference = gguf.get("eval_tokens"), gguf.get("student_perplexity")
    if not tokens:
        return ["", "Perplexity was not measured (the job had no held-out evaluation text)."]
    line = (
        f"Perplexity: llama.cpp running each file on the first {tokens:,} tokens of the "
        "held-out evaluation text (the same blocks and protocol as the evaluation above)"
    )
    if isinstance(reference, int | float):
        line += f"; transformers on the safetensors gives {reference:.3f} on the same tokens"
    return ["", line + "."]


def _run_snippets(name: str, gguf_type: str, repo_id: str | None) -> list[str]:
    remote = (
        [
            "",
            "Straight from the Hub:",
            "",
            "```sh",
            f"llama-cli -hf {repo_id}:{gguf_type.upper()} -p {json.dumps(_PROMPT)}",
            f"ollama run hf.co/{repo_id}:{gguf_type.upper()}",
            "```",
        ]
        if repo_id
        else []
    )
    return [
        "",
        "With llama.cpp:",
        "",
        "```sh",
        f"llama-cli -m {name} -p {json.dumps(_PROMPT)} -n 64",
        "```",
        "",
        "With llama-cpp-python:",
        "",
        "```python",
        "from llama_cpp import Llama",
        "",
        f"llm = Llama(model_path={json.dumps(name)})",
        f'print(llm({json.dumps(_PROMPT)}, max_tokens=64)["choices"][0]["text"])',
        "```",
        *remote,
    ]


def gguf_section(gguf: Mapping[str, Any] | None, repo_id: str | None) -> list[str]:
    """Markdown lines of the GGUF section ([] when the job wrote no GGUF file). The snippets
    run the last file listed (the job's last ``gguf_type``); ``repo_id`` adds Hub ones."""
    files = list((gguf or {}).get("files") or [])
    if not files:
        return []
    assert gguf is not None
    made_by = "llama.cpp's own converter (`convert_hf_to_gguf.py`) and quantiser"
    if gguf.get("llama_cpp_python"):
        made_by += f", from llama-cpp-python {gguf['llama_cpp_python']}"
    last = files[-1]
    return [
        "",
        "## GGUF (llama.cpp, Ollama)",
        "",
        f"The same weights as GGUF files, written by {made_by}:",
        "",
        *_table(files),
        *_how_measured(gguf),
        *_run_snippets(last["path"], last["gguf_type"], repo_id),
    ]
