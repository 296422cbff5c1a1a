"""The torch side of a method: the base class every implementation extends, its result, and
:func:`compress`, the library's entry point."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from slimforge.compression.distill.streaming import placed
from slimforge.compression.methods.registry import get_method
from slimforge.compression.parameters import MethodParameters
from slimforge.compression.planning import RankPlan
from slimforge.compression.progress import NullReporter, Reporter

__all__ = ["Method", "MethodResult", "compress"]

C = TypeVar("C", bound=MethodParameters)


@dataclass
class MethodResult:
    """What a method did to the model (which it modified in place)."""

    ranks: dict[str, int]
    params_before: int
    params_after: int
    tokens_used: int
    details: dict[str, Any] = field(default_factory=dict)


class Method(Generic[C]):
    """A compression method: modifies ``model`` in place to about ``target_params`` parameters.

    Implementations raise ``UnreachableTargetError`` before any expensive work (plan from shapes
    first, then calibrate), call ``reporter.check_cancelled()`` between units of work and send at
    most about one ``reporter.event`` per decoder block or batch. The registry sets ``name`` and
    ``config_class`` from the registration (``registry.register_method``).
    """

    name: str = ""
    config_class: type[C]
    # True: ``run`` takes ``device=`` and computes there one decoder layer at a time while the
    # model stays where it is (the worker then keeps the model in CPU memory). compress() and
    # the worker both read this.
    streams_layers: bool = False

    def parameters(self, config: Any) -> C:
        """``config`` as this method's parameter class (a dict or the model itself)."""
        if isinstance(config, self.config_class):
            return config
        return self.config_class.model_validate(config)

    def plan(self, model: nn.Module, config: Any, *, target_params: int) -> RankPlan:
        """What ``run`` would do, from shapes only (cheap); raises ``UnreachableTargetError``."""
        return self._plan(model, self.parameters(config), target_params)

    def run(
        self,
        model: nn.Module,
        config: Any,
        *,
        blocks: torch.Tensor,
        target_params: int,
        reporter: Reporter | None = None,
        workdir: Path | None = None,
        device: torch.device | None = None,
    ) -> MethodResult:
        """Compress ``model`` in place and describe the result. ``workdir`` (optional) is a
        scratch folder that survives a crashed attempt of the same job, for checkpoints.
        ``device`` is only used by methods with ``streams_layers``."""
        return self._compress(
            model,
            self.parameters(config),
            blocks=blocks,
            target_params=target_params,
            reporter=reporter or NullReporter(),
            workdir=workdir,
            device=device,
        )

    # What an implementation provides: the two steps above on its own parameter class.
    def _plan(self, model: nn.Module, config: C, target_params: int) -> RankPlan:
        raise NotImplementedError

    def _compress(
        self,
        model: nn.Module,
        config: C,
        *,
        blocks: torch.Tensor,
        target_params: int,
        reporter: Reporter,
        workdir: Path | None,
        device: torch.device | None,
    ) -> MethodResult:
        raise NotImplementedError


def compress(
    model: nn.Module,
    method_config: MethodParameters,
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
    model is: a method that ``streams_layers`` moves one layer at a time onto it; any other
    runs there and hands the model back where it was.
    """
    method = get_method(method_config.name)
    run_on = None if device is None else torch.device(device)
    common: dict[str, Any] = {
        "blocks": blocks,
        "target_params": target_params,
        "reporter": reporter or NullReporter(),
        "workdir": workdir,
    }
    if method.streams_layers:
        return method.run(model, method_config, device=run_on, **common)
    with placed(model, run_on):
        return method.run(model, method_config, **common)
