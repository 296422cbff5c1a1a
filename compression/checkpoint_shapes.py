"""Parameter counts and Linear shapes read from checkpoint files, without torch.

The API uses this to check a job's target before queueing it: safetensors headers (8-byte
length + JSON) and GGUF tensor tables hold every tensor's shape, so the planner can tell the
reachable range of a local model in milliseconds, with the same numbers the worker will see
after loading it. Formats or architectures not understood here return None: the worker then
checks the target when it loads the model.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from slimforge.compression.planning import LinearShape

__all__ = ["CheckpointShapes", "read_checkpoint_shapes"]

_EXCLUDED = {"lm_head", "embed_out", "wte", "embed_tokens"}
# GGUF tensor names of llama-family blocks → the transformers module they become.
_GGUF_LINEARS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GGUF_ARCHITECTURES = {"llama", "mistral", "qwen2"}
_GGUF_BLOCK = re.compile(r"^blk\.(\d+)\.(\w+)\.weight$")


@dataclass(frozen=True)
class CheckpointShapes:
    """Unique parameter count of the whole model and its factorisable Linear shapes."""

    total_params: int
    linears: list[LinearShape]


def read_checkpoint_shapes(
    folder: Path, *, gguf_file: str | None, target_modules: Sequence[str]
) -> CheckpointShapes | None:
    """Shapes of a local model folder (safetensors) or GGUF file; None if not understood."""
    if gguf_file is not None:
        return _gguf_shapes(folder / gguf_file, set(target_modules))
    return _safetensors_shapes(folder, set(target_modules))


def _safetensors_header(path: Path) -> dict[str, dict[str, object]]:
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header: dict[str, dict[str, object]] = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header


def _safetensors_shapes(folder: Path, targets: set[str]) -> CheckpointShapes | None:
    files = sorted(folder.glob("*.safetensors"))
    config_path = folder / "config.json"
    if not files or not config_path.is_file():
        return None
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if any(int(config.get(k) or 0) > 1 for k in ("num_local_experts", "num_experts")):
        # Mixture-of-experts checkpoints store experts under names that differ from the modules
        # the worker factorises (w1/w2/w3 per expert vs. fused gate_up_proj): let it check.
        return None
    shapes: dict[str, list[int]] = {}
    for path in files:
        for name, entry in _safetensors_header(path).items():
            shapes[name] = [int(d) for d in entry["shape"]]  # type: ignore[attr-defined]
    total = sum(math.prod(s) for s in shapes.values())
    # A tied head saved anyway is the same parameter as the embedding: count it once.
    tied = config.get("tie_word_embeddings", True)
    if (
        tied
        and "lm_head.weight" in shapes
        and any(n.endswith("embed_tokens.weight") for n in shapes)
    ):
        total -= math.prod(shapes["lm_head.weight"])
    transposed = config.get("model_type") == "gpt2"  # GPT-2's Conv1D stores in x out
    linears = []
    for name, shape in shapes.items():
        if not name.endswith(".weight") or len(shape) != 2:
            continue
        module = name.removesuffix(".weight")
        parts = module.split(".")
        if parts[-1] not in targets or parts[-1] in _EXCLUDED:
            continue
        if not any(p.isdigit() for p in parts[:-1]):
            continue
        out_f, in_f = (shape[1], shape[0]) if transposed else (shape[0], shape[1])
        linears.append(LinearShape(module, in_f, out_f, f"{module}.bias" in shapes))
    return CheckpointShapes(total, linears)


def _gguf_shapes(path: Path, targets: set[str]) -> CheckpointShapes | None:
    try:
        from gguf import GGUFReader
    except ImportError:  # the API image may leave gguf out: the worker checks instead
        return None
    reader = GGUFReader(path)
    arch_field = reader.fields.get("general.architecture")
    if arch_field is None:
        return None
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    if arch not in _GGUF_ARCHITECTURES:
        return None
    names = {t.name for t in reader.tensors}
    total = sum(int(t.n_elements) for t in reader.tensors)
    linears = []
    for tensor in reader.tensors:
        match = _GGUF_BLOCK.match(tensor.name)
        if match is None or match.group(2) not in _GGUF_LINEARS:
            continue
        module = f"model.layers.{match.group(1)}.{_GGUF_LINEARS[match.group(2)]}"
        if module.rsplit(".", 1)[-1] not in targets:
            continue
        in_f, out_f = (int(d) for d in tensor.shape[:2])  # GGUF lists ne0 (= in) first
        bias = tensor.name.removesuffix(".weight") + ".bias" in names
        linears.append(LinearShape(module, in_f, out_f, bias))
    return CheckpointShapes(total, linears)
