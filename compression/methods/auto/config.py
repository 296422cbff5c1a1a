"""Parameters of ``auto`` (torch-free): which candidate pipelines it may try, and its budget."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from slimforge.compression.methods.lillama.config import LillamaConfig
from slimforge.compression.methods.minitron.config import MinitronConfig
from slimforge.compression.methods.registry import register_method
from slimforge.compression.methods.svd.config import SvdConfig
from slimforge.compression.model_shapes import ModelShapes
from slimforge.compression.parameters import MethodParameters
from slimforge.compression.planning import UnreachableTargetError

__all__ = [
    "AUTO_KD_LEARNING_RATE",
    "CANDIDATES",
    "STANDARD_CANDIDATES",
    "AutoConfig",
    "candidate_config",
]

# kd's peak learning rate under ``auto`` (its probes, and the job's kd stage unless ``distill``
# sets one): its kd runs for minutes, a few dozen steps, where 2e-4 beat kd's general default
# of 5e-5 in two lever runs on SmolLM2 (docs/BENCHMARKS.md, lever table: English x1.428 vs
# x1.452 after 8,192 kd tokens).
AUTO_KD_LEARNING_RATE = 2e-4

CandidateName = Literal["mlp", "width", "depth", "svd", "lillama"]
# Candidate pipelines, cheapest first. Each is followed by kd. The three minitron shapes give
# a stock architecture (transformers, vLLM and llama.cpp load it); svd and lillama give
# low-rank layers (custom code, trust_remote_code).
CANDIDATES: dict[str, dict[str, Any]] = {
    "mlp": {"name": "minitron", "axes": ["mlp"]},
    "width": {"name": "minitron", "axes": ["heads", "mlp", "hidden"]},
    "depth": {"name": "minitron", "axes": ["depth", "mlp"]},
    "svd": {"name": "svd"},
    "lillama": {"name": "lillama"},
}
STANDARD_CANDIDATES = ("mlp", "width", "depth")
_CONFIG_CLASSES: dict[str, type[MethodParameters]] = {
    "minitron": MinitronConfig,
    "svd": SvdConfig,
    "lillama": LillamaConfig,
}


def candidate_config(name: str) -> MethodParameters:
    """The method parameters of candidate ``name`` (one of ``CANDIDATES``)."""
    spec = dict(CANDIDATES[name])
    return _CONFIG_CLASSES[spec["name"]].model_validate(spec)


@register_method("slimforge.compression.methods.auto.method:AutoMethod")
class AutoConfig(MethodParameters):
    """Pick the compression for the budget: build every candidate pipeline the constraints
    allow (minitron MLP-only, width and depth shapes; with ``architecture: "any"`` also svd and
    lillama), give each a short kd probe from the original model, score it by KL(teacher ‖
    student) on held-back calibration text, and keep the best; the job's kd stage then trains
    the winner with the rest of the budget. Every candidate, its score and the reason for the
    choice go to the job's events, metrics and model card.
    """

    name: Literal["auto"] = "auto"
    architecture: Literal["standard", "any"] = Field(
        default="standard",
        description="'standard': only shapes stock transformers, vLLM and llama.cpp load "
        "(minitron pruning); 'any': also low-rank layers (svd, lillama), which need "
        "trust_remote_code to load.",
    )
    max_minutes: float = Field(
        default=10.0,
        gt=0.0,
        le=10_080.0,
        description="Minutes of this worker's time for the candidates and the kd stage "
        "together (loading, calibration text and evaluation come on top). Candidates that "
        "would not fit are skipped, and the kd stage trains for what is left, at the speed "
        "measured while probing, unless `kd_tokens` is set. `distill.tokens` does not set "
        "the kd budget under auto: it is the distinct kd text drawn.",
    )
    kd_tokens: int | None = Field(
        default=None,
        ge=16,
        le=100_000_000_000,
        description="Train the winner by kd for this many tokens instead of what fits "
        "max_minutes. The job's `distill` section (added with its defaults when omitted) sets "
        "the kd's other settings; its `tokens` is then the distinct kd text drawn, cycled over.",
    )
    candidates: list[CandidateName] | None = Field(
        default=None,
        min_length=1,
        description="Try only these (default: all that 'architecture' allows).",
    )
    probe_tokens: int = Field(
        default=2048,
        ge=16,
        le=10_000_000,
        description="kd tokens each candidate trains for before it is scored: a short kd makes "
        "the score predict the result after the job's kd, which a training-free score does "
        "not (a pruned model recovers faster than its first loss says).",
    )
    probe_learning_rate: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Peak learning rate of each candidate's kd probe. None: the job's kd "
        "learning rate (`distill.learning_rate`, filled in at submit; 2e-4 when compress() is "
        "called directly), so the probe trains at the rate of the kd that follows it (its "
        "other kd settings are kd's defaults).",
    )
    score_tokens: int = Field(
        default=2048,
        ge=16,
        le=10_000_000,
        description="Calibration tokens held back (the last blocks, at most a quarter) to "
        "score candidates; never trained on by the probes, nor measured by the methods. "
        "Minitron candidates pick their shape on them (as minitron's own search text).",
    )
    rebuild: bool = Field(
        default=True,
        description="Build a low-rank winner (svd, lillama) again from the original model on "
        "all the calibration text (the held-back blocks too), without its probe's kd; costs "
        "its method time once more. A minitron winner is never rebuilt: its candidate "
        "measured importance on the other blocks and chose its shape on the held-back ones, "
        "as a rebuild would, so it is kept as scored, its probe's kd included. Off: keep "
        "every probed candidate as scored.",
    )

    @model_validator(mode="after")
    def _allowed(self) -> AutoConfig:
        if self.architecture == "standard" and self.candidates is not None:
            low_rank = [c for c in self.candidates if c not in STANDARD_CANDIDATES]
            if low_rank:
                raise ValueError(
                    f"'candidates' lists {low_rank}, which give low-rank layers, but "
                    "'architecture' is 'standard': set architecture to 'any' or drop them"
                )
        return self

    def candidate_names(self) -> list[str]:
        """The candidates to try, cheapest first."""
        allowed = STANDARD_CANDIDATES if self.architecture == "standard" else tuple(CANDIDATES)
        chosen: list[str] = list(self.candidates or allowed)
        return [c for c in CANDIDATES if c in chosen and c in allowed]

    def standard_architecture(self) -> bool:
        """Whether every candidate gives a stock architecture (llama.cpp and vLLM load it)."""
        return all(c in STANDARD_CANDIDATES for c in self.candidate_names())

    def check_model(self, shapes: ModelShapes) -> None:
        """At least one candidate must accept the model (the first conflict otherwise)."""
        self._any_candidate(lambda c: c.check_model(shapes))

    def check_target(self, shapes: ModelShapes, target_params: int) -> None:
        """At least one candidate must reach the target. Otherwise UnreachableTargetError
        naming auto, every candidate's reachable range and, under 'standard', the low-rank
        candidates 'any' would add (a ParameterConflict of a candidate is raised as is)."""
        failures: list[tuple[str, UnreachableTargetError]] = []
        for name in self.candidate_names():
            try:
                candidate_config(name).check_target(shapes, target_params)
                return
            except UnreachableTargetError as exc:
                failures.append((name, exc))
        if not failures:
            return
        per = "; ".join(
            f"{name} {e.min_params:,}–{e.max_params:,}"  # noqa: RUF001
            + (f" (closest {e.closest_params:,})" if e.closest_params is not None else "")
            for name, e in failures
        )
        hint = "change the target"
        if self.architecture == "standard":
            hint += " or set method.architecture to 'any' (adds svd and lillama, low-rank)"
        first = failures[0][1]
        raise UnreachableTargetError(
            target_params=target_params,
            min_params=min(e.min_params for _, e in failures),
            max_params=max(e.max_params for _, e in failures),
            total_params=first.total_params,
            method="auto",
            reason=f"no candidate reaches it (ranges per candidate: {per}); {hint}",
        )

    def _any_candidate(self, check: Any) -> None:
        first: Exception | None = None
        for name in self.candidate_names():
            try:
                check(candidate_config(name))
                return
            except ValueError as exc:
                first = first or exc
        if first is not None:
            raise first
