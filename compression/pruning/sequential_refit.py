"""Sequential refit: each pruned block's down projection refit on the *student's* activations.

The plain refit (:mod:`slimforge.compression.pruning.refit`) solves every block from the
original model's activations, as if the blocks below were unpruned. They are not: each pruned
block hands a slightly different hidden state up, and the errors add up over depth. Here the
blocks are solved bottom-up, each on the calibration text as the already-refit student feeds
it, against what the original block outputs on the original's own hidden states. With H_s the
student's down-projection input ([tokens, k], its kept neurons), Y_t the original MLP's output
([tokens, hidden]) and W_s the student's current down weight [hidden, k],

    W' = argmin_V ||H_s Vᵀ - Y_t||² + λ||V - W_s||²  =  (Y_tᵀ H_s + λ W_s) (H_sᵀ H_s + λI)⁻¹,

λ = ``ridge`` x mean diag(H_sᵀ H_s). The MLP thus also makes up for the error the pruned blocks
below it (attention included) left in its input. This is the sequential, error-correcting form
of layer-wise reconstruction used by post-training compression (Frantar & Alistarh,
"SparseGPT", ICML 2023, §3: layers compressed one after another on the compressed model's
inputs), applied to He et al.'s (ICCV 2017, §3.1) least-squares channel-pruning refit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from slimforge.compression.distill.blockwise import run_block
from slimforge.compression.distill.streaming import capture_layer_inputs, decoder_layers, propagate
from slimforge.compression.progress import NullReporter, Reporter
from slimforge.compression.pruning.hooks import record_io
from slimforge.compression.pruning.layout import model_layout
from slimforge.compression.pruning.refit import down_projection_names

__all__ = ["sequential_refit"]


class _DownStats:
    """Accumulates H_sᵀH_s [k, k] and Y_tᵀH_s [hidden, k] (float64) over batches."""

    def __init__(self, k: int, hidden: int, device: torch.device) -> None:
        self.gram = torch.zeros(k, k, dtype=torch.float64, device=device)
        self.cross = torch.zeros(hidden, k, dtype=torch.float64, device=device)

    def add(self, student_in: torch.Tensor, teacher_out: torch.Tensor) -> None:
        h = student_in.reshape(-1, student_in.shape[-1]).double()  # [tokens, k]
        y = teacher_out.reshape(-1, teacher_out.shape[-1]).double()  # [tokens, hidden]
        self.gram += h.T @ h
        self.cross += y.T @ h

    def solve(self, current: torch.Tensor, ridge: float) -> torch.Tensor:
        """The refit weight [hidden, k] pulled toward ``current`` (same shape)."""
        reg = ridge * self.gram.diagonal().mean().clamp_min(1e-12)
        eye = torch.eye(self.gram.shape[0], dtype=self.gram.dtype, device=self.gram.device)
        rhs = self.cross + reg * current.double()  # [hidden, k]
        solved = torch.linalg.solve(self.gram + reg * eye, rhs.T).T
        return solved.to(current.dtype)


@torch.no_grad()
def _refit_block(
    t_layer: nn.Module,
    s_layer: nn.Module,
    t_down: nn.Linear,
    s_down: nn.Linear,
    t_hidden: Sequence[torch.Tensor],
    s_hidden: Sequence[torch.Tensor],
    contexts: Sequence[Any],
    ridge: float,
) -> None:
    """Refit ``s_down`` in place from one pass of both blocks over every batch."""
    stats = _DownStats(s_down.in_features, s_down.out_features, s_down.weight.device)
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    handles = [record_io(s_down, inputs, "in"), record_io(t_down, outputs, "out")]
    param = s_down.weight
    try:
        for i in range(len(t_hidden)):
            args, kwargs = contexts[i]
            run_block(t_layer, t_hidden[i].to(param.device, param.dtype), args, kwargs)
            run_block(s_layer, s_hidden[i].to(param.device, param.dtype), args, kwargs)
            stats.add(inputs.pop(), outputs.pop())
    finally:
        for handle in handles:
            handle.remove()
    s_down.weight.copy_(stats.solve(s_down.weight, ridge))


@torch.no_grad()
def sequential_refit(
    teacher: nn.Module,
    student: nn.Module,
    blocks: torch.Tensor,
    layers: Sequence[int],
    *,
    ridge: float,
    batch_size: int = 4,
    reporter: Reporter | None = None,
) -> int:
    """Refit, bottom-up, the down projection of every ``student`` block whose MLP is narrower
    than its ``teacher`` block's, on ``blocks`` (LongTensor [n, seq_len]) as the module doc
    says; returns how many blocks were refit.

    ``student`` is ``teacher`` pruned: its block j is the teacher's block ``layers[j]``, with
    the same hidden size (ValueError otherwise: the original hidden states would not describe
    the student's). Both models stay where they are (device, dtype); the activations of one
    batch list per model live in memory (``tokens x hidden`` values each). Cancellation is
    checked between blocks.
    """
    reporter = reporter or NullReporter()
    t_blocks, s_blocks = model_layout(teacher).blocks, model_layout(student).blocks
    if len(s_blocks) != len(layers):
        raise ValueError(f"the student has {len(s_blocks)} blocks but {len(layers)} are named")
    _, t_list = decoder_layers(teacher, down_projection_names(teacher))
    _, s_list = decoder_layers(student, down_projection_names(student))
    chunks = list(blocks.split(batch_size))
    t_hidden, contexts = capture_layer_inputs(teacher, t_list[0], chunks)
    s_hidden, _ = capture_layer_inputs(student, s_list[0], chunks)
    if t_hidden[0].shape != s_hidden[0].shape:
        raise ValueError("sequential refit needs the student to keep the teacher's hidden size")
    done = 0
    position = {block: j for j, block in enumerate(layers)}
    for i, t_layer in enumerate(t_list):
        reporter.check_cancelled()
        j = position.get(i)
        if j is not None:
            t_down, s_down = t_blocks[i].down, s_blocks[j].down
            if (
                t_down is not None
                and s_down is not None
                and s_down.in_features < t_down.in_features
            ):
                _refit_block(t_layer, s_list[j], t_down, s_down, t_hidden, s_hidden,
                             contexts, ridge)  # fmt: skip
                done += 1
            s_hidden = propagate(s_list[j], s_hidden, contexts)
        t_hidden = propagate(t_layer, t_hidden, contexts)
    return done
