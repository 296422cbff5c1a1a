"""SVD factors of a Linear's weight, plain or activation-whitened (SVD-LLM, arXiv 2403.07378).

With input Gram C = XᵀX (in x in) and its Cholesky factor S (C = S·Sᵀ), the output error on the
calibration activations is ‖(W - B·A)·Xᵀ‖² = ‖(W - B·A)·S‖², so the best rank-r B·A is the
truncated SVD of W·S, un-whitened by S⁻¹ on the right. Shared by ``svd`` and ``lillama``
(which initialises its trained factors this way).
"""

from __future__ import annotations

import torch
from torch import nn

from slimforge.compression.lowrank import LowRankLinear

__all__ = [
    "cholesky_whitener",
    "lowrank_from",
    "plain_factors",
    "singular_values",
    "truncated_factors",
    "whitened_factors",
    "whitened_factors_from",
]


def truncated_factors(m: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Rank-r SVD of m [out, in] split as (√Σ·Vᵀ [r, in], U·√Σ [out, r], kept energy share)."""
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    root = s[:rank].sqrt()
    kept = float((s[:rank] ** 2).sum() / (s**2).sum().clamp_min(1e-300))
    return root[:, None] * vh[:rank], u[:, :rank] * root[None, :], kept


def plain_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncated SVD of W [out, in]: A [r, in], B [out, r] in float64 (weight-error optimal)."""
    a, b, _ = truncated_factors(weight.to(torch.float64), rank)
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


def whitened_factors_from(
    weight: torch.Tensor, s: torch.Tensor, rank: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Factors of W [out, in] whitened by S [in, in] (:func:`cholesky_whitener`): A [r, in],
    B [out, r] in float64 and the share of ‖W·S‖² the truncation keeps."""
    m = weight.to(torch.float64) @ s  # W·S [out, in]
    sv_vh, b, kept = truncated_factors(m, rank)
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
    a, b, _ = whitened_factors_from(weight, cholesky_whitener(gram, damping), rank)
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


def lowrank_from(module: nn.Module, a: torch.Tensor, b: torch.Tensor, rank: int) -> LowRankLinear:
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
