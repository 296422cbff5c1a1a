"""Method ``svd``: training-free low-rank factorisation, plain or activation-whitened (SVD-LLM).

With input Gram C = XᵀX (in x in) and its Cholesky factor S (C = S·Sᵀ), the output error on the
calibration activations is ‖(W - B·A)·Xᵀ‖² = ‖(W - B·A)·S‖², so the best rank-r B·A is the
truncated SVD of W·S, un-whitened by S⁻¹ on the right.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimforge.compression.calibration import collect_input_grams
from slimforge.compression.configs import SvdConfig
from slimforge.compression.lowrank import (
    LowRankLinear,
    count_parameters,
    dense_weight,
    find_linears,
    linear_shapes,
    set_module,
)
from slimforge.compression.methods.base import MethodResult, plan_lowrank, register
from slimforge.compression.planning import RankPlan
from slimforge.compression.progress import NullReporter, Reporter

__all__ = [
    "SvdMethod",
    "cholesky_whitener",
    "plain_factors",
    "singular_values",
    "whitened_factors",
]


def _split_truncated(m: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Rank-r SVD of m [out, in] split as (√Σ·Vᵀ [r, in], U·√Σ [out, r], kept energy share)."""
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    root = s[:rank].sqrt()
    kept = float((s[:rank] ** 2).sum() / (s**2).sum().clamp_min(1e-300))
    return root[:, None] * vh[:rank], u[:, :rank] * root[None, :], kept


def plain_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncated SVD of W [out, in]: A [r, in], B [out, r] in float64 (weight-error optimal)."""
    a, b, _ = _split_truncated(weight.to(torch.float64), rank)
    return a, b


def cholesky_whitener(gram: torch.Tensor, damping: float) -> torch.Tensor:
    """Lower-triangular S [in, in] with S·Sᵀ = C = gram + damping·mean(diag)·I, in float64.

    If C is still not positive definite (rank-deficient activations, tiny damping) the damping is
    raised tenfold until the factorisation exists.
    """
    c = gram.to(torch.float64)
    eye = torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
    scale = float(c.diagonal().mean().clamp_min(1e-12))
    eps = damping
    for _ in range(12):
        s, info = torch.linalg.cholesky_ex(c + eps * scale * eye)
        if int(info) == 0:
            return s
        eps = max(eps * 10, 1e-8)
    raise RuntimeError("the input Gram matrix is not positive definite even with damping 1e3")


def _whitened_from_s(
    weight: torch.Tensor, s: torch.Tensor, rank: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    m = weight.to(torch.float64) @ s  # W·S [out, in]
    sv_vh, b, kept = _split_truncated(m, rank)
    # A = √Σ·Vᵀ·S⁻¹, by a triangular solve of A·S = √Σ·Vᵀ instead of inverting S.
    a = torch.linalg.solve_triangular(s, sv_vh, upper=False, left=False)  # [r, in]
    return a, b, kept


def whitened_factors(
    weight: torch.Tensor, gram: torch.Tensor, rank: int, damping: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """SVD-LLM factors of W [out, in] given the input Gram [in, in]: A [r, in], B [out, r].

    B·A minimises ‖(W - B·A)·S‖_F over rank-r matrices, i.e. the output error on the calibration
    inputs (with the damped Gram). Float64 results; cast them to the model dtype.
    """
    a, b, _ = _whitened_from_s(weight, cholesky_whitener(gram, damping), rank)
    return a, b


@torch.no_grad()
def singular_values(
    weights: dict[str, torch.Tensor],
    grams: dict[str, torch.Tensor] | None,
    damping: float,
) -> dict[str, list[float]]:
    """Singular values (largest first) of W·S per module (of W when ``grams`` is None).

    These are what the ``energy`` allocation ranks by: with whitening, σᵢ² is the calibration
    output error that dropping direction i costs. Whiteners are shared by modules whose Gram is
    the same tensor (q/k/v)."""
    whiteners: dict[int, torch.Tensor] = {}
    out: dict[str, list[float]] = {}
    for name, weight in weights.items():
        m = weight.detach().to(torch.float64)
        gram = None if grams is None else grams.get(name)  # None: an expert with no token
        if gram is not None:
            s = whiteners.get(id(gram))
            if s is None:
                s = whiteners[id(gram)] = cholesky_whitener(gram, damping)
            m = m @ s
        out[name] = torch.linalg.svdvals(m).tolist()
    return out


def _as_config(config: Any) -> SvdConfig:
    return config if isinstance(config, SvdConfig) else SvdConfig.model_validate(config)


def _block_of(name: str) -> str:
    """The decoder block prefix of a module name (``model.layers.3.mlp.up_proj`` -> ...``.3``)."""
    parts = name.split(".")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].isdigit():
            return ".".join(parts[: i + 1])
    return ""


@register("svd")
class SvdMethod:
    """Uniform-rank truncated SVD of every targeted Linear, optionally activation-whitened."""

    name = "svd"
    config_class = SvdConfig

    def plan(self, model: nn.Module, config: Any, *, target_params: int) -> RankPlan:
        """The rank plan for ``model`` (shapes only, no data); raises UnreachableTargetError."""
        return plan_lowrank(model, _as_config(config), target_params=target_params)

    def run(
        self,
        model: nn.Module,
        config: Any,
        *,
        blocks: torch.Tensor,
        target_params: int,
        reporter: Reporter | None = None,
        workdir: Path | None = None,
    ) -> MethodResult:
        """Factorise ``model``'s targeted Linears in place to about ``target_params`` parameters.

        Training-free and a few minutes at most, so it keeps no checkpoints (``workdir`` unused).
        """
        reporter = reporter or NullReporter()
        config = _as_config(config)
        # Plan from shapes before any calibration: an unreachable target fails in milliseconds.
        plan = self.plan(model, config, target_params=target_params)
        total = plan.params_before
        grams: dict[str, torch.Tensor] = {}
        tokens = 0
        if config.allocation == "energy":
            # Measure every candidate's spectrum, then plan from it.
            shapes = linear_shapes(model, config.target_modules)
            candidates = [s.name for s in shapes]
            if config.whitening:
                grams, tokens = collect_input_grams(model, blocks, candidates, reporter=reporter)
            modules = find_linears(model, config.target_modules)
            spectra = singular_values(
                {n: dense_weight(modules[n]) for n in candidates},
                grams if config.whitening else None,
                config.damping,
            )
            plan = config.plan(
                shapes, total_params=total, target_params=target_params, spectra=spectra
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

        modules = find_linears(model, config.target_modules)
        by_block: dict[str, list[str]] = {}
        for name in names:
            by_block.setdefault(_block_of(name), []).append(name)
        kept_energy: dict[str, float] = {}
        for index, (block, members) in enumerate(by_block.items()):
            reporter.check_cancelled()
            whiteners: dict[int, torch.Tensor] = {}  # id(shared Gram) -> S, reused by q/k/v
            for name in members:
                module, rank = modules[name], plan.ranks[name]
                weight = dense_weight(module).detach()  # [out, in]
                gram = grams.pop(name, None)  # None: an expert no token was routed to
                if config.whitening and gram is not None:
                    s = whiteners.get(id(gram))
                    if s is None:
                        s = whiteners[id(gram)] = cholesky_whitener(gram, config.damping)
                    a, b, kept = _whitened_from_s(weight, s, rank)
                else:
                    a, b, kept = _split_truncated(weight.to(torch.float64), rank)
                kept_energy[name] = kept
                set_module(model, name, _lowrank_from(module, a, b, rank))
            reporter.event(
                f"factorised block {block or 'model'}",
                data={
                    "block": block,
                    "index": index + 1,
                    "total": len(by_block),
                    "ranks": {n.removeprefix(block + "."): plan.ranks[n] for n in members},
                },
            )
        params_after = count_parameters(model)
        if params_after != plan.params_after:  # the planner and the model must agree exactly
            raise RuntimeError(f"planned {plan.params_after} parameters, model has {params_after}")
        details: dict[str, Any] = {
            "whitening": config.whitening,
            "damping": config.damping,
            "allocation": config.allocation,
            "target_params": target_params,
            "modules_factorised": len(names),
            "min_rank": min(plan.ranks.values(), default=0),
            "max_rank": max(plan.ranks.values(), default=0),
            # Share of ‖W·S‖² (or ‖W‖² without whitening) kept by the truncation, averaged.
            "mean_kept_energy": sum(kept_energy.values()) / max(1, len(kept_energy)),
        }
        return MethodResult(
            ranks=dict(plan.ranks),
            params_before=total,
            params_after=params_after,
            tokens_used=tokens,
            details=details,
        )


def _lowrank_from(module: nn.Module, a: torch.Tensor, b: torch.Tensor, rank: int) -> LowRankLinear:
    """A LowRankLinear with A [r, in], B [out, r] cast to the module's dtype, bias kept."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    bias = getattr(module, "bias", None)
    lowrank = LowRankLinear(
        a.shape[1], b.shape[0], rank, bias is not None, device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        lowrank.first.weight.copy_(a.to(weight.dtype))
        lowrank.second.weight.copy_(b.to(weight.dtype))
        if bias is not None:
            lowrank.second.bias.copy_(bias.detach())
    lowrank.train(module.training)
    return lowrank
