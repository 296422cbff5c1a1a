"""Stream a model's decoder layers over calibration batches, one layer at a time.

Capture what the model feeds its first decoder layer (hidden states plus extras: position
embeddings, attention mask …) with a pre-hook that stops the forward, then push the batches
through any layer on its own. Shared by the block-local methods (``lillama``; later pruning).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from slimforge.compression.distill.activations import ActivationList, SpillPool
from slimforge.compression.distill.blockwise import run_block

__all__ = [
    "Activations",
    "Context",
    "capture_layer_inputs",
    "contexts_on",
    "decoder_layers",
    "placed",
    "propagate",
]

Context = tuple[tuple[Any, ...], dict[str, Any]]
# Per-batch activations: in RAM, or in a SpillPool list that may keep some on disk.
Activations = list[torch.Tensor] | ActivationList


def decoder_layers(model: nn.Module, names: Sequence[str]) -> tuple[str, nn.ModuleList]:
    """The path and the ``ModuleList`` of decoder layers holding the modules ``names``.

    The list is the prefix of the names up to their first numeric component
    (``model.layers.3.mlp.up_proj`` -> ``model.layers``); all names must share it.
    """
    prefixes = set()
    for name in names:
        parts = name.split(".")
        idx = next(i for i, p in enumerate(parts) if p.isdigit())
        prefixes.add(".".join(parts[:idx]))
    if len(prefixes) != 1:
        raise ValueError(f"modules lie in more than one layer list: {sorted(prefixes)}")
    prefix = prefixes.pop()
    layers = model.get_submodule(prefix)
    if not isinstance(layers, nn.ModuleList | nn.Sequential):
        raise ValueError(f"{prefix} is not a list of decoder layers")
    return prefix, layers  # type: ignore[return-value]


class _Captured(Exception):
    """Raised by the layer-0 hook to stop the forward once its inputs are recorded."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__("captured")
        self.args, self.kwargs = args, kwargs


def _same(a: Any, b: Any) -> bool:
    """Structural equality of captured layer extras (tensors by value)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and bool(torch.equal(a, b))
        )
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a is b or a == b)
    except Exception:  # objects without a usable ==
        return False


@torch.no_grad()
def capture_layer_inputs(
    model: nn.Module,
    first_layer: nn.Module,
    chunks: Sequence[torch.Tensor],
    pool: SpillPool | None = None,
) -> tuple[Activations, list[Context]]:
    """Hidden states entering ``first_layer`` (on CPU, in ``pool``'s lists if given, so they
    may spill to disk) and the extra (args, kwargs) the model passes it, for every batch of
    token ids in ``chunks``.

    A forward pre-hook (with kwargs) records the call and raises to stop the forward, so nothing
    above the first layer runs. Extras equal to the previous batch's are shared, not copied.
    """

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        raise _Captured(args, kwargs)

    body = getattr(model, "base_model", model)
    device = next(model.parameters()).device
    hidden: Activations = pool.new() if pool is not None else []
    contexts: list[Context] = []
    handle = first_layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for chunk in chunks:
            try:
                body(input_ids=chunk.to(device), use_cache=False)
            except _Captured as cap:
                args, kwargs = cap.args, dict(cap.kwargs)
            else:
                raise RuntimeError("the model's forward never reached its first decoder layer")
            if args:
                x, extra_args = args[0], tuple(args[1:])
            else:
                x, extra_args = kwargs.pop("hidden_states"), ()
            kwargs.pop("use_cache", None)
            context: Context = (extra_args, kwargs)
            if contexts and _same(contexts[-1], context):
                context = contexts[-1]
            hidden.append(x.detach().cpu())
            contexts.append(context)
    finally:
        handle.remove()
    return hidden, contexts


@torch.no_grad()
def propagate(
    layer: nn.Module,
    inputs: Sequence[torch.Tensor],
    contexts: Sequence[Context],
    pool: SpillPool | None = None,
) -> Activations:
    """The layer's outputs for every batch (on CPU, in the layer's dtype; in a ``pool`` list
    if given). Batches are read one at a time, so disk-backed inputs stay on disk."""
    param = next(layer.parameters())
    out: Activations = pool.new() if pool is not None else []
    for i in range(len(inputs)):
        args, kwargs = contexts[i]
        out.append(run_block(layer, inputs[i].to(param.device, param.dtype), args, kwargs).cpu())
    return out


def _moved(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple | list):
        return type(obj)(_moved(x, device) for x in obj)
    if isinstance(obj, dict):
        return {k: _moved(v, device) for k, v in obj.items()}
    return obj  # None, flags, config objects: nothing to move


def contexts_on(contexts: Sequence[Context], device: torch.device) -> list[Context]:
    """``contexts`` with every tensor (position embeddings, masks …) on ``device``; entries
    shared between batches stay shared, so each distinct context is copied once."""
    copies: dict[int, Context] = {}
    out = []
    for ctx in contexts:
        if id(ctx) not in copies:
            copies[id(ctx)] = _moved(ctx, device)
        out.append(copies[id(ctx)])
    return out


@contextlib.contextmanager
def placed(layer: nn.Module, device: torch.device | None) -> Iterator[None]:
    """Run the body with ``layer`` on ``device`` (when given), then move it back where it was:
    streaming one layer at a time onto an accelerator keeps its memory to one layer, with
    the model itself in CPU memory. Modules the body swaps in come back too."""
    if device is None:
        yield
        return
    home = next(layer.parameters()).device
    layer.to(device)
    try:
        yield
    finally:
        layer.to(home)
