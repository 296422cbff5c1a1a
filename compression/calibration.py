"""Input statistics of Linear layers on calibration text, gathered with forward hooks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from slimforge.compression.progress import NullReporter, Reporter

__all__ = ["GramRecorder", "collect_input_grams", "recording_input_grams"]


class GramRecorder:
    """Accumulates Σ xᵀx per input; modules fed the same tensor object share one Gram.

    q/k/v (and gate/up) receive the very same normed hidden-states tensor in one forward, so a
    hook that sees the tensor the previous hook just consumed records an alias instead of
    spending another in x in matmul and another in² float64 buffer.
    """

    def __init__(self) -> None:
        self.grams: dict[str, torch.Tensor] = {}  # leader name -> [in, in] float64
        self.leader_of: dict[str, str] = {}  # follower name -> leader name
        self._last_x: torch.Tensor | None = None
        self._last_leader: str | None = None

    def hook(self, name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        """A forward pre-hook that feeds module ``name``'s input into its (shared) Gram."""

        def fn(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]
            if self._last_x is not None and x is self._last_x and name not in self.grams:
                leader = self._last_leader
                assert leader is not None
                if self.leader_of.setdefault(name, leader) != leader:
                    raise RuntimeError(f"{name}: input sharing changed between batches")
                return
            if name in self.leader_of:
                raise RuntimeError(f"{name}: input sharing changed between batches")
            flat = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)  # [tokens, in]
            gram = self.grams.get(name)
            if gram is None:
                gram = self.grams[name] = torch.zeros(
                    flat.shape[1], flat.shape[1], dtype=torch.float64, device=flat.device
                )
            gram.addmm_(flat.T, flat)
            self._last_x, self._last_leader = x, name

        return fn

    def end_batch(self) -> None:
        # Drop the reference so the activation can be freed (and ids are never reused).
        self._last_x = self._last_leader = None

    def result(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """Grams by name; a module no input reached (an expert no token was routed to) is
        left out."""
        out = {}
        for n in names:
            gram = self.grams.get(self.leader_of.get(n, n))
            if gram is not None:
                out[n] = gram
        return out


@contextlib.contextmanager
def recording_input_grams(root: nn.Module, module_names: Sequence[str]) -> Iterator[GramRecorder]:
    """Hooks on ``root``'s named submodules while the block runs; yields the recorder.

    Call ``recorder.end_batch()`` after each forward and ``recorder.result(names)`` at the end
    for the float64 Grams (shared between modules fed the same tensor). Hooks are removed on
    exit.
    """
    recorder = GramRecorder()
    handles = [
        root.get_submodule(name).register_forward_pre_hook(recorder.hook(name))
        for name in module_names
    ]
    try:
        yield recorder
    finally:
        for h in handles:
            h.remove()
        recorder.end_batch()


@torch.no_grad()
def collect_input_grams(
    model: nn.Module,
    blocks: torch.Tensor,
    module_names: Sequence[str],
    *,
    batch_size: int = 4,
    reporter: Reporter | None = None,
) -> tuple[dict[str, torch.Tensor], int]:
    """Float64 input Gram matrices Σ xᵀx ([in, in]) of the named modules, in one pass.

    ``blocks`` is a LongTensor [n_blocks, seq_len] (no padding: every token counts). Modules
    that receive the same input tensor get the same Gram tensor object. Returns the Grams by
    module name and the number of tokens used. Cancellation is checked between batches.
    """
    reporter = reporter or NullReporter()
    if blocks.dim() != 2 or blocks.shape[0] == 0:
        raise ValueError(
            f"blocks must be a non-empty [n_blocks, seq_len] tensor, got {tuple(blocks.shape)}"
        )
    # The decoder alone: the LM head's [tokens, vocab] logits are not needed for input stats.
    body = getattr(model, "base_model", model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    n_batches = (blocks.shape[0] + batch_size - 1) // batch_size
    tokens = 0
    try:
        with recording_input_grams(model, module_names) as collector:
            for i in range(n_batches):
                reporter.check_cancelled()
                batch = blocks[i * batch_size : (i + 1) * batch_size].to(device)  # [b, seq_len]
                body(input_ids=batch, use_cache=False)
                collector.end_batch()
                tokens += batch.numel()
                reporter.event(
                    "calibration batch done",
                    data={"index": i + 1, "total": n_batches, "tokens": tokens},
                )
    finally:
        model.train(was_training)
    # Only mixture-of-experts experts may legitimately see no token (routing).
    missing = [
        n
        for n in module_names
        if collector.leader_of.get(n, n) not in collector.grams and ".experts." not in n
    ]
    if missing:
        raise RuntimeError(f"no calibration input reached: {', '.join(missing[:5])}")
    return collector.result(module_names), tokens
