"""Tiny random models saved as Hugging Face folders: the models of the job tests and of
``bench/load.py`` (a job the worker finishes in about a second).

``tiny_llama`` and ``char_tokenizer`` are also the compression tests' base model and tokenizer
(re-exported by ``tests/compression/helpers.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

__all__ = ["VOCAB", "char_tokenizer", "save_tiny_llama", "tiny_llama"]

VOCAB = 256


def tiny_llama(seed: int = 0, layers: int = 2) -> LlamaForCausalLM:
    """A Llama (2 layers unless told) with GQA and tied embeddings."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    return LlamaForCausalLM(cfg).eval()


def char_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-ish character tokenizer: printable ASCII c -> ord(c) (ids 32..126), specials 0..2."""
    vocab = {f"<x{i}>": i for i in range(VOCAB)}
    for i in range(32, 127):
        vocab[chr(i)] = i
        del vocab[f"<x{i}>"]
    vocab.update({"<unk>": 0, "<s>": 1, "</s>": 2})
    for i in range(3):
        del vocab[f"<x{i}>"]
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def save_tiny_llama(folder: Path, *, seed: int = 0, layers: int = 2) -> Path:
    """A Llama (2 layers unless told; GQA, tied embeddings) with random weights, saved."""
    tiny_llama(seed, layers).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder
