"""``auto`` (torch): build each candidate pipeline on a copy of the model, give it a short kd
probe, score it against the original on held-back calibration text, keep the best."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimforge.compression.configs import KdConfig
from slimforge.compression.distill.kd import distill_logits
from slimforge.compression.evaluation import fidelity
from slimforge.compression.lowrank import count_parameters
from slimforge.compression.methods.auto.config import (
    AUTO_KD_LEARNING_RATE,
    AutoConfig,
    candidate_config,
)
from slimforge.compression.methods.method import Method, MethodResult, compress
from slimforge.compression.methods.minitron.config import MinitronConfig
from slimforge.compression.methods.minitron.measure import Measurements
from slimforge.compression.methods.minitron.method import MinitronMethod
from slimforge.compression.methods.registry import get_method
from slimforge.compression.parameters import MethodParameters
from slimforge.compression.planning import RankPlan
from slimforge.compression.progress import Reporter

__all__ = ["AutoMethod", "kd_tokens_for", "method_input"]

# Rough cost of a candidate's method relative to the MLP-only pruning, to skip what would not
# fit the budget before spending it (measured on SmolLM2-135M on 2 CPU cores, bench/quality.py:
# minitron MLP ~60 s, width search ~90 s, svd ~110 s, lillama ~380 s).
RELATIVE_COST = {"mlp": 1.0, "width": 1.5, "depth": 1.0, "svd": 2.0, "lillama": 6.5}
# Candidates may use at most this share of the budget; the rest is the winner's kd.
PROBE_SHARE = 0.5


def split_blocks(blocks: torch.Tensor, score_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training blocks and held-back scoring blocks (the last ones, at most a quarter)."""
    n, seq_len = blocks.shape
    held = min(max(1, score_tokens // seq_len), max(1, n // 4))
    if n < 2:
        raise ValueError("auto needs at least 2 calibration blocks (train + score)")
    return blocks[: n - held], blocks[n - held :]


def method_input(
    config: MethodParameters, train: torch.Tensor, held: torch.Tensor
) -> tuple[MethodParameters, torch.Tensor]:
    """What a candidate's method calibrates on: the training blocks, and for minitron also the
    held-back ones, as its shape-search text (``search_tokens`` = theirs). Minitron then
    measures importance and fits its refit on exactly the training blocks: the refit needs 4
    tokens per MLP neuron, and a candidate given the training blocks alone would keep a
    quarter of them back again and, on short text, be pruned unrefit (measured on SmolLM2 at
    -30 %: unrefit, the depth search picks a 22-layer shape; refit, it picks the MLP-only
    shape, which wins after kd). The held-back blocks then choose minitron's shape (the best
    of its few searched shapes by perplexity) as well as score the candidates, which flatters
    minitron's score a little against svd and lillama, which never see them
    (``architecture: "any"`` only)."""
    if isinstance(config, MinitronConfig):
        update = {"search_tokens": int(held.numel())}
        return config.model_copy(update=update), torch.cat([train, held])
    return config, train


def kd_tokens_for(seconds: float, tokens_per_second: float, batch_tokens: int) -> int:
    """kd tokens that fit ``seconds`` at the measured speed, whole batches, at least one."""
    return max(batch_tokens, int(seconds * tokens_per_second) // batch_tokens * batch_tokens)


def _shape(model: nn.Module) -> str:
    c = getattr(model, "config", None)
    if any(type(m).__name__ == "LowRankLinear" for m in model.modules()) or c is None:
        return "low-rank"
    return (
        f"layers {c.num_hidden_layers}, hidden {c.hidden_size}, mlp {c.intermediate_size}, "
        f"heads {c.num_attention_heads}"
    )


def _kd_speed(rows: list[dict[str, Any]]) -> float:
    """kd tokens per second for the kd stage's budget: the fastest probe's. Probes are two or
    three steps, and the first carries one-off costs (measured on SmolLM2: 66 tokens/s over
    the probe, 78 in the kd stage after it), so the fastest is the closest to the kd's speed."""
    return max(r["kd_tokens_per_second"] for r in rows if r.get("status") == "scored")


class AutoMethod(Method[AutoConfig]):
    """Candidates cheapest first; the winner has the lowest KL to the teacher after the probe."""

    def _plan(self, model: nn.Module, config: AutoConfig, target_params: int) -> RankPlan:
        """The first candidate's plan that reaches the target (from shapes alone)."""
        first: ValueError | None = None
        for name in config.candidate_names():
            cfg = candidate_config(name)
            try:
                return get_method(cfg.name).plan(model, cfg, target_params=target_params)
            except ValueError as exc:
                first = first or exc
        assert first is not None
        raise first

    def _compress(
        self,
        model: nn.Module,
        config: AutoConfig,
        *,
        blocks: torch.Tensor,
        target_params: int,
        reporter: Reporter,
        workdir: Path | None,
        device: torch.device | None,
    ) -> MethodResult:
        """Replace ``model`` in place by the best candidate (probed with kd from ``model``).

        Memory: the original plus two candidates (the best so far and the one being built).
        Raises the first candidate's error when none can be built (UnreachableTargetError,
        ValueError for an architecture no candidate supports)."""
        self._plan(model, config, target_params)  # fail before any work
        start = time.monotonic()
        train, held = split_blocks(blocks, config.score_tokens)
        rate = config.probe_learning_rate or AUTO_KD_LEARNING_RATE
        probe = KdConfig(tokens=config.probe_tokens, learning_rate=rate, seed=0)
        rows: list[dict[str, Any]] = []
        best: tuple[float, nn.Module, MethodResult, dict[str, Any]] | None = None
        measured: list[float] = []  # seconds per candidate, scaled to the MLP-only cost
        teacher = model.eval()
        # Minitron candidates are cut from copies of ``teacher`` on the same blocks: measured once.
        measured_once = Measurements()
        for name in config.candidate_names():
            reporter.check_cancelled()
            estimate = max(measured, default=0.0) * RELATIVE_COST[name]
            spent = time.monotonic() - start
            if best is not None and spent + estimate > config.max_minutes * 60 * PROBE_SHARE:
                rows.append({"name": name, "status": "skipped", "estimated_seconds": estimate})
                reporter.event("auto: candidate skipped (budget)", data=rows[-1])
                continue
            # The first candidate that builds always runs: a job gets a model, late or not.
            seen = {r["shape"]: r["name"] for r in rows if r.get("status") == "scored"}
            row, student, result = self._candidate(
                name, teacher, train, held, probe, target_params, seen, measured_once, reporter
            )
            rows.append(row)
            reporter.event(f"auto: candidate {name} {row['status']}", data=row)
            if student is None or result is None:
                continue
            measured.append(row["seconds"] / RELATIVE_COST[name])
            if best is None or row["kl"] < best[0]:
                best = (row["kl"], student, result, row)
        if best is None:
            self._plan(model, config, target_params)  # the reason none could be built
            raise ValueError("auto: no candidate pipeline could be built for this model")
        del measured_once  # its Grams take layers x intermediate² float64
        _, student, result, row = best
        rebuilt = config.rebuild and not isinstance(candidate_config(row["name"]), MinitronConfig)
        if rebuilt:
            del student, best  # free the candidate before building the winner again
            result = self._rebuild(model, row, blocks, target_params, reporter)
        else:
            # The Method contract modifies ``model`` in place. The winner has another shape
            # (and a probe's worth of kd already), so ``model`` takes its state whole: same
            # class (a deep copy of ``model``), so every attribute carries over.
            vars(model).clear()
            vars(model).update(vars(student))
        spent = time.monotonic() - start
        kd_seconds = max(0.0, config.max_minutes * 60 - spent)
        details = dict(result.details)
        details.update(
            winner=row["name"],
            winner_method=row["method"],
            reason=f"lowest KL(teacher ‖ student) on {held.numel():,} held-back calibration "
            f"tokens after a {probe.tokens:,}-token kd probe",
            rebuilt=rebuilt,
            candidates=rows,
            probe_tokens=probe.tokens,
            score_tokens=int(held.numel()),
            kd_tokens=config.kd_tokens
            or kd_tokens_for(kd_seconds, _kd_speed(rows), 4 * blocks.shape[1]),
            seconds=round(spent, 3),
        )
        chosen = {k: details[k] for k in ("winner", "reason", "kd_tokens")}
        reporter.event(f"auto: chose {row['name']}", data=chosen)
        return MethodResult(
            ranks=result.ranks,
            params_before=result.params_before,
            params_after=count_parameters(model),
            tokens_used=int(blocks.numel()),
            details=details,
        )

    @staticmethod
    def _rebuild(
        model: nn.Module,
        row: dict[str, Any],
        blocks: torch.Tensor,
        target_params: int,
        reporter: Reporter,
    ) -> MethodResult:
        """Compress ``model`` (the original) in place with the low-rank winner's method on all
        ``blocks`` (the held-back ones too); the row records the time."""
        t0 = time.monotonic()
        cfg = candidate_config(row["name"])
        result = compress(model, cfg, blocks=blocks, target_params=target_params, reporter=reporter)
        row["rebuild_seconds"] = round(time.monotonic() - t0, 3)
        return result

    def _candidate(
        self,
        name: str,
        teacher: nn.Module,
        train: torch.Tensor,
        held: torch.Tensor,
        probe: KdConfig,
        target_params: int,
        seen: dict[str, str],
        measured_once: Measurements,
        reporter: Reporter,
    ) -> tuple[dict[str, Any], nn.Module | None, MethodResult | None]:
        """Build, probe and score one candidate on a copy of ``teacher``; a pruned shape an
        earlier candidate already scored (``seen``: shape -> name) is not probed again.
        Minitron candidates share ``measured_once`` (importance and Grams of ``teacher``)."""
        cfg, method_blocks = method_input(candidate_config(name), train, held)
        row: dict[str, Any] = {"name": name, "method": cfg.model_dump(exclude_defaults=True)}
        t0 = time.monotonic()
        student = copy.deepcopy(teacher)
        try:
            if isinstance(cfg, MinitronConfig):
                result = MinitronMethod().prune(
                    student, cfg, blocks=method_blocks, target_params=target_params,
                    reporter=reporter, measurements=measured_once,
                )  # fmt: skip
            else:
                result = compress(
                    student, cfg, blocks=method_blocks, target_params=target_params,
                    reporter=reporter,
                )  # fmt: skip
        except ValueError as exc:  # unreachable target, unsupported architecture
            row.update(status="refused", reason=str(exc))
            return row, None, None
        method_s = time.monotonic() - t0
        shape = _shape(student)
        if shape != "low-rank" and shape in seen:
            row.update(status=f"same shape as {seen[shape]}", shape=shape)
            return row, None, None
        t1 = time.monotonic()
        distill_logits(student, train, probe, teacher=teacher, reporter=reporter)
        probe_s = time.monotonic() - t1
        score = fidelity(teacher, student, held, n_resamples=200, reporter=reporter)
        row.update(
            status="scored",
            params=count_parameters(student),
            shape=shape,
            kl=round(score.kl_per_token, 6),
            top1_agreement=round(score.top1_agreement, 6),
            perplexity_ratio=round(score.perplexity_ratio, 6),
            method_seconds=round(method_s, 3),
            probe_seconds=round(probe_s, 3),
            kd_tokens_per_second=round(probe.tokens / max(probe_s, 1e-6), 3),
            seconds=round(time.monotonic() - t0, 3),
        )
        return row, student, result
