"""A local model's shapes read from its weight files and config, without torch.

The API uses this to check a job against the model before queueing it: safetensors headers
(8-byte length + JSON) and GGUF tensor tables hold every tensor's shape, so the planner can tell
the reachable range of a local model in milliseconds, with the same numbers the worker will see
after loading it. Only the files transformers would load are read (:func:`weight_files`), so a
stray ``consolidated.safetensors`` next to the shards is not counted twice. Formats or
architectures not understood here return None: the worker then checks when it loads the model.

Terms: the *weight files* are the model's own files; a *checkpoint* in slimforge is only the
resumable state a running job saves (``compression/distill/checkpoints.py``, ``kd_resume.py``).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimforge.compression.planning import LinearShape

__all__ = ["ModelShapes", "read_model_shapes", "weight_files"]

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
# transformers' names (``utils/constants``): the shard index wins over the single file.
SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"


@dataclass(frozen=True)
class ModelShapes:
    """What a job can be checked against before the model is loaded.

    ``total_params`` counts unique parameters of the whole model (tied weights once);
    ``linears`` are the 2-D weights inside decoder blocks (out x in, embeddings and head left
    out), every name, not only a method's targets; ``config`` is the model's ``config.json``
    (empty for GGUF files).
    """

    total_params: int
    linears: list[LinearShape]
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def max_positions(self) -> int | None:
        """Longest sequence the position embeddings cover, in tokens (None: not stated)."""
        for key in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = self.config.get(key)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @property
    def vocab_size(self) -> int | None:
        """Rows of the output head (tokens the model scores), when the config states it."""
        value = self.config.get("vocab_size")
        return value if isinstance(value, int) and value > 0 else None


def weight_files(folder: Path, *, gguf_file: str | None) -> list[Path]:
    """The files transformers' ``from_pretrained`` reads the weights from, plus ``config.json``.

    A GGUF file alone; else the shards the safetensors index's ``weight_map`` names; else
    ``model.safetensors``. Other ``*.safetensors`` (Mistral's ``consolidated.safetensors``) are
    ignored, as transformers ignores them. Raises OSError / ValueError on an unreadable index.
    """
    if gguf_file is not None:
        return [folder / gguf_file]
    config = folder / "config.json"
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}
        shards = sorted({str(name) for name in weight_map.values()})
        return [config, index, *(folder / name for name in shards)]
    return [config, folder / SAFETENSORS_SINGLE]


def read_model_shapes(folder: Path, *, gguf_file: str | None) -> ModelShapes | None:
    """Shapes of a local model folder (safetensors) or GGUF file; None if not understood."""
    if gguf_file is not None:
        return _gguf_shapes(folder / gguf_file)
    return _safetensors_shapes(folder)


def _safetensors_header(path: Path) -> dict[str, dict[str, object]]:
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header: dict[str, dict[str, object]] = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header


def _safetensors_shapes(folder: Path) -> ModelShapes | None:
    config_path, *files = weight_files(folder, gguf_file=None)
    files = [f for f in files if f.suffix == ".safetensors"]
    if not config_path.is_file() or not files or not all(f.is_file() for f in files):
        return None
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        return None
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
        if parts[-1] in _EXCLUDED or not any(p.isdigit() for p in parts[:-1]):
            continue
        out_f, in_f = (shape[1], shape[0]) if transposed else (shape[0], shape[1])
        linears.append(LinearShape(module, in_f, out_f, f"{module}.bias" in shapes))
    return ModelShapes(total, linears, config)


def _gguf_shapes(path: Path) -> ModelShapes | None:
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
        in_f, out_f = (int(d) for d in tensor.shape[:2])  # GGUF lists ne0 (= in) first
        bias = tensor.name.removesuffix(".weight") + ".bias" in names
        linears.append(LinearShape(module, in_f, out_f, bias))
    return ModelShapes(total, linears)
