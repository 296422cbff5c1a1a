"""Per-block checkpoints: an interrupted lillama run resumes to the uninterrupted result."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimforge.compression import compress
from slimforge.compression.configs import LillamaConfig
from slimforge.compression.distill.checkpoints import BlockCheckpoints, tokens_fingerprint
from slimforge.compression.lowrank import count_parameters
from slimforge.compression.planning import resolve_target
from slimforge.compression.progress import Cancelled, RecordingReporter
from tests.compression.helpers import correlated_blocks, tiny_llama

FAST = {"learning_rate": 1e-4, "batch_size": 4, "epochs": 2}


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("strategy", ["uniform", "energy"])
def test_interrupted_run_resumes_to_the_same_weights(strategy: str, tmp_path: Path) -> None:
    blocks = correlated_blocks(8, 16)
    config = LillamaConfig(rank_strategy=strategy, **FAST)
    target = resolve_target(count_parameters(tiny_llama()), ratio=0.8)

    reference = tiny_llama()
    expected = compress(reference, config, blocks=blocks, target_params=target)

    # First attempt dies (cancellation stands in for a crash) once block 0 is checkpointed.
    work = tmp_path / "job"
    dying = RecordingReporter()
    original_event = dying.event

    def die_after_block_0(message: str, **kwargs: object) -> None:
        original_event(message, **kwargs)  # type: ignore[arg-type]
        if message.startswith("trained block model.layers.0"):
            raise Cancelled("worker died")

    dying.event = die_after_block_0  # type: ignore[method-assign]
    with pytest.raises(Cancelled):
        compress(
            tiny_llama(), config, blocks=blocks, target_params=target, reporter=dying, workdir=work
        )
    assert sorted(p.name for p in (work / "lillama").glob("block_*")) == [
        "block_00000.json",
        "block_00000.safetensors",
    ]

    resumed = tiny_llama()
    reporter = RecordingReporter()
    result = compress(
        resumed, config, blocks=blocks, target_params=target, reporter=reporter, workdir=work
    )
    messages = [m for _, m, _ in reporter.events]
    assert "resuming from 1 checkpointed block(s)" in messages
    assert "resumed block model.layers.0" in messages
    assert "trained block model.layers.1" in messages
    assert result.ranks == expected.ranks
    got, want = _state(resumed), _state(reference)
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    # Losses of the resumed block come from its checkpoint, so the record is complete.
    assert [b["loss_after"] for b in result.details["blocks"]] == [
        b["loss_after"] for b in expected.details["blocks"]
    ]


def test_checkpoints_of_another_run_are_discarded(tmp_path: Path) -> None:
    model = tiny_llama()
    layer = model.model.layers[0]
    ckpt = BlockCheckpoints(tmp_path / "c", {"run": 1})
    ckpt.save(0, layer, {"loss_after": 1.0})
    ckpt.put_json("plan", {"ranks": {}})
    assert BlockCheckpoints(tmp_path / "c", {"run": 1}).finished() == [0]
    other = BlockCheckpoints(tmp_path / "c", {"run": 2})
    assert other.finished() == [] and other.get_json("plan") is None
    assert not list((tmp_path / "c").glob("*.tmp"))


def test_checkpoint_round_trip_and_fingerprint(tmp_path: Path) -> None:
    source, dest = tiny_llama(seed=1).model.layers[0], tiny_llama(seed=2).model.layers[0]
    ckpt = BlockCheckpoints(tmp_path, {"run": 1})
    ckpt.save(3, source, {"steps": 7})
    assert ckpt.has(3) and not ckpt.has(2)
    assert ckpt.load(3, dest) == {"steps": 7}
    for (name, a), b in zip(source.state_dict().items(), dest.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    blocks = correlated_blocks(4, 8)
    assert tokens_fingerprint(blocks) == tokens_fingerprint(blocks.clone())
    assert tokens_fingerprint(blocks) != tokens_fingerprint(blocks.flip(0))
