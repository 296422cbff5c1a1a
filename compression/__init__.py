"""slimforge's compression library: make a causal LM smaller, evaluate it, export it.

Usable without the service::

    from compression import compress, load_model, ModelSource
    from compression.configs import SvdConfig

``compression.configs``, ``compression.planning`` and ``compression.progress`` import no torch;
importing this package (or any other module) does.
"""

from __future__ import annotations

import torch
from torch import nn

from compression.calibration import collect_input_grams
from compression.configs import MethodConfig, SvdConfig
from compression.data import TextSource, load_texts, token_blocks
from compression.evaluation import artifact_size, perplexity
from compression.export import ArtifactFile, export_artifact, render_model_card
from compression.loading import ModelSource, load_model
from compression.lowrank import LowRankLinear, count_parameters, find_linears, linear_shapes
from compression.methods import MethodResult, available_methods, get_method
from compression.planning import (
    LinearShape,
    RankPlan,
    UnreachableTargetError,
    plan_uniform,
    resolve_target,
)
from compression.progress import Cancelled, NullReporter, Reporter

__all__ = [
    "ArtifactFile",
    "Cancelled",
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
    "find_linears",
    "get_method",
    "linear_shapes",
    "load_model",
    "load_texts",
    "perplexity",
    "plan_uniform",
    "render_model_card",
    "resolve_target",
    "token_blocks",
]


def compress(
    model: nn.Module,
    method_config: MethodConfig,
    *,
    blocks: torch.Tensor,
    target_params: int,
    reporter: Reporter | None = None,
) -> MethodResult:
    """Compress ``model`` in place with the method named by ``method_config.name``."""
    method = get_method(method_config.name)
    return method.run(
        model,
        method_config,
        blocks=blocks,
        target_params=target_params,
        reporter=reporter or NullReporter(),
    )
