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


def test_a_pruned_winner_is_rebuilt_in_the_shape_that_was_scored() -> None:
    """The rebuild pins the scored shape: the search on all the text may prefer another shape
    of the same family, and what auto chose is the shape (measured on SmolLM2 at -30 %)."""
    from slimforge.compression.methods.auto.method import AutoMethod
    from slimforge.compression.pruning.layout import arch_of
    from slimforge.compression.pruning.search import search_space

    teacher = tiny_llama(0, 4)
    blocks = correlated_blocks(12, 16)
    target = resolve_target(count_parameters(teacher), ratio=0.55)  # 3 shapes: 2, 3, 4 layers
    unpinned = copy.deepcopy(teacher)
    compress(unpinned, candidate_config("depth"), blocks=blocks, target_params=target)
    chosen = arch_of(unpinned)
    others = [c for c in search_space(arch_of(teacher), candidate_config("depth"),  # type: ignore[arg-type]
                                      target_params=target) if c.arch != chosen]  # fmt: skip
    assert others, "the search space offers another shape"
    scored = others[0]
    model = copy.deepcopy(teacher)
    row: dict[str, Any] = {"name": "depth"}
    AutoMethod._rebuild(model, row, blocks, target, NullReporter(), scored.describe())
    assert arch_of(model) == scored.arch != chosen
    assert count_parameters(model) == scored.params and row["rebuild_seconds"] > 0


def test_auto_hands_back_the_winner_in_the_shape_it_scored() -> None:
    """End to end: with the rebuild on, the model auto returns has the winner row's shape."""
    from slimforge.compression.methods.auto.method import _shape

    model = tiny_llama(0, 4)
    target = resolve_target(count_parameters(model), ratio=0.55)
    config = AutoConfig(candidates=["depth", "width"], **FAST)
    result = compress(model, config, blocks=correlated_blocks(12, 16), target_params=target)
    winner = next(r for r in result.details["candidates"] if r["name"] == result.details["winner"])
    assert result.details["rebuilt"] is True
    assert _shape(model) == winner["shape"]


def test_minitron_candidates_measure_on_the_blocks_the_rebuild_measures_on() -> None:
    """Each minitron candidate measures importance (and fits its refit) on the same blocks as
    the rebuilt winner: on short text, a candidate given fewer blocks was scored unrefit while
    the rebuilt winner was refit, and the unrefit search preferred another shape."""
    model = tiny_llama(0, 4)
    # 43 blocks of 16: 656 training tokens, over the refit's floor of 4 x 128 MLP neurons;
    # a candidate given the training blocks alone measured on 496 (unrefit), the rebuild on 528.
    blocks = correlated_blocks(43, 16)
    target = resolve_target(count_parameters(model), ratio=0.55)
    events = Events()
    config = AutoConfig(candidates=["mlp", "width", "depth"], **FAST)
    result = compress(model, config, blocks=blocks, target_params=target, reporter=events)
    train, _ = split_blocks(blocks, FAST["score_tokens"])
    measured = [d["tokens"] for m, d in events.events if m == "importance measured"]
    assert len(measured) >= 2  # the candidates that built, and the rebuild
    assert set(measured) == {train.numel()}
    assert not [m for m, _ in events.events if m.startswith("refit skipped")]
    assert result.details["refit"] is True


def test_a_rebuilt_minitron_winner_is_the_candidate_it_scored() -> None:
    """The rebuild on all the text gives the candidate as it was before its probe: the same
    blocks measure it, the same held-back blocks choose its shape."""
    from slimforge.compression.methods.auto.method import method_input

    teacher = tiny_llama(0, 4)
    blocks = correlated_blocks(12, 16)
    target = resolve_target(count_parameters(teacher), ratio=0.55)
    rebuilt = copy.deepcopy(teacher)
    compress(rebuilt, AutoConfig(candidates=["depth"], **FAST), blocks=blocks, target_params=target)
    train, held = split_blocks(blocks, FAST["score_tokens"])
    cfg, given = method_input(candidate_config("depth"), train, held)
    candidate = copy.deepcopy(teacher)
    compress(candidate, cfg, blocks=given, target_params=target)
    mine, theirs = rebuilt.state_dict(), candidate.state_dict()
    assert mine.keys() == theirs.keys()
    for name, tensor in mine.items():
        torch.testing.assert_close(tensor, theirs[name], msg=name)
