"""``auto``: every candidate the constraints allow is built, probed and scored; the lowest KL
to the teacher wins and replaces the model in place; the budget skips what would not fit."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from slimforge.compression import compress, count_parameters, resolve_target
from slimforge.compression.evaluation import fidelity
from slimforge.compression.methods.auto.config import AutoConfig, candidate_config
from slimforge.compression.methods.auto.method import kd_tokens_for, split_blocks
from slimforge.compression.progress import NullReporter
from tests.compression.helpers import correlated_blocks, tiny_llama

FAST = {"probe_tokens": 64, "score_tokens": 32}


class Events(NullReporter):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def event(self, message: str, *, data: Any = None, level: str = "info") -> None:
        self.events.append((message, data or {}))


def _run(config: AutoConfig) -> tuple[torch.nn.Module, Any, Events, torch.nn.Module, torch.Tensor]:
    model = tiny_llama(0, 2)
    teacher = copy.deepcopy(model).eval()
    blocks = correlated_blocks(12, 16)
    target = resolve_target(count_parameters(model), ratio=0.8)
    events = Events()
    result = compress(model, config, blocks=blocks, target_params=target, reporter=events)
    return model, result, events, teacher, blocks


def test_the_winner_has_the_lowest_kl_and_replaces_the_model_in_place() -> None:
    config = AutoConfig(
        architecture="any", candidates=["mlp", "svd", "lillama"], rebuild=False, **FAST
    )
    model, result, events, teacher, blocks = _run(config)
    rows = {r["name"]: r for r in result.details["candidates"]}
    # The tiny model's widths are not multiples of minitron's defaults: refused, with why.
    assert rows["mlp"]["status"] == "refused" and "not reachable" in rows["mlp"]["reason"]
    scored = [r for r in rows.values() if r["status"] == "scored"]
    assert {r["name"] for r in scored} == {"svd", "lillama"}
    best = min(scored, key=lambda r: r["kl"])
    assert result.details["winner"] == best["name"]
    assert count_parameters(model) == best["params"] == result.params_after
    assert abs(result.params_after / resolve_target(result.params_before, ratio=0.8) - 1) < 0.01
    # The model now is the winner: scoring it again gives the KL recorded for it.
    _, held = split_blocks(blocks, config.score_tokens)
    again = fidelity(teacher, model, held, n_resamples=10)
    assert again.kl_per_token == pytest.approx(best["kl"], rel=1e-3)
    messages = [m for m, _ in events.events]
    assert f"auto: chose {best['name']}" in messages
    assert sum(m.startswith("auto: candidate") for m in messages) == 3
    assert result.details["kd_tokens"] > 0 and result.details["kd_tokens"] % (4 * 16) == 0


def test_the_winner_is_rebuilt_on_all_the_calibration_text_as_a_hand_picked_run() -> None:
    """By default the winner is built again from the original on every calibration block: the
    model is then exactly what compressing with the winner's own method gives."""
    config = AutoConfig(architecture="any", candidates=["svd", "lillama"], **FAST)
    model, result, _, teacher, blocks = _run(config)
    winner = result.details["winner"]
    assert result.details["rebuilt"] is True
    row = next(r for r in result.details["candidates"] if r["name"] == winner)
    assert row["rebuild_seconds"] > 0
    by_hand = copy.deepcopy(teacher)
    cfg = candidate_config(winner)
    compress(by_hand, cfg, blocks=blocks, target_params=resolve_target(
        count_parameters(teacher), ratio=0.8))  # fmt: skip
    mine, theirs = model.state_dict(), by_hand.state_dict()
    assert mine.keys() == theirs.keys()
    for name, tensor in mine.items():
        torch.testing.assert_close(tensor, theirs[name], msg=name)


def test_candidates_over_the_budget_are_skipped_but_one_always_runs() -> None:
    config = AutoConfig(architecture="any", candidates=["svd", "lillama"], max_minutes=1e-6, **FAST)
    _, result, _, _, _ = _run(config)
    rows = {r["name"]: r for r in result.details["candidates"]}
    assert rows["svd"]["status"] == "scored" and rows["lillama"]["status"] == "skipped"
    assert result.details["winner"] == "svd"
    assert result.details["kd_tokens"] == 4 * 16  # no time left: one batch


def test_kd_tokens_given_override_the_budget() -> None:
    config = AutoConfig(architecture="any", candidates=["svd"], kd_tokens=1000, **FAST)
    _, result, _, _, _ = _run(config)
    assert result.details["kd_tokens"] == 1000


def test_standard_architecture_refuses_low_rank_candidates() -> None:
    with pytest.raises(ValidationError, match="architecture to 'any'"):
        AutoConfig(candidates=["svd"])
    assert AutoConfig().candidate_names() == ["mlp", "width", "depth"]
    assert AutoConfig(architecture="any").candidate_names()[-2:] == ["svd", "lillama"]
    assert (
        AutoConfig().standard_architecture()
        and not AutoConfig(architecture="any").standard_architecture()
    )


def test_no_candidate_that_builds_is_an_error_naming_the_reason() -> None:
    with pytest.raises(ValueError, match="not reachable"):
        _run(AutoConfig(**FAST))  # standard only: minitron's multiples miss the tiny widths


@pytest.mark.parametrize(
    ("seconds", "speed", "batch", "expected"),
    [(10.0, 100.0, 256, 768), (0.0, 100.0, 256, 256), (100.0, 1.0, 64, 64)],
)
def test_kd_tokens_for_whole_batches(
    seconds: float, speed: float, batch: int, expected: int
) -> None:
    assert kd_tokens_for(seconds, speed, batch) == expected


def test_a_minitron_winner_is_kept_as_it_was_scored() -> None:
    """A minitron winner is not rebuilt (its candidate was measured on all the blocks already):
    the model auto hands back has the winner row's shape and its probe's kd, so scoring it
    again gives the KL recorded for it."""
    from slimforge.compression.methods.auto.candidates import model_shape

    model = tiny_llama(0, 4)
    teacher = copy.deepcopy(model).eval()
    blocks = correlated_blocks(12, 16)
    target = resolve_target(count_parameters(model), ratio=0.55)
    config = AutoConfig(candidates=["depth", "width"], **FAST)
    result = compress(model, config, blocks=blocks, target_params=target)
    winner = next(r for r in result.details["candidates"] if r["name"] == result.details["winner"])
    assert result.details["rebuilt"] is False and "rebuild_seconds" not in winner
    assert model_shape(model) == winner["shape"]
    # As the kd stage expects it: in eval mode, its parameters trainable as before the probe.
    assert not model.training
    assert all(p.requires_grad for p in model.parameters())
    _, held = split_blocks(blocks, config.score_tokens)
    again = fidelity(teacher, model, held, n_resamples=10)
    assert again.kl_per_token == pytest.approx(winner["kl"], rel=1e-3)


def test_minitron_candidates_measure_once_on_the_training_blocks() -> None:
    """Minitron candidates measure importance (and fit their refit) on exactly auto's training
    blocks, over the refit's floor, and the later candidates reuse the first one's figures."""
    model = tiny_llama(0, 4)
    # 43 blocks of 16: 656 training tokens, over the refit's floor of 4 x 128 MLP neurons;
    # a candidate given the training blocks alone measured on 496 (unrefit).
    blocks = correlated_blocks(43, 16)
    target = resolve_target(count_parameters(model), ratio=0.55)
    events = Events()
    config = AutoConfig(candidates=["mlp", "width", "depth"], **FAST)
    result = compress(model, config, blocks=blocks, target_params=target, reporter=events)
    train, _ = split_blocks(blocks, FAST["score_tokens"])
    measured = [d for m, d in events.events if m == "importance measured"]
    assert len(measured) >= 2  # every candidate that built
    assert {d["tokens"] for d in measured} == {train.numel()}
    assert measured[0]["reused"] == []
    assert all(set(d["reused"]) == {"importance", "grams"} for d in measured[1:])
    assert not [m for m, _ in events.events if m.startswith("refit skipped")]
    assert result.details["refit"] is True


@pytest.mark.parametrize("layer_metric", ["block_importance", "perplexity"])
def test_shared_measurements_give_the_pruning_measured_alone(layer_metric: str) -> None:
    """A depth pruning that reuses what an MLP-only pruning of another copy measured equals the
    depth pruning measured from scratch, weight for weight (and the perplexity layer metric
    does not leak into the cached Block Importance)."""
    from slimforge.compression.methods.auto.method import method_input
    from slimforge.compression.methods.minitron.measure import Measurements
    from slimforge.compression.methods.minitron.method import MinitronMethod

    teacher = tiny_llama(0, 4)
    blocks = correlated_blocks(43, 16)
    target = resolve_target(count_parameters(teacher), ratio=0.55)
    train, held = split_blocks(blocks, FAST["score_tokens"])
    mlp_cfg, given = method_input(candidate_config("mlp"), train, held)
    depth_cfg, _ = method_input(candidate_config("depth"), train, held)
    depth_cfg = depth_cfg.model_copy(update={"layer_metric": layer_metric})
    shared = Measurements()
    common: dict[str, Any] = {"blocks": given, "target_params": target, "measurements": shared}
    minitron = MinitronMethod()
    minitron.prune(copy.deepcopy(teacher), mlp_cfg, reporter=NullReporter(), **common)  # type: ignore[arg-type]
    block_importance = shared.importance.layers.clone()  # type: ignore[union-attr]
    reused, alone = copy.deepcopy(teacher), copy.deepcopy(teacher)
    minitron.prune(reused, depth_cfg, reporter=NullReporter(), **common)  # type: ignore[arg-type]
    compress(alone, depth_cfg, blocks=given, target_params=target)
    assert "importance" in shared.reused
    torch.testing.assert_close(shared.importance.layers, block_importance)  # type: ignore[union-attr]
    mine, theirs = reused.state_dict(), alone.state_dict()
    assert mine.keys() == theirs.keys()
    for name, tensor in mine.items():
        torch.testing.assert_close(tensor, theirs[name], msg=name)


def test_measurements_taken_on_other_blocks_are_refused() -> None:
    from slimforge.compression.methods.minitron.measure import Measurements

    shared = Measurements()
    blocks = correlated_blocks(8, 16)
    shared.bind(blocks[:6], blocks[6:])
    shared.bind(blocks[:6].clone(), blocks[6:].clone())  # equal tokens: fine
    with pytest.raises(RuntimeError, match="other calibration blocks"):
        shared.bind(blocks[:5], blocks[5:])
    other = blocks.clone()
    other[0, 0] += 1  # same shapes, one token different
    with pytest.raises(RuntimeError, match="other calibration blocks"):
        shared.bind(other[:6], other[6:])


def test_the_probe_speed_counts_the_tokens_the_probe_trained() -> None:
    """kd trains whole batches: a 40-token probe on blocks of 16 trains one batch of 4 x 16.
    The speed the kd budget is sized by divides those 64 tokens by the probe's seconds."""
    config = AutoConfig(architecture="any", candidates=["svd"], probe_tokens=40, score_tokens=32)
    _, result, _, _, _ = _run(config)
    row = result.details["candidates"][0]
    assert row["probe_tokens"] == 64
    # Seconds are rounded to milliseconds and a tiny probe takes a few: nearer 64 than 40.
    trained = row["kd_tokens_per_second"] * row["probe_seconds"]
    assert abs(trained - 64) < abs(trained - 40)


def test_the_last_minitron_candidate_releases_the_shared_measurements() -> None:
    """The Grams (layers x intermediate² float64) are not held through later candidates."""
    from slimforge.compression.configs import KdConfig
    from slimforge.compression.methods.auto.candidates import Trial
    from slimforge.compression.methods.minitron.measure import Measurements

    teacher = tiny_llama(0, 4).eval()
    train, held = split_blocks(correlated_blocks(43, 16), FAST["score_tokens"])
    target = resolve_target(count_parameters(teacher), ratio=0.55)
    trial = Trial(teacher, train, held, KdConfig(tokens=64), target, NullReporter(), Measurements())
    first = trial.run("mlp", {}, last_minitron=False)
    assert first.row["status"] == "scored" and trial.measured_once.grams is not None
    assert first.row["measure_seconds"] > 0
    last = trial.run("depth", {}, last_minitron=True)
    assert last.row["measure_seconds"] < first.row["measure_seconds"]  # reused, not measured
    assert trial.measured_once.grams is None and trial.measured_once.importance is None
