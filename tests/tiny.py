"""Tiny random models saved as Hugging Face folders, for job tests (built by the
compression tests' helpers)."""

from __future__ import annotations

from pathlib import Path

from tests.compression.helpers import char_tokenizer, tiny_llama


def save_tiny_llama(folder: Path, *, seed: int = 0, layers: int = 2) -> Path:
    """A Llama (2 layers unless told; GQA, tied embeddings) with random weights, saved."""
    tiny_llama(seed, layers).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder
