"""Method ``lillama``: low-rank factorisation trained by local feature distillation.

Plan ranks from shapes; capture what the model feeds its first decoder layer for every
calibration batch (hidden states plus the extras: position embeddings, attention mask …); then
stream layer by layer, keeping only the current layer's activations:

1. teacher outputs y = L(x_T) with the dense layer (and, for whitening, the input Grams of its
   planned Linears, from x_T, in the same pass);
2. replace the planned Linears by (whitened-)SVD-initialised ``LowRankLinear`` factors;
3. train the factors on l(S(x_T), y) + l(S(x_S), y) (``slimforge.compression.distill.blockwise``);
4. x_T <- y, x_S <- S(x_S).

Layers without planned modules are only propagated; with bottom-first plans the layers above the
last planned one are never run. Given a ``device`` (a GPU) while the model stays in CPU memory,
each layer is moved there for its turn and back afterwards: accelerator memory holds one layer
and one batch of activations, and layers above the last planned one are never moved at all.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimforge.compression.distill.activations import SpillPool
from slimforge.compression.distill.blockwise import train_block
from slimforge.compression.distill.checkpoints import BlockCheckpoints, tokens_fingerprint
from slimforge.compression.distill.streaming import (
    Activations,
    Context,
    capture_layer_inputs,
    contexts_on,
    decoder_layers,
    placed,
    propagate,
)
from slimforge.compression.lowrank import (
    LowRankLinear,
    count_parameters,
    dense_weight,
    linear_shapes,
    set_module,
)
from slimforge.compression.methods.factorization.method import (
    FactorizationMethod,
    factorize_module,
)
from slimforge.compression.methods.lillama.config import LillamaConfig
from slimforge.compression.methods.lillama.spectra import measure_spectra, outputs_and_grams
from slimforge.compression.methods.method import MethodResult
from slimforge.compression.planning import RankPlan, block_index
from slimforge.compression.progress import Reporter

__all__ = ["LillamaMethod"]


class LillamaMethod(FactorizationMethod[LillamaConfig]):
    """Low-rank factors initialised by (whitened) SVD, trained block by block (Lillama)."""

    streams_layers = True  # accepts a compute ``device`` apart from where the model lives

    def _compress(
        self,
        model: nn.Module,
        config: LillamaConfig,
        *,
        blocks: torch.Tensor,
        target_params: int,
        reporter: Reporter,
        workdir: Path | None,
        device: torch.device | None,
    ) -> MethodResult:
        """Factorise and distil ``model``'s planned Linears in place, layer by layer.

        With ``workdir``, every finished block is checkpointed there; a later call for the same
        model, config, target and calibration tokens (a restarted job) loads those blocks instead
        of training them again and gives the same result as an uninterrupted run. With
        ``device``, each layer computes there in turn while the model stays where it is.
        """
        # Shapes only, before any data: an unreachable target fails at once. With the energy
        # strategy this is the uniform plan (same reachable range); _run measures, then plans.
        plan = self._plan(model, config, target_params)
        if blocks.dim() != 2 or blocks.shape[0] == 0:
            raise ValueError(
                f"blocks must be a non-empty [n_blocks, seq_len] tensor, got {tuple(blocks.shape)}"
            )
        was_training = model.training
        model.eval()
        try:
            checkpoints = None
            if workdir is not None:
                manifest = {
                    "method": "lillama",
                    "config": config.model_dump(mode="json"),
                    "target_params": target_params,
                    "params_before": plan.params_before,
                    "calibration": tokens_fingerprint(blocks),
                }
                checkpoints = BlockCheckpoints(workdir / "lillama", manifest)
            pool = SpillPool(
                None
                if config.activation_memory_gb is None
                else int(config.activation_memory_gb * 2**30 / 4),  # 4 lists live at once
                None if workdir is None else workdir / "lillama-activations",
            )
            try:
                return self._run(
                    model, config, plan, blocks, target_params, reporter, checkpoints, pool,
                    device,
                )  # fmt: skip
            finally:
                pool.close()
                if workdir is not None:
                    shutil.rmtree(workdir / "lillama-activations", ignore_errors=True)
        finally:
            model.train(was_training)

    def _run(
        self,
        model: nn.Module,
        config: LillamaConfig,
        plan: RankPlan,
        blocks: torch.Tensor,
        target_params: int,
        reporter: Reporter,
        checkpoints: BlockCheckpoints | None,
        pool: SpillPool,
        stream: torch.device | None,
    ) -> MethodResult:
        chunks = list(blocks.split(config.batch_size))
        inputs: Activations | None = None
        saved_plan = checkpoints.get_json("plan") if checkpoints else None
        if saved_plan is not None:  # a resumed run keeps the plan it measured the first time
            plan = RankPlan(**saved_plan)
        elif config.rank_strategy == "energy":
            # Measure first: every candidate's spectrum from one teacher pass, then plan.
            shapes = linear_shapes(model, config.target_modules)
            prefix, layers = decoder_layers(model, [s.name for s in shapes])
            reporter.check_cancelled()
            inputs, contexts = capture_layer_inputs(model, layers[0], chunks, pool)
            if stream is not None:
                contexts = contexts_on(contexts, stream)
            spectra = measure_spectra(
                config, shapes, prefix, layers, inputs, contexts, reporter, pool, stream
            )
            plan = config.plan(
                shapes,
                total_params=plan.params_before,
                target_params=target_params,
                spectra=spectra,
            )
        if checkpoints is not None and saved_plan is None:
            checkpoints.put_json("plan", dataclasses.asdict(plan))
        resumable = checkpoints.finished() if checkpoints else []
        names = list(plan.ranks)
        reporter.event(
            "rank plan ready",
            data={
                "modules": len(names),
                "params_before": plan.params_before,
                "params_target": target_params,
                "params_planned": plan.params_after,
                "strategy": config.rank_strategy,
            },
        )
        if resumable:
            reporter.event(
                f"resuming from {len(resumable)} checkpointed block(s)",
                data={"checkpointed_blocks": resumable},
            )
        details: dict[str, Any] = {
            "rank_strategy": config.rank_strategy,
            "whitening": config.whitening,
            "learning_rate": config.learning_rate,
            "batch_size": config.batch_size,
            "epochs": config.epochs,
            "target_params": target_params,
            "modules_factorised": len(names),
            "blocks": [],
            "streamed_to": None if stream is None else str(stream),
            "streamed_blocks": [],  # layers moved to ``streamed_to``: never those above the last
        }
        if not names:
            return MethodResult({}, plan.params_before, count_parameters(model), 0, details)

        prefix, layers = decoder_layers(model, names)
        by_layer: dict[int, list[str]] = {}
        for name in names:
            idx = block_index(name.removeprefix(prefix + "."))
            assert idx is not None
            by_layer.setdefault(idx, []).append(name)
        last = max(by_layer)  # layers above the last planned one never change
        if inputs is None:
            reporter.check_cancelled()
            inputs, contexts = capture_layer_inputs(model, layers[0], chunks, pool)
            if stream is not None:
                contexts = contexts_on(contexts, stream)
        x_t = x_s = inputs  # the same list until the first compressed layer
        for i in range(last + 1):
            reporter.check_cancelled()
            members = by_layer.get(i, [])
            if stream is not None:
                details["streamed_blocks"].append(i)
            with placed(layers[i], stream):
                if members and checkpoints is not None and checkpoints.has(i):
                    x_t, x_s, info = self._resume_layer(
                        checkpoints, i, layers[i], f"{prefix}.{i}", members, plan,
                        x_t, x_s, contexts, pool,
                    )  # fmt: skip
                else:
                    x_t, x_s, info = self._layer(
                        config, layers[i], f"{prefix}.{i}", members, plan,
                        x_t, x_s, contexts, reporter, pool,
                    )  # fmt: skip
                    if members and checkpoints is not None:
                        checkpoints.save(i, layers[i], info)
            details["blocks"].append(info)
            verb = "resumed" if info.get("resumed") else "trained" if info["steps"] else "passed"
            reporter.event(
                f"{verb} block {info['block']}",
                data={**info, "index": i + 1, "total": last + 1},
            )

        params_after = count_parameters(model)
        if params_after != plan.params_after:
            raise RuntimeError(f"planned {plan.params_after} parameters, model has {params_after}")
        trained = [b for b in details["blocks"] if b["steps"]]
        details["mean_loss_before"] = sum(b["loss_before"] for b in trained) / len(trained)
        details["mean_loss_after"] = sum(b["loss_after"] for b in trained) / len(trained)
        return MethodResult(
            ranks=dict(plan.ranks),
            params_before=plan.params_before,
            params_after=params_after,
            tokens_used=int(blocks.numel()),
            details=details,
        )

    def _resume_layer(
        self,
        checkpoints: BlockCheckpoints,
        index: int,
        layer: nn.Module,
        block: str,
        members: list[str],
        plan: RankPlan,
        x_t: Activations,
        x_s: Activations,
        contexts: list[Context],
        pool: SpillPool,
    ) -> tuple[Activations, Activations, dict[str, Any]]:
        """A checkpointed layer: the dense teacher's outputs, then its factors loaded from the
        checkpoint (no Gram, no SVD, no training) and the student inputs pushed through."""
        y = propagate(layer, x_t, contexts, pool)
        for name in members:
            short = name.removeprefix(block + ".")
            module = layer.get_submodule(short)
            weight = dense_weight(module)
            shell = LowRankLinear(
                weight.shape[1],
                weight.shape[0],
                plan.ranks[name],
                getattr(module, "bias", None) is not None,
                device=weight.device,
                dtype=weight.dtype,
            )
            set_module(layer, short, shell)
        info = checkpoints.load(index, layer)
        x_s = propagate(layer, x_s, contexts, pool)
        return y, x_s, {**info, "resumed": True}

    def _layer(
        self,
        config: LillamaConfig,
        layer: nn.Module,
        block: str,
        members: list[str],
        plan: RankPlan,
        x_t: Activations,
        x_s: Activations,
        contexts: list[Context],
        reporter: Reporter,
        pool: SpillPool,
    ) -> tuple[Activations, Activations, dict[str, Any]]:
        """One layer: teacher outputs, factorise, train; returns the next (x_T, x_S, info)."""
        t0 = time.monotonic()
        info: dict[str, Any] = {
            "block": block,
            "ranks": {n.removeprefix(block + "."): plan.ranks[n] for n in members},
            "loss_before": None,
            "loss_after": None,
            "steps": 0,
        }
        if not members:
            y = propagate(layer, x_t, contexts, pool)
            x_s = y if x_s is x_t else propagate(layer, x_s, contexts, pool)
            info["seconds"] = round(time.monotonic() - t0, 3)
            return y, x_s, info

        local = [n.removeprefix(block + ".") for n in members]
        grams: dict[str, torch.Tensor] = {}
        if config.whitening:
            y, grams = outputs_and_grams(layer, local, x_t, contexts, pool)
        else:
            y = propagate(layer, x_t, contexts, pool)

        whiteners: dict[int, torch.Tensor] = {}  # id(shared Gram) -> S, reused by q/k/v
        for name, short in zip(members, local, strict=True):
            # No Gram: plain init, or an expert no token was routed to.
            gram = grams.get(short) if config.whitening else None
            factorize_module(
                layer,
                short,
                plan.ranks[name],
                gram=gram,
                damping=config.damping,
                whiteners=whiteners,
            )
        del whiteners

        # fp32 master weights while training; back to the model's dtype afterwards.
        dtype = next(layer.parameters()).dtype
        layer.float()
        result = train_block(
            layer,
            x_t,
            x_s,
            y,
            contexts,
            learning_rate=config.learning_rate,
            weight_decay=config.weight_decay,
            epochs=config.epochs,
            max_steps=config.max_steps_per_block,
            check=reporter.check_cancelled,
        )
        layer.to(dtype)
        x_s = propagate(layer, x_s, contexts, pool)
        info.update(
            loss_before=result.loss_before,
            loss_after=result.loss_after,
            steps=result.steps,
            seconds=round(time.monotonic() - t0, 3),
        )
        return y, x_s, info
