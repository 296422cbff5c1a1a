"""Helpers for the GGUF tests: greedy decoding and perplexity in transformers and in llama.cpp."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from llama_cpp import Llama
from transformers import LlamaConfig, LlamaForCausalLM

CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus"


def train_sentencepiece(dest: Path, vocab_size: int) -> bytes:
    """A real SentencePiece tokenizer trained on the calibration text, written as
    ``dest/tokenizer.model``; returns the serialised model.

    BPE with byte fallback, like Llama 2's: llama.cpp's SPM tokenizer merges by score, which is
    SentencePiece's BPE encoding (a unigram model would be tokenised differently).
    """
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        input=str(CORPUS / "calibration.txt"),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    (dest / "tokenizer.model").write_bytes(buffer.getvalue())
    return buffer.getvalue()


def _two_layer_config(vocab_size: int, *, hidden: int, **extra: float) -> LlamaConfig:
    """A 2-layer GQA Llama config (MLP twice as wide as ``hidden``, untied head, BOS 1, EOS 2)."""
    return LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        **extra,
    )


def tiny_gguf_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer Llama whose rows fit llama.cpp's k-quant super-blocks (256 values).

    Weights are rounded to float16 so that the f16 GGUF holds exactly the same numbers. A wide
    output head (std 0.3) peaks the next-token distribution as a trained model's is, so that greedy
    decoding is decided by the weights, not by float rounding.
    """
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_two_layer_config(vocab_size, hidden=256)).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.3)
    return model.half().float()


@torch.no_grad()
def hf_greedy(model: torch.nn.Module, prompt: list[int], n_new: int) -> list[int]:
    """``n_new`` argmax tokens after ``prompt`` (no EOS stop), with the KV cache."""
    out = model(input_ids=torch.tensor([prompt]), use_cache=True)
    tokens: list[int] = []
    for _ in range(n_new):
        tokens.append(int(out.logits[0, -1].argmax()))
        nxt = torch.tensor([[tokens[-1]]])
        out = model(input_ids=nxt, cache=out.cache, use_cache=True)
    return tokens


@torch.no_grad()
def round_matrices_to_f16(model: torch.nn.Module) -> None:
    """Round ``model``'s matrices (every parameter of 2 or more dimensions) to float16 values in
    place, as llama.cpp's converter writes them into an f16 GGUF (norm vectors stay float32)."""
    for p in model.parameters():
        if p.dim() >= 2:
            p.copy_(p.half().float())


@torch.no_grad()
def hf_logits(model: torch.nn.Module, tokens: list[int]) -> np.ndarray:
    """Logits [len(tokens), vocab] of a transformers model, float32."""
    return model(input_ids=torch.tensor([tokens])).logits[0].float().numpy()


def llama_greedy(llm: Llama, prompt: list[int], n_new: int) -> list[int]:
    """``n_new`` argmax tokens after ``prompt`` with llama.cpp (a ``Llama(logits_all=True)``)."""
    llm.reset()
    llm.eval(prompt)
    tokens: list[int] = []
    for _ in range(n_new):
        tokens.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([tokens[-1]])
    return tokens


def llama_logits(llm: Llama, tokens: list[int]) -> np.ndarray:
    """Logits [len(tokens), vocab] of llama.cpp for ``tokens`` (n_ctx must hold them)."""
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float64)


def top2_gaps(logits: np.ndarray) -> np.ndarray:
    """The gap between the two largest logits of each row [steps, vocab] -> [steps]."""
    top2 = np.sort(logits, axis=-1)[:, -2:]
    return np.asarray(top2[:, 1] - top2[:, 0])


def decided_steps(logits: np.ndarray, margin: float) -> int:
    """Leading greedy steps ([steps, vocab] logits) whose top-2 gap exceeds ``margin``: there
    another implementation within ``margin / 2`` of these logits must pick the same token."""
    close = top2_gaps(logits) < margin
    return int(close.argmax()) if close.any() else len(logits)


def perplexity_from_logits(logits: np.ndarray, tokens: list[int]) -> float:
    """exp(mean next-token NLL in nats) of ``tokens[1:]`` under ``logits[:-1]`` ([T, vocab])."""
    z = logits[:-1].astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    nll = -log_probs[np.arange(len(tokens) - 1), tokens[1:]]
    return float(np.exp(nll.mean()))


def save_gguf_ready_llama(folder: Path, *, vocab_size: int = 512, seed: int = 0) -> Path:
    """A tiny random Llama (2 layers, hidden 64, GQA) with a real SentencePiece BPE tokenizer
    as transformers saves Llama's (``tokenizer.json``: BPE with byte fallback), which llama.cpp's
    converter takes (it refuses the character tokenizer of ``bench.tiny``). Weights are float32
    values that float16 holds exactly (as in :func:`tiny_gguf_llama`): a pruned copy's f16 GGUF
    then has the very same weights."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer
    from transformers.convert_slow_tokenizer import generate_merges

    folder.mkdir(parents=True, exist_ok=True)
    sp = spm.SentencePieceProcessor(model_proto=train_sentencepiece(folder, vocab_size))
    (folder / "tokenizer.model").unlink()  # the job saves what transformers loads: the JSON
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    torch.manual_seed(seed)
    cfg = _two_layer_config(
        vocab_size,
        hidden=64,
        # Weights 10x the default and a wide output head: the blocks (not the embedding's
        # residual path) decide the peaked next-token distribution, as in a trained model, so
        # that pruning or quantising moves the perplexity measurably (a 25 % cut of one MLP:
        # about +10 %; with the default init, +0.003 %).
        initializer_range=0.2,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.3)
    model.half().float().save_pretrained(folder)
    LlamaTokenizer(vocab=vocab, merges=generate_merges(vocab)).save_pretrained(folder)
    return folder
