"""What a fidelity evaluation returns: the figures, their bootstrap intervals and the protocol."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from slimforge.compression.evaluation.scoring import WindowSums, perplexity_of

__all__ = ["TOKEN_BLOCKS_PACKING", "EvaluationProtocol", "FidelityResult", "Interval"]

# How slimforge.compression.data.token_blocks builds windows (the default ``packing`` of the
# protocol).
TOKEN_BLOCKS_PACKING = (
    "compression.data.token_blocks: each document tokenised without special tokens (no BOS) and "
    "followed by EOS; all documents joined into one stream cut into consecutive windows; windows "
    "cross document boundaries and attention is not reset at them; the tail shorter than a "
    "window is dropped"
)
PERPLEXITY_RULE = (
    "token-weighted: exp(sum of next-token NLL / scored tokens); NLL in nats from a float32 "
    "log-softmax; every window scored independently (no context carried over)"
)
EXACT_KL = "exact: sum over the whole vocabulary of p_t (log p_t - log p_s), float32 log-softmax"
TOPK_KL = (
    "top-k lower bound: KL between the teacher and student distributions coarsened to the "
    "teacher's top-k tokens plus one bucket for the rest (log-sum inequality: never above the "
    "exact KL; the gap is tail_mass x KL of the two distributions within the tail)"
)
INTERVAL_METHOD = (
    "paired percentile bootstrap over windows: resample windows with replacement, recompute "
    "teacher and student sums on the same resampled windows, take the (1 - confidence) / 2 "
    "quantiles; treats windows as independent"
)
# Resamples drawn per step: bounds the bootstrap's memory to about 2**20 x 8 bytes per column.
_DRAWS_PER_STEP = 2**20


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval [low, high]."""

    low: float
    high: float

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class EvaluationProtocol:
    """How the figures were measured, as data (for the job's metrics and the model card).

    ``window_tokens``: tokens per window (block); ``stride_tokens``: start-to-start distance
    (equal: non-overlapping); ``scored_tokens``: predicted tokens in all, ``window_tokens - 1``
    per window because the first token of a window is predicted from nothing and not scored.
    ``bos_prepended``: the evaluation adds no BOS; ``windows_starting_with_bos``: windows whose
    first token is the teacher's ``bos_token_id`` (None: the model names no BOS).
    ``packing``: how the windows were cut from the documents (default: ``token_blocks``).
    """

    window_tokens: int
    stride_tokens: int
    n_windows: int
    scored_tokens: int
    first_token_scored: bool
    bos_prepended: bool
    windows_starting_with_bos: int | None
    packing: str
    perplexity: str
    kl: str
    kl_top_k: int | None
    interval_method: str
    interval_confidence: float
    interval_resamples: int
    interval_seed: int


@dataclass(frozen=True)
class FidelityResult:
    """How closely a student follows its teacher on the same windows.

    Perplexities are token-weighted; ``perplexity_ratio`` = student / teacher;
    ``kl_per_token``: mean KL(teacher ‖ student) in nats over scored tokens (a lower bound when
    ``protocol.kl_top_k`` is set); ``top1_agreement``: share of scored positions where both
    models' most likely next token is the same; ``teacher_tail_mass``: mean teacher probability
    outside the stored top-k (top-k references only). Intervals are None with a single window.
    """

    teacher_perplexity: float
    student_perplexity: float
    perplexity_ratio: float
    kl_per_token: float
    top1_agreement: float
    perplexity_ratio_interval: Interval | None
    kl_interval: Interval | None
    top1_agreement_interval: Interval | None
    teacher_tail_mass: float | None
    protocol: EvaluationProtocol

    def metrics(self) -> dict[str, Any]:
        """A JSON-ready dict; ``teacher_perplexity``, ``student_perplexity`` and
        ``evaluation_tokens`` use the keys :func:`compression.render_model_card` reads. With a
        top-k teacher reference the KL keys are ``kl_per_token_lower_bound`` and
        ``kl_lower_bound_interval``."""
        out = asdict(self)
        out["evaluation_tokens"] = self.protocol.scored_tokens
        for key in ("perplexity_ratio_interval", "kl_interval", "top1_agreement_interval"):
            if out[key] is not None:
                out[key] = [out[key]["low"], out[key]["high"]]
        if self.protocol.kl_top_k is not None:  # a lower bound must not pass for the exact KL
            out["kl_per_token_lower_bound"] = out.pop("kl_per_token")
            out["kl_lower_bound_interval"] = out.pop("kl_interval")
        return out


def _statistics(teacher_nll: torch.Tensor, sums: dict[str, torch.Tensor]) -> torch.Tensor:
    """Perplexity ratio, KL per token, agreement [..., 3] from (resampled) sums [...]."""
    ratio = ((sums["student_nll"] - teacher_nll) / sums["scored"]).exp()
    return torch.stack([ratio, sums["kl"] / sums["scored"], sums["agree"] / sums["scored"]], -1)


def bootstrap_intervals(
    sums: WindowSums, *, n_resamples: int, confidence: float, seed: int
) -> list[Interval] | None:
    """Percentile bootstrap intervals (Efron & Tibshirani 1993, ch. 13) for the perplexity ratio,
    the KL per token and the top-1 agreement, from the same resampled windows (paired).

    Windows [n] are drawn with replacement ``n_resamples`` times with a seeded generator; None
    with fewer than 2 windows."""
    n = sums.scored.shape[0]
    if n < 2:
        return None
    columns = {k: getattr(sums, k) for k in ("teacher_nll", "student_nll", "kl", "agree")}
    columns["scored"] = sums.scored
    gen = torch.Generator().manual_seed(seed)
    step = max(1, _DRAWS_PER_STEP // n)
    stats = []
    for start in range(0, n_resamples, step):
        idx = torch.randint(0, n, (min(step, n_resamples - start), n), generator=gen)
        drawn = {k: v[idx].sum(-1) for k, v in columns.items()}  # [draws] each
        stats.append(_statistics(drawn.pop("teacher_nll"), drawn))
    alpha = (1.0 - confidence) / 2
    q = torch.quantile(torch.cat(stats), torch.tensor([alpha, 1 - alpha], dtype=torch.float64), 0)
    return [Interval(float(q[0, i]), float(q[1, i])) for i in range(3)]


def summarise(sums: WindowSums, protocol: EvaluationProtocol) -> FidelityResult:
    """The result for per-window sums; intervals as the protocol says."""
    scored = float(sums.scored.sum())
    intervals = bootstrap_intervals(
        sums,
        n_resamples=protocol.interval_resamples,
        confidence=protocol.interval_confidence,
        seed=protocol.interval_seed,
    )
    teacher = perplexity_of(sums.teacher_nll, sums.scored)
    student = perplexity_of(sums.student_nll, sums.scored)
    return FidelityResult(
        teacher_perplexity=teacher,
        student_perplexity=student,
        # From the NLL difference, not student / teacher: no overflow when both are huge.
        perplexity_ratio=math.exp(
            (float(sums.student_nll.sum()) - float(sums.teacher_nll.sum())) / scored
        ),
        kl_per_token=float(sums.kl.sum()) / scored,
        top1_agreement=float(sums.agree.sum()) / scored,
        perplexity_ratio_interval=intervals[0] if intervals else None,
        kl_interval=intervals[1] if intervals else None,
        top1_agreement_interval=intervals[2] if intervals else None,
        teacher_tail_mass=None
        if protocol.kl_top_k is None
        else float(sums.tail_mass.sum()) / scored,
        protocol=protocol,
    )


def make_protocol(
    blocks: torch.Tensor,
    *,
    bos_token_id: int | None,
    packing: str,
    top_k: int | None,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> EvaluationProtocol:
    """The protocol record for windows ``blocks`` [n_windows, window_tokens].

    Raises ValueError on a confidence outside (0, 1) or fewer than one resample."""
    if not 0.0 < confidence < 1.0 or n_resamples < 1:
        raise ValueError(
            f"need 0 < confidence < 1 and n_resamples >= 1, got {confidence}, {n_resamples}"
        )
    n, length = blocks.shape
    starting_bos = None if bos_token_id is None else int((blocks[:, 0] == bos_token_id).sum())
    return EvaluationProtocol(
        window_tokens=length,
        stride_tokens=length,
        n_windows=n,
        scored_tokens=n * (length - 1),
        first_token_scored=False,
        bos_prepended=False,
        windows_starting_with_bos=starting_bos,
        packing=packing,
        perplexity=PERPLEXITY_RULE,
        kl=EXACT_KL if top_k is None else TOPK_KL,
        kl_top_k=top_k,
        interval_method=INTERVAL_METHOD,
        interval_confidence=confidence,
        interval_resamples=n_resamples,
        interval_seed=seed,
    )
