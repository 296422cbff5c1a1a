"""The top-level entry point: compress a model with a method from the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimforge.compression.configs import MethodConfig
from slimforge.compression.distill.streaming import placed
from slimforge.compression.methods import MethodResult, get_method
from slimforge.compression.progress import NullReporter, Reporter

__all__ = ["compress"]


def compress(
    model: nn.Module,
    method_config: MethodConfig,
    *,
    blocks: torch.Tensor,
    target_params: int,
    reporter: Reporter | None = None,
    workdir: Path | None = None,
    device: str | torch.device | None = None,
) -> MethodResult:
    """Compress ``model`` in place with the method named by ``method_config.name``.

    ``blocks`` are calibration tokens [n_blocks, seq_len]; ``target_params`` counts unique
    parameters of the whole model. Raises ``UnreachableTargetError`` before any expensive work.
    ``workdir`` is a scratch folder kept across attempts of one job: methods that checkpoint
    (``lillama``) resume from it. ``device`` is where to compute when it is not where the
    model is (``lillama`` then streams one layer at a time onto it).
    """
    method = get_method(method_config.name)
    reporter = reporter or NullReporter()
    common: dict[str, Any] = {
        "blocks": blocks,
        "target_params": target_params,
        "reporter": reporter,
        "workdir": workdir,
    }
    if device is not None and getattr(method, "streams_layers", False):
        streaming: Any = method  # its run() takes device= (see Method.run)
        return streaming.run(model, method_config, device=device, **common)
    # Other methods run where the model is: move it there for the run, then hand it back.
    with placed(model, None if device is None else torch.device(device)):
        return method.run(model, method_config, **common)
