"""A worker-side cache of text sampled from a model, so a later job on the same model does not
sample it again (sampling is the slow part of synthetic calibration on a CPU).

One file per sampling setup (``<folder>/synthetic/<key digest>.safetensors``): the sampled token
stream (int32) and how many rounds made it. The stream is built round by round, each round
seeded on its own (``slimforge.compression.synthetic``), so the text for fewer tokens is a
prefix of the text for more: a job that needs fewer tokens takes a prefix, one that needs more
samples only the rounds that are missing and extends the file.

The key holds everything the tokens depend on: a fingerprint of the model's weights, of the
tokenizer (vocabulary and chat template), the prompt list version, seed, seq_len, temperature,
rows per round, device type and dtype. Writes are atomic (a temporary file renamed into place);
a longer stream already written by another worker is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

__all__ = ["SAMPLER_VERSION", "StreamCache", "model_fingerprint", "tokenizer_fingerprint"]

# Bump when the sampling algorithm changes what a key's stream holds.
SAMPLER_VERSION = 1
_SAMPLE_VALUES = 4096  # values read per tensor for the fingerprint


@torch.no_grad()
def model_fingerprint(model: nn.Module) -> str:
    """Hex sha256 of the model's weights, sampled: per parameter its name, shape, dtype, the
    float64 sum of its values and up to 4,096 evenly spaced values. Any fine-tune or other
    checkpoint changes it; it reads every value once (the sum) but copies only the sample,
    so a model on a GPU is fingerprinted there."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // _SAMPLE_VALUES)
        sample = flat[::step][:_SAMPLE_VALUES].to("cpu", torch.float32)
        total = float(flat.sum(dtype=torch.float64))
        digest.update(f"{name}|{tuple(param.shape)}|{param.dtype}|{total!r}|".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hex sha256 of the tokenizer's vocabulary (token → id), special tokens and chat
    template: what turns the prompts into ids and ids into the stream."""
    vocab = sorted(tokenizer.get_vocab().items())
    specials = [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id]
    template = getattr(tokenizer, "chat_template", None)
    blob = json.dumps([vocab, specials, template], ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class StreamCache:
    """The cache file of one sampling setup; ``key`` is what the stream depends on."""

    path: Path
    key: dict[str, Any]

    @classmethod
    def for_setup(cls, folder: Path, **key: Any) -> StreamCache:
        """The cache entry under ``folder/synthetic`` for the setup described by ``key``
        (JSON-serialisable values; ``SAMPLER_VERSION`` is added)."""
        full = {"sampler_version": SAMPLER_VERSION, **key}
        digest = hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:32]
        return cls(path=Path(folder) / "synthetic" / f"{digest}.safetensors", key=full)

    def load(self) -> tuple[torch.Tensor, int]:
        """(stream LongTensor [tokens], rounds) stored for this key; an empty stream and 0
        rounds when there is none, or the file is unreadable or holds another key."""
        empty = (torch.zeros(0, dtype=torch.long), 0)
        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
                if json.loads(meta.get("key", "null")) != self.key:
                    return empty
                return f.get_tensor("stream").long(), int(meta["rounds"])
        except (OSError, ValueError, KeyError, RuntimeError):  # absent, partial or foreign
            return empty

    def save(self, stream: torch.Tensor, rounds: int) -> None:
        """Store ``stream`` [tokens] (int ids) made by ``rounds`` rounds, unless the file
        already holds more rounds. Raises OSError when the folder cannot be written."""
        if self.load()[1] >= rounds:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file(
                {"stream": stream.to("cpu", torch.int32).contiguous()},
                tmp,
                metadata={"key": json.dumps(self.key), "rounds": str(rounds)},
            )
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
