"""slimforge's compression library: make a causal LM smaller, evaluate it, export it.

Usable without the service::

    from slimforge.compression import LillamaConfig, ModelSource, SvdConfig, compress, load_model

Importing this package imports no torch: the names below are loaded on first use, so the API
can import ``slimforge.compression.configs`` / ``slimforge.compression.methods`` (the registry)
/ ``slimforge.compression.planning`` / ``slimforge.compression.progress`` /
``slimforge.compression.model_shapes`` (all torch-free) without pulling in the ML stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> module that defines it (imported lazily by __getattr__ below).
_EXPORTS = {
    "ArtifactFile": "slimforge.compression.export",
    "Cancelled": "slimforge.compression.progress",
    "EvaluationProtocol": "slimforge.compression.evaluation",
    "FidelityResult": "slimforge.compression.evaluation",
    "LillamaConfig": "slimforge.compression.configs",
    "LinearShape": "slimforge.compression.planning",
    "LowRankLinear": "slimforge.compression.lowrank",
    "MethodConfig": "slimforge.compression.configs",
    "MethodResult": "slimforge.compression.methods.method",
    "ModelSource": "slimforge.compression.loading",
    "NullReporter": "slimforge.compression.progress",
    "RankPlan": "slimforge.compression.planning",
    "Reporter": "slimforge.compression.progress",
    "SvdConfig": "slimforge.compression.configs",
    "TeacherReference": "slimforge.compression.evaluation",
    "TextSource": "slimforge.compression.data",
    "UnreachableTargetError": "slimforge.compression.planning",
    "artifact_size": "slimforge.compression.evaluation",
    "available_methods": "slimforge.compression.methods",
    "collect_input_grams": "slimforge.compression.calibration",
    "compress": "slimforge.compression.methods.method",
    "count_parameters": "slimforge.compression.lowrank",
    "export_artifact": "slimforge.compression.export",
    "export_gguf": "slimforge.compression.gguf_export",
    "fidelity": "slimforge.compression.evaluation",
    "fidelity_from_reference": "slimforge.compression.evaluation",
    "find_linears": "slimforge.compression.lowrank",
    "general_calibration_blocks": "slimforge.compression.general_calibration",
    "gguf_file_type": "slimforge.compression.gguf_export",
    "gguf_supported": "slimforge.compression.gguf_export",
    "get_method": "slimforge.compression.methods",
    "linear_shapes": "slimforge.compression.lowrank",
    "load_model": "slimforge.compression.loading",
    "load_texts": "slimforge.compression.data",
    "perplexity": "slimforge.compression.evaluation",
    "plan_uniform": "slimforge.compression.planning",
    "render_model_card": "slimforge.compression.model_card",
    "resolve_target": "slimforge.compression.planning",
    "teacher_reference": "slimforge.compression.evaluation",
    "token_blocks": "slimforge.compression.data",
}

# Kept literal so linters see the re-exports; test_package checks it matches _EXPORTS.
__all__ = [
    "ArtifactFile",
    "Cancelled",
    "EvaluationProtocol",
    "FidelityResult",
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
    "TeacherReference",
    "TextSource",
    "UnreachableTargetError",
    "artifact_size",
    "available_methods",
    "collect_input_grams",
    "compress",
    "count_parameters",
    "export_artifact",
    "export_gguf",
    "fidelity",
    "fidelity_from_reference",
    "find_linears",
    "general_calibration_blocks",
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
    "teacher_reference",
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
    from slimforge.compression.calibration import collect_input_grams
    from slimforge.compression.configs import LillamaConfig, MethodConfig, SvdConfig
    from slimforge.compression.data import TextSource, load_texts, token_blocks
    from slimforge.compression.evaluation import (
        EvaluationProtocol,
        FidelityResult,
        TeacherReference,
        artifact_size,
        fidelity,
        fidelity_from_reference,
        perplexity,
        teacher_reference,
    )
    from slimforge.compression.export import ArtifactFile, export_artifact
    from slimforge.compression.general_calibration import general_calibration_blocks
    from slimforge.compression.gguf_export import export_gguf, gguf_file_type, gguf_supported
    from slimforge.compression.loading import ModelSource, load_model
    from slimforge.compression.lowrank import (
        LowRankLinear,
        count_parameters,
        find_linears,
        linear_shapes,
    )
    from slimforge.compression.methods import available_methods, get_method
    from slimforge.compression.methods.method import MethodResult, compress
    from slimforge.compression.model_card import render_model_card
    from slimforge.compression.planning import (
        LinearShape,
        RankPlan,
        UnreachableTargetError,
        plan_uniform,
        resolve_target,
    )
    from slimforge.compression.progress import Cancelled, NullReporter, Reporter
