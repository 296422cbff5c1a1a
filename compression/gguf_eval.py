"""Perplexity of a GGUF file as llama.cpp runs it, on the token blocks transformers is scored on.

What a GGUF user gets is what llama.cpp computes from the file, not what the safetensors give in
transformers: quantisation, and llama.cpp's own kernels (activations rounded to f16 or 8 bits in
its matmuls), move the figures. The protocol is that of
:func:`slimforge.compression.evaluation.perplexity`: each block [seq_len] scored alone from an
empty context, position t predicting token t+1 (seq_len - 1 predictions per block), NLL in
nats from a float64 log-softmax, perplexity = exp(total NLL / predictions).

llama.cpp runs in a subprocess (llama-cpp-python's ``Llama``), like the converter and the
quantiser in :mod:`slimforge.compression.gguf_export`: a native abort ends that process, not
the caller, and its log becomes the error.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["gguf_perplexity"]

_LOG_LINES = 20  # lines of a failed run's output quoted in the error

# Run with sys.executable; imports llama_cpp and numpy only. Prints one JSON line.
_SCRIPT = """
import json, sys
import numpy as np
from llama_cpp import Llama
path, blocks_file, n_threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
blocks = np.load(blocks_file)
seq_len = blocks.shape[1]
llm = Llama(model_path=path, n_ctx=seq_len, n_batch=seq_len, n_threads=n_threads or None,
            logits_all=True, verbose=False)
nll = 0.0
for block in blocks.tolist():
    llm.reset()
    llm.eval(block)
    z = np.asarray(llm.scores[: seq_len - 1], dtype=np.float64)
    z -= z.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    nll -= float(log_probs[np.arange(seq_len - 1), block[1:]].sum())
print(json.dumps({"nll": nll, "predictions": len(blocks) * (seq_len - 1)}))
"""


def gguf_perplexity(path: Path, blocks: npt.ArrayLike, *, n_threads: int = 0) -> float:
    """exp(mean next-token NLL in nats) of ``blocks`` [n_blocks, seq_len] (token ids of the
    tokenizer the GGUF embeds) under llama.cpp running the GGUF file ``path`` on the CPU.

    ``n_threads``: llama.cpp's threads; 0 lets it choose.

    Raises:
        ValueError: ``blocks`` is not a non-empty [n_blocks, seq_len >= 2] array of ids.
        RuntimeError: llama-cpp-python is missing, or llama.cpp could not load or run the file
            (the end of its log quoted).
    """
    ids = np.asarray(blocks, dtype=np.int64)
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] < 2:
        raise ValueError(f"blocks must be [n_blocks, seq_len >= 2] token ids, got {ids.shape}")
    with tempfile.TemporaryDirectory(prefix="slimforge-gguf-eval-") as tmp:
        blocks_file = Path(tmp) / "blocks.npy"
        np.save(blocks_file, ids)
        argv = [sys.executable, "-c", _SCRIPT, str(path), str(blocks_file), str(n_threads)]
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace", check=False)
    if done.returncode != 0:
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        tail = "\n".join(lines[-_LOG_LINES:])
        raise RuntimeError(
            f"llama.cpp could not score {Path(path).name} (exit status {done.returncode}):\n{tail}"
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(np.exp(result["nll"] / result["predictions"]))
