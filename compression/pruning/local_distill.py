"""Local distillation of pruned MLPs: each narrowed MLP trained alone to reproduce the original's.

The refit (:mod:`slimforge.compression.pruning.refit`) solves the down projection in closed
form for the kept neurons as they are. Training the whole pruned MLP (gate, up and down) lets
the kept neurons themselves move to cover what the removed ones did. Each block is trained on
its own, in parallel form: its input x is the *original* model's MLP input on the calibration
text and its target y the original MLP's output on it, so no error from the blocks below
reaches it and one pass of the original over the text serves every block. With the block's
input unchanged, matching the MLP output is matching the block's output, which is Lillama's
local (block-wise) feature distillation (Sy et al., arXiv 2412.16719, §3.2) applied to a pruned
MLP instead of low-rank factors. The loss is the refit's mean squared error (without its ridge
term), and training starts from whatever the pruning left (the refit's down projection when the
refit ran); Adam does not promise a lower error, so each block reports its error before and
after. Weights train in their own dtype: on a bf16 GPU worker most small updates round away
(float32 master weights would fix that; the stage is off by default).

Cost: one forward pass of the original over the text, then ``epochs`` passes of each pruned
MLP alone (forward and backward), a small share of a global kd step per token; memory
2 x blocks x tokens x hidden float32 values for the stored inputs and targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from slimforge.compression.progress import NullReporter, Reporter
from slimforge.compression.pruning.hooks import record_io
from slimforge.compression.pruning.layout import model_layout

__all__ = ["LocalDistillResult", "capture_mlp_io", "distill_mlps_locally", "mlp_io_bytes"]


@dataclass
class LocalDistillResult:
    """Mean over the trained blocks of the relative error ||mlp(x) - y||² / ||y||² on all the
    stored tokens, before and after training, and how many blocks were trained."""

    error_before: float
    error_after: float
    blocks: int


def mlp_io_bytes(hidden: int, layers: int, tokens: int) -> int:
    """Bytes :func:`capture_mlp_io` keeps: inputs and targets, float32."""
    return 2 * layers * tokens * hidden * 4


def _mlp_of(model: nn.Module, up: nn.Module) -> nn.Module:
    """The module holding ``up`` (the block's MLP: ``mlp`` of a Llama block)."""
    name = next(n for n, m in model.named_modules() if m is up)
    return model.get_submodule(name.rpartition(".")[0])


@torch.no_grad()
def capture_mlp_io(
    model: nn.Module, blocks: torch.Tensor, layers: Sequence[int], *, batch_size: int = 4
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """For each block index in ``layers`` of the unpruned ``model``: its MLP's input and output
    on ``blocks`` (LongTensor [n, seq_len]), each float32 [n * seq_len, hidden] on the CPU."""
    layout = model_layout(model).blocks
    store: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    handles = []
    for i in layers:
        up, down = layout[i].up, layout[i].down
        if up is None or down is None:
            continue
        ins: list[torch.Tensor] = []
        outs: list[torch.Tensor] = []
        store[i] = (ins, outs)
        handles += [
            record_io(up, ins, "in", rows_on_cpu=True),
            record_io(down, outs, "out", rows_on_cpu=True),
        ]
    device = next(model.parameters()).device
    try:
        for chunk in blocks.split(batch_size):
            model(input_ids=chunk.to(device))
    finally:
        for handle in handles:
            handle.remove()
    return {i: (torch.cat(ins), torch.cat(outs)) for i, (ins, outs) in store.items()}


def _relative_error(mlp: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    param = next(mlp.parameters())
    err = 0.0
    with torch.no_grad():
        for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
            out = mlp(xb.to(param.device, param.dtype)).float().cpu()
            err += float((out - yb).pow(2).sum())
    return err / max(float(y.pow(2).sum()), 1e-12)


def _train_mlp(
    mlp: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch: int,
    generator: torch.Generator,
) -> None:
    """Adam on the MLP's weights, mean squared error, ``epochs`` shuffled passes."""
    param = next(mlp.parameters())
    params = list(mlp.parameters())
    was = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    scale = max(float(y.pow(2).mean()), 1e-12)  # loss of order 1 whatever the block's scale
    try:
        for _ in range(epochs):
            order = torch.randperm(x.shape[0], generator=generator)
            for idx in order.split(batch):
                xb = x[idx].to(param.device, param.dtype)
                yb = y[idx].to(param.device, param.dtype)
                loss = (mlp(xb) - yb).float().pow(2).mean() / scale
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    finally:
        for p, w in zip(params, was, strict=True):
            p.requires_grad_(w)
            p.grad = None


def distill_mlps_locally(
    student: nn.Module,
    io: dict[int, tuple[torch.Tensor, torch.Tensor]],
    layers: Sequence[int],
    *,
    epochs: int,
    lr: float,
    batch_tokens: int = 256,
    seed: int = 0,
    reporter: Reporter | None = None,
) -> LocalDistillResult:
    """Train each narrowed MLP of the pruned ``student`` (block j is the original's block
    ``layers[j]``) to map the stored inputs to the stored outputs of ``io`` (from
    :func:`capture_mlp_io` on the original), in place. Blocks whose MLP kept its width, or that
    ``io`` lacks, are left alone. Cancellation is checked between blocks; an event per block
    reports its relative error before and after."""
    reporter = reporter or NullReporter()
    generator = torch.Generator().manual_seed(seed)
    blocks = model_layout(student).blocks
    before: list[float] = []
    after: list[float] = []
    for j, i in enumerate(layers):
        reporter.check_cancelled()
        up = blocks[j].up
        if i not in io or up is None:
            continue
        x, y = io[i]
        if up.in_features != x.shape[-1]:
            raise ValueError("local distillation needs the student to keep the hidden size")
        mlp = _mlp_of(student, up)
        e0 = _relative_error(mlp, x, y, batch_tokens * 8)
        _train_mlp(mlp, x, y, epochs=epochs, lr=lr, batch=batch_tokens, generator=generator)
        e1 = _relative_error(mlp, x, y, batch_tokens * 8)
        before.append(e0)
        after.append(e1)
        reporter.event(
            "mlp distilled locally",
            data={"block": i, "error_before": round(e0, 6), "error_after": round(e1, 6)},
        )
    n = len(before)
    return LocalDistillResult(
        error_before=sum(before) / n if n else 0.0,
        error_after=sum(after) / n if n else 0.0,
        blocks=n,
    )
