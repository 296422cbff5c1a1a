"""Lillama's measuring pass: the (whitened) spectra of every candidate matrix, from a teacher
pass that streams the layers like the training pass does (the ``energy`` rank strategy)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from slimforge.compression.calibration import recording_input_grams
from slimforge.compression.distill.activations import SpillPool
from slimforge.compression.distill.streaming import Activations, Context, placed, propagate
from slimforge.compression.lowrank import dense_weight
from slimforge.compression.methods.factorization.factors import singular_values
from slimforge.compression.methods.lillama.config import LillamaConfig
from slimforge.compression.planning import LinearShape, block_index
from slimforge.compression.progress import Reporter

__all__ = ["measure_spectra", "outputs_and_grams"]


def outputs_and_grams(
    layer: nn.Module,
    local: list[str],
    x: Activations,
    contexts: list[Context],
    pool: SpillPool,
) -> tuple[Activations, dict[str, torch.Tensor]]:
    """The layer's outputs for every batch and the input Grams of its modules ``local``, from
    one pass (a batch at a time, so spilled inputs stay on disk)."""
    with recording_input_grams(layer, local) as recorder:
        y = pool.new()
        for xb, ctx in zip(x, contexts, strict=True):
            y.append(propagate(layer, [xb], [ctx])[0])
            recorder.end_batch()
    return y, recorder.result(local)


@torch.no_grad()
def measure_spectra(
    config: LillamaConfig,
    shapes: Sequence[LinearShape],
    prefix: str,
    layers: nn.ModuleList,
    inputs: Activations,
    contexts: list[Context],
    reporter: Reporter,
    pool: SpillPool,
    stream: torch.device | None,
) -> dict[str, list[float]]:
    """Singular values of every candidate's (whitened) weight, from a teacher pass that
    streams the layers like the training pass does (one layer's activations at a time)."""
    by_layer: dict[int, list[str]] = {}
    for s in shapes:
        idx = block_index(s.name.removeprefix(prefix + "."))
        assert idx is not None
        by_layer.setdefault(idx, []).append(s.name)
    spectra: dict[str, list[float]] = {}
    x = inputs
    last = max(by_layer)
    for i in range(last + 1):
        reporter.check_cancelled()
        layer, members = layers[i], by_layer.get(i, [])
        local = [n.removeprefix(f"{prefix}.{i}.") for n in members]
        with placed(layer, stream):
            x, layer_spectra = _layer_spectra(
                config, layer, members, local, x, contexts, pool, last_layer=i == last
            )
        spectra.update(layer_spectra)
        reporter.event(
            f"measured block {prefix}.{i}",
            data={"index": i + 1, "total": last + 1, "modules": len(members)},
        )
    return spectra


def _layer_spectra(
    config: LillamaConfig,
    layer: nn.Module,
    members: list[str],
    local: list[str],
    x: Activations,
    contexts: list[Context],
    pool: SpillPool,
    *,
    last_layer: bool,
) -> tuple[Activations, dict[str, list[float]]]:
    """One layer of the spectra pass: (its outputs, its members' singular values)."""
    grams = None
    y: Activations
    if members and config.whitening:
        y, by_local = outputs_and_grams(layer, local, x, contexts, pool)
        grams = {
            n: by_local[short] for n, short in zip(members, local, strict=True) if short in by_local
        }
    elif not last_layer:
        y = propagate(layer, x, contexts, pool)
    else:  # nothing above needs this layer's output
        y = x
    weights = {
        n: dense_weight(layer.get_submodule(short)) for n, short in zip(members, local, strict=True)
    }
    return y, singular_values(weights, grams, config.damping)
