"""Activation lists that spill to disk past a RAM budget, and lillama runs that use them."""

from __future__ import annotations

import gc
from pathlib import Path

import torch

from slimforge.compression import compress
from slimforge.compression.configs import LillamaConfig
from slimforge.compression.distill.activations import SpillPool
from slimforge.compression.lowrank import count_parameters
from slimforge.compression.planning import resolve_target
from tests.compression.helpers import correlated_blocks, tiny_llama


def test_batches_past_the_budget_go_to_disk_and_come_back(tmp_path: Path) -> None:
    batches = [torch.randn(2, 3, 8) for _ in range(5)]
    budget = 2 * batches[0].numel() * 4  # two batches in RAM
    pool = SpillPool(budget, tmp_path / "spill")
    acts = pool.new(batches)
    assert len(acts) == 5 and acts.spilled == 3
    assert len(list((tmp_path / "spill").glob("*.pt"))) == 3
    for got, want in zip(acts, batches, strict=True):
        assert torch.equal(got, want)
    assert torch.equal(acts[-1], batches[-1]) and len(acts[1:4]) == 3
    assert pool.spilled_bytes == 3 * batches[0].numel() * 4
    del acts
    gc.collect()
    assert not list((tmp_path / "spill").glob("*.pt"))  # files go with their list


def test_unlimited_pool_keeps_everything_in_memory_and_temp_folders_are_removed() -> None:
    pool = SpillPool(None)
    acts = pool.new([torch.ones(4)] * 3)
    assert acts.spilled == 0 and pool.spilled_bytes == 0
    small = SpillPool(1)  # nothing fits: a temporary folder is created, then removed
    spilled = small.new([torch.ones(4)])
    folder = small.folder()
    assert spilled.spilled == 1 and folder.exists()
    small.close()
    assert not folder.exists()


def test_lillama_with_spilled_activations_matches_the_in_memory_run(tmp_path: Path) -> None:
    blocks = correlated_blocks(8, 16)
    target = resolve_target(count_parameters(tiny_llama()), ratio=0.8)
    fast = {"learning_rate": 1e-4, "batch_size": 4, "epochs": 2}
    in_memory, spilled = tiny_llama(), tiny_llama()
    compress(in_memory, LillamaConfig(**fast), blocks=blocks, target_params=target)
    # 1e-9 GB: every batch goes to disk.
    config = LillamaConfig(**fast, activation_memory_gb=1e-9)
    compress(spilled, config, blocks=blocks, target_params=target, workdir=tmp_path / "job")
    assert not (tmp_path / "job" / "lillama-activations").exists()
    a, b = in_memory.state_dict(), spilled.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
