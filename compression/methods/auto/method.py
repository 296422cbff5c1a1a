"""``auto`` (torch): build each candidate pipeline on a copy of the model, give it a short kd
probe, score it against the original on held-back calibration text, keep the best."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimforge.compression.configs import KdConfig
from slimforge.compression.lowrank import count_parameters
from slimforge.compression.methods.auto.candidates import (
    Candidate,
    Trial,
    method_input,
    split_blocks,
)
from slimforge.compression.methods.auto.config import (
    AUTO_KD_LEARNING_RATE,
    AutoConfig,
    candidate_config,
)
from slimforge.compression.methods.method import Method, MethodResult, compress
from slimforge.compression.methods.minitron.config import MinitronConfig
from slimforge.compression.methods.minitron.measure import Measurements
from slimforge.compression.methods.registry import get_method
from slimforge.compression.planning import RankPlan
from slimforge.compression.progress import Reporter

__all__ = ["AutoMethod", "kd_tokens_for", "method_input", "split_blocks"]

# Rough cost of a candidate's method relative to the MLP-only pruning, to skip what would not
# fit the budget before spending it (measured on SmolLM2-135M on 2 CPU cores, bench/quality.py,
# each measuring for itself: minitron MLP ~60 s, width search ~90 s, svd ~110 s, lillama
# ~380 s). Minitron candidates after the first reuse its measurements, and their estimates
# leave its measuring out.
RELATIVE_COST = {"mlp": 1.0, "width": 1.5, "depth": 1.0, "svd": 2.0, "lillama": 6.5}
# Candidates may use at most this share of the budget; the rest is the winner's kd.
PROBE_SHARE = 0.5


def kd_tokens_for(seconds: float, tokens_per_second: float, batch_tokens: int) -> int:
    """kd tokens that fit ``seconds`` at the measured speed, whole batches, at least one."""
    return max(batch_tokens, int(seconds * tokens_per_second) // batch_tokens * batch_tokens)


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

        Memory: the original plus two candidates (the best so far and the one being built),
        and while minitron candidates are built, the teacher's MLP input Grams (layers x
        intermediate² float64). Raises the first candidate's error when none can be built
        (UnreachableTargetError, ValueError for an architecture no candidate supports)."""
        self._plan(model, config, target_params)  # fail before any work
        start = time.monotonic()
        train, held = split_blocks(blocks, config.score_tokens)
        rate = config.probe_learning_rate or AUTO_KD_LEARNING_RATE
        probe = KdConfig(tokens=config.probe_tokens, learning_rate=rate, seed=0)
        trial = Trial(model.eval(), train, held, probe, target_params, reporter, Measurements())
        rows, best = self._search(trial, config, start)
        if best is None:
            self._plan(model, config, target_params)  # the reason none could be built
            raise ValueError("auto: no candidate pipeline could be built for this model")
        row, result = best.row, best.result
        assert result is not None and best.student is not None
        rebuilt = config.rebuild and not isinstance(candidate_config(row["name"]), MinitronConfig)
        if rebuilt:
            del best  # free the candidate before building the winner again
            result = self._rebuild(model, row, blocks, target_params, reporter)
        else:
            # The Method contract modifies ``model`` in place. The winner has another shape
            # (and a probe's worth of kd already), so ``model`` takes its state whole: same
            # class (a deep copy of ``model``), so every attribute carries over.
            vars(model).clear()
            vars(model).update(vars(best.student))
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
            or kd_tokens_for(kd_seconds, row["kd_tokens_per_second"], 4 * blocks.shape[1]),
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
    def _search(
        trial: Trial, config: AutoConfig, start: float
    ) -> tuple[list[dict[str, Any]], Candidate | None]:
        """Every candidate's row (cheapest first) and the best scored one (lowest KL). A
        candidate whose estimated time would take the candidates past ``PROBE_SHARE`` of the
        budget is skipped, except the first that builds: a job gets a model, late or not."""
        names = config.candidate_names()
        minitron = [isinstance(candidate_config(n), MinitronConfig) for n in names]
        last_minitron = max((i for i, m in enumerate(minitron) if m), default=-1)
        rows: list[dict[str, Any]] = []
        best: Candidate | None = None
        # Seconds per candidate scaled to the MLP-only cost: with its measuring, and without
        # (what a later minitron candidate costs: it reuses the first one's measurements).
        full: list[float] = []
        reusing: list[float] = []
        for i, name in enumerate(names):
            trial.reporter.check_cancelled()
            pool = reusing if minitron[i] and reusing else full
            estimate = max(pool, default=0.0) * RELATIVE_COST[name]
            spent = time.monotonic() - start
            if best is not None and spent + estimate > config.max_minutes * 60 * PROBE_SHARE:
                rows.append({"name": name, "status": "skipped", "estimated_seconds": estimate})
                trial.reporter.event("auto: candidate skipped (budget)", data=rows[-1])
                continue
            seen = {r["shape"]: r["name"] for r in rows if r.get("status") == "scored"}
            got = trial.run(name, seen, last_minitron=i == last_minitron)
            rows.append(got.row)
            trial.reporter.event(f"auto: candidate {name} {got.row['status']}", data=got.row)
            if got.student is None:
                continue
            seconds = got.row["seconds"]
            full.append(seconds / RELATIVE_COST[name])
            if minitron[i]:
                reusing.append((seconds - got.row["measure_seconds"]) / RELATIVE_COST[name])
            if best is None or got.row["kl"] < best.row["kl"]:
                best = got
        return rows, best

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
