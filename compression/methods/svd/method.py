"""Method ``svd``: training-free low-rank factorisation, plain or activation-whitened (SVD-LLM).

The factors are those of ``factorization/factors.py``; this module owns the rank allocation
(uniform, or by measured spectra) and the reporting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimforge.compression.calibration import collect_input_grams
from slimforge.compression.lowrank import (
    count_parameters,
    dense_weight,
    find_linears,
    linear_shapes,
)
from slimforge.compression.methods.factorization.factors import singular_values
from slimforge.compression.methods.factorization.method import (
    FactorizationMethod,
    factorize_module,
)
from slimforge.compression.methods.method import MethodResult
from slimforge.compression.methods.svd.config import SvdConfig
from slimforge.compression.planning import RankPlan
from slimforge.compression.progress import Reporter

__all__ = ["SvdMethod"]


def _block_of(name: str) -> str:
    """The decoder block prefix of a module name (``model.layers.3.mlp.up_proj`` -> ...``.3``)."""
    parts = name.split(".")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].isdigit():
            return ".".join(parts[: i + 1])
    return ""


class SvdMethod(FactorizationMethod[SvdConfig]):
    """Uniform-rank truncated SVD of every targeted Linear, optionally activation-whitened."""

    def _compress(
        self,
        model: nn.Module,
        config: SvdConfig,
        *,
        blocks: torch.Tensor,
        target_params: int,
        reporter: Reporter,
        workdir: Path | None,
        device: torch.device | None,
    ) -> MethodResult:
        """Factorise ``model``'s targeted Linears in place to about ``target_params`` parameters.

        Training-free and a few minutes at most, so it keeps no checkpoints (``workdir`` unused).
        """
        # Plan from shapes before any calibration: an unreachable target fails in milliseconds.
        plan = self._plan(model, config, target_params)
        total = plan.params_before
        grams: dict[str, torch.Tensor] = {}
        tokens = 0
        if config.allocation == "energy":
            plan, grams, tokens = self._energy_plan(
                model, config, blocks, target_params, total, reporter
            )
        names = list(plan.ranks)
        reporter.event(
            "rank plan ready",
            data={
                "modules": len(names),
                "params_before": total,
                "params_target": target_params,
                "params_planned": plan.params_after,
                "allocation": config.allocation,
            },
        )
        if config.whitening and names and not grams:
            grams, tokens = collect_input_grams(model, blocks, names, reporter=reporter)

        by_block: dict[str, list[str]] = {}
        for name in names:
            by_block.setdefault(_block_of(name), []).append(name)
        kept_energy: dict[str, float] = {}
        for index, (block, members) in enumerate(by_block.items()):
            reporter.check_cancelled()
            whiteners: dict[int, torch.Tensor] = {}  # id(shared Gram) -> S, reused by q/k/v
            for name in members:
                gram = grams.pop(name, None)  # None: an expert no token was routed to
                kept_energy[name] = factorize_module(
                    model,
                    name,
                    plan.ranks[name],
                    gram=gram if config.whitening else None,
                    damping=config.damping,
                    whiteners=whiteners,
                )
            reporter.event(
                f"factorised block {block or 'model'}",
                data={
                    "block": block,
                    "index": index + 1,
                    "total": len(by_block),
                    "ranks": {n.removeprefix(block + "."): plan.ranks[n] for n in members},
                },
            )
        return _result(model, config, plan, target_params, kept_energy, tokens)

    @staticmethod
    def _energy_plan(
        model: nn.Module,
        config: SvdConfig,
        blocks: torch.Tensor,
        target_params: int,
        total: int,
        reporter: Reporter,
    ) -> tuple[RankPlan, dict[str, torch.Tensor], int]:
        """Measure every candidate's spectrum (one calibration pass with whitening), then plan
        from it: (plan, input Grams by module, calibration tokens used)."""
        shapes = linear_shapes(model, config.target_modules)
        candidates = [s.name for s in shapes]
        grams: dict[str, torch.Tensor] = {}
        tokens = 0
        if config.whitening:
            grams, tokens = collect_input_grams(model, blocks, candidates, reporter=reporter)
        modules = find_linears(model, config.target_modules)
        spectra = singular_values(
            {n: dense_weight(modules[n]) for n in candidates},
            grams if config.whitening else None,
            config.damping,
        )
        plan = config.plan(shapes, total_params=total, target_params=target_params, spectra=spectra)
        return plan, grams, tokens


def _result(
    model: nn.Module,
    config: SvdConfig,
    plan: RankPlan,
    target_params: int,
    kept_energy: dict[str, float],
    tokens: int,
) -> MethodResult:
    """The result, once the model's count is checked against the plan's."""
    params_after = count_parameters(model)
    if params_after != plan.params_after:  # the planner and the model must agree exactly
        raise RuntimeError(f"planned {plan.params_after} parameters, model has {params_after}")
    details: dict[str, Any] = {
        "whitening": config.whitening,
        "damping": config.damping,
        "allocation": config.allocation,
        "target_params": target_params,
        "modules_factorised": len(plan.ranks),
        "min_rank": min(plan.ranks.values(), default=0),
        "max_rank": max(plan.ranks.values(), default=0),
        # Share of ‖W·S‖² (or ‖W‖² without whitening) kept by the truncation, averaged.
        "mean_kept_energy": sum(kept_energy.values()) / max(1, len(kept_energy)),
    }
    return MethodResult(
        ranks=dict(plan.ranks),
        params_before=plan.params_before,
        params_after=params_after,
        tokens_used=tokens,
        details=details,
    )
