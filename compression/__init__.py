"""slimforge's compression library: make a causal LM smaller, evaluate it, export it.

Usable without the service::

    from compression import LillamaConfig, ModelSource, SvdConfig, compress, load_model

Importing this package imports no torch: the names below are loaded on first use, so the API
can import ``compression.configs`` / ``compression.planning`` / ``compression.progress``
(all torch-free) without pulling in the ML stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> module that defines it (imported lazily by __getattr__ below).
_EXPORTS = {
    "ArtifactFile": "compression.export",
    "Cancelled": "compression.progress",
    "LillamaConfig": "compression.configs",
    "LinearShape": "compression.planning",
    "LowRankLinear": "compression.lowrank",
    "MethodConfig": "compression.configs",
    "MethodResult": "compression.methods.base",
    "ModelSource": "compression.loading",
    "NullReporter": "compression.progress",
    "RankPlan": "compression.planning",
    "Reporter": "compression.progress",
    "SvdConfig": "compression.configs",
    "TextSource": "compression.data",
    "UnreachableTargetError": "compression.planning",
    "artifact_size": "compression.evaluation",
    "available_methods": "compression.methods",
    "collect_input_grams": "compression.calibration",
    "compress": "compression.core",
    "count_parameters": "compression.lowrank",
    "export_artifact": "compression.export",
    "export_gguf": "compression.gguf_export",
    "find_linears": "compression.lowrank",
    "get_method": "compression.methods",
    "gguf_file_type": "compression.gguf_export",
    "gguf_supported": "compression.gguf_export",
    "linear_shapes": "compression.lowrank",
    "load_model": "compression.loading",
    "load_texts": "compression.data",
    "perplexity": "compression.evaluation",
    "plan_uniform": "compression.planning",
    "render_model_card": "compression.model_card",
    "resolve_target": "compression.planning",
    "token_blocks": "compression.data",
}

# Kept literal so linters see the re-exports; test_package checks it matches _EXPORTS.
__all__ = [
    "ArtifactFile",
    "Cancelled",
    "LillamaConfig",
    "LinearShape",
    "LowRankLinear",
    "MethodConfig",
    "MethodResult",
    "ModelSource",
    "NullReporter",
    "RankPlan",
    "Reporter",
    "SvdConfig",
    "TextSource",
    "UnreachableTargetError",
    "artifact_size",
    "available_methods",
    "collect_input_grams",
    "compress",
    "count_parameters",
    "export_artifact",
    "export_gguf",
    "find_linears",
    "get_method",
    "gguf_file_type",
    "gguf_supported",
    "linear_shapes",
    "load_model",
    "load_texts",
    "perplexity",
    "plan_uniform",
    "render_model_card",
    "resolve_target",
    "token_blocks",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'compression' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static names for type checkers and IDEs
    from compression.calibration import collect_input_grams
    from compression.configs import LillamaConfig, MethodConfig, SvdConfig
    from compression.core import compress
    from compression.data import TextSource, load_texts, token_blocks
    from compression.evaluation import artifact_size, perplexity
    from compression.export import ArtifactFile, export_artifact
    from compression.gguf_export import export_gguf, gguf_file_type, gguf_supported
    from compression.loading import ModelSource, load_model
    from compression.lowrank import LowRankLinear, count_parameters, find_linears, linear_shapes
    from compression.methods import available_methods, get_method
    from compression.methods.base import MethodResult
    from compression.model_card import render_model_card
    from compression.planning import (
        LinearShape,
        RankPlan,
        UnreachableTargetError,
        plan_uniform,
        resolve_target,
    )
    from compression.progress import Cancelled, NullReporter, Reporter
