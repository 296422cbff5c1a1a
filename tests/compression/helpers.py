"""Helpers for the compression tests: tiny random models, a character tokenizer, subprocesses."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    MambaConfig,
    MambaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
)

# The base model and tokenizer live with the job tests' (bench.tiny); re-exported here.
from bench.tiny import VOCAB as VOCAB
from bench.tiny import char_tokenizer as char_tokenizer
from bench.tiny import tiny_llama as tiny_llama

# Imports the isolated loader blocks: an artifact must load with torch + transformers only.
BLOCKED = ("compression", "app", "worker", "slimforge")


def tiny_qwen2(seed: int = 0) -> Qwen2ForCausalLM:
    """2-layer Qwen2: q/k/v carry biases, embeddings untied."""
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # random init leaves biases at zero; make them matter
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.5)
    return model


def tiny_mistral(seed: int = 0) -> MistralForCausalLM:
    """2-layer Mistral with GQA."""
    torch.manual_seed(seed)
    cfg = MistralConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        sliding_window=None,
    )
    return MistralForCausalLM(cfg).eval()


def tiny_phi(seed: int = 0) -> PhiForCausalLM:
    """2-layer Phi: biases everywhere, a ``dense`` output projection, fc1/fc2 MLP."""
    torch.manual_seed(seed)
    cfg = PhiConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=VOCAB,
        partial_rotary_factor=0.5,
    )
    return PhiForCausalLM(cfg).eval()


def _gemma_like(config: GemmaConfig | Gemma2Config, model_cls: Any) -> Any:
    model = model_cls(config).eval()
    with torch.no_grad():  # (1 + weight) norms start at weight 0: make them differ
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.3)
    return model


_GEMMA_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": VOCAB,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}


def tiny_gemma(seed: int = 0) -> GemmaForCausalLM:
    """2-layer Gemma: embeddings scaled by sqrt(hidden_size), (1 + weight) RMSNorms, tied."""
    torch.manual_seed(seed)
    model: GemmaForCausalLM = _gemma_like(GemmaConfig(**_GEMMA_SHAPE), GemmaForCausalLM)
    return model


def tiny_gemma2(seed: int = 0) -> Gemma2ForCausalLM:
    """2-layer Gemma 2: four norms per block, logit soft-capping, alternating sliding window."""
    torch.manual_seed(seed)
    config = Gemma2Config(**_GEMMA_SHAPE, sliding_window=8)
    model: Gemma2ForCausalLM = _gemma_like(config, Gemma2ForCausalLM)
    return model


def tiny_qwen2_moe(seed: int = 0) -> Qwen2MoeForCausalLM:
    """2-layer Qwen2-MoE: routed experts plus a gated shared expert."""
    torch.manual_seed(seed)
    cfg = Qwen2MoeConfig(
        hidden_size=64,
        intermediate_size=96,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_experts=4,
        num_experts_per_tok=2,
        vocab_size=VOCAB,
    )
    return Qwen2MoeForCausalLM(cfg).eval()


def tiny_mamba(seed: int = 0) -> MambaForCausalLM:
    """2-layer Mamba (no attention): in_proj / x_proj / dt_proj / out_proj around a scan."""
    torch.manual_seed(seed)
    cfg = MambaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        vocab_size=VOCAB,
        state_size=8,
        expand=2,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    return MambaForCausalLM(cfg).eval()


def tiny_mixtral(seed: int = 0) -> MixtralForCausalLM:
    """2-layer Mixtral: 4 experts, top-2 routing; transformers 5 fuses the experts' weights."""
    torch.manual_seed(seed)
    cfg = MixtralConfig(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        vocab_size=VOCAB,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    return MixtralForCausalLM(cfg).eval()


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    """2-layer GPT-2 (Conv1D layers, weights stored in x out)."""
    torch.manual_seed(seed)
    cfg = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, vocab_size=VOCAB)
    return GPT2LMHeadModel(cfg).eval()


def correlated_blocks(n_blocks: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """Token blocks with structure (a repeating drifting pattern), not uniform noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.arange(seq_len)[None, :] * 7 + torch.randint(0, 50, (n_blocks, 1), generator=g)
    noise = torch.randint(0, 3, (n_blocks, seq_len), generator=g)
    return ((base + noise) % (VOCAB - 3) + 3).long()


def run_isolated(script: str, tmp_path: Path, timeout: int = 120) -> dict[str, Any]:
    """Run ``script`` in a fresh Python where slimforge's packages cannot be imported.

    The script prints ``RESULT:`` and a JSON object; the object is returned parsed. Dynamic
    modules are cached under ``tmp_path`` so nothing is left in the user's Hugging Face cache.
    """
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in BLOCKED)
    env = dict(os.environ)
    env.update(
        HF_HOME=str(tmp_path / "hf_home"),
        HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
        HF_HUB_OFFLINE="1",
        PYTHONPATH="",
    )
    proc = subprocess.run(
        [sys.executable, "-c", prelude + script],
        cwd=tmp_path,  # not the repo root, so the packages are not importable from the cwd
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"isolated script failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    # Other output (transformers' trust prompt) may share the line: take what follows the marker.
    marker = "RESULT:"
    assert marker in proc.stdout, f"no {marker} line in:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.rsplit(marker, 1)[1].strip().splitlines()[0])


MC_TASK = "tiny_sums"


def mc_task_docs(n: int = 16) -> list[dict[str, Any]]:
    """Four answers of unrelated lengths per question (so acc and acc_norm differ)."""
    words = ["red", "a green one", "blue", "pale yellow", "black", "white or grey", "tan", "teal"]
    docs = []
    for i in range(n):
        rng = random.Random(i)
        docs.append(
            {
                "question": f"Q{i}: the colour of item {i} is",
                "choices": rng.sample(words, 4),
                "label": rng.randrange(4),
            }
        )
    return docs


def write_mc_task(folder: Path, docs: list[dict[str, Any]], **overrides: Any) -> Path:
    """A local lm-evaluation-harness multiple-choice task (YAML + JSONL) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{overrides.get('task', MC_TASK)}.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    config = {
        "task": MC_TASK,
        "dataset_path": "json",
        # datasets' Arrow cache goes under the folder too: tests leave nothing behind.
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(folder / "hf")},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
        **overrides,
    }
    (folder / f"{config['task']}.yaml").write_text(yaml.safe_dump(config))
    return folder


# transformers' Llama/Mistral module names -> the names of Mistral's own consolidated format.
_MISTRAL_NAMES = (
    ("model.", ""),
    ("self_attn.q_proj", "attention.wq"),
    ("self_attn.k_proj", "attention.wk"),
    ("self_attn.v_proj", "attention.wv"),
    ("self_attn.o_proj", "attention.wo"),
    ("mlp.gate_proj", "feed_forward.w1"),
    ("mlp.down_proj", "feed_forward.w2"),
    ("mlp.up_proj", "feed_forward.w3"),
    ("post_attention_layernorm", "ffn_norm"),
    ("input_layernorm", "attention_norm"),
    ("embed_tokens", "tok_embeddings"),
    ("lm_head", "output"),
)


def save_consolidated(model: torch.nn.Module, path: Path) -> None:
    """Every weight again under Mistral's own names, as ``consolidated.safetensors`` beside the
    Hugging Face files of Mistral's repositories (which transformers does not load)."""
    from safetensors.torch import save_file

    state = {}
    for name, tensor in model.state_dict().items():
        for old, new in _MISTRAL_NAMES:
            name = name.replace(old, new)
        state[name] = tensor.clone().contiguous()
    save_file(state, str(path))
