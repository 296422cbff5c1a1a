"""A job's GGUF outputs (``output.formats`` with 'gguf'), for the loading and exporting stages.

- :func:`check_gguf_output` (loading): the types to write, and whether llama.cpp can take the
  result at all (standard architecture, an architecture its converter knows, the converter and
  quantiser installed on this worker), before any compression.
- :func:`write_gguf_files` (exporting): llama.cpp's converter and quantiser
  (:func:`slimforge.compression.gguf_export.export_ggufs`) write ``<name>.<TYPE>.gguf`` into the
  exported folder, and llama.cpp scores each file on the held-out text
  (:func:`slimforge.compression.gguf_eval.gguf_perplexity`): that it loads and runs the file is
  part of the export. What it finds goes to ``metrics["gguf"]`` (see
  :mod:`slimforge.compression.model_card.gguf`).
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from slimforge.app.jobs.outputs import DEFAULTED, input_gguf_type, standard_methods
from slimforge.compression import perplexity
from slimforge.compression.gguf_eval import gguf_perplexity
from slimforge.compression.gguf_export import converter_dir, export_ggufs, gguf_supported
from slimforge.worker.context import JobContext

__all__ = ["GGUF_EVAL_TOKENS", "OutputFormatError", "check_gguf_output", "write_gguf_files"]

# Held-out tokens (whole blocks, at least one) each GGUF file is scored on: enough for a
# perplexity within about 1 % of the full text's, cheap next to the job (llama.cpp runs on the
# CPU, also on a GPU worker).
GGUF_EVAL_TOKENS = 4096


class OutputFormatError(RuntimeError):
    """An output format asked for could not be written; the message says why and what is kept."""


def _types(ctx: JobContext) -> list[str]:
    """The GGUF types to write ([] for none), as resolved at submit; an input type the API
    could not read is read here by the same rule (``input_gguf_type``)."""
    output = ctx.request.output
    if output is None or not output.wants_gguf:
        return []
    if output.gguf_type:
        return list(output.gguf_type)
    model = ctx.request.model
    if model.path is None or model.gguf_file is None:
        return ["f16"]
    found, why = input_gguf_type(Path(model.path) / model.gguf_file)
    ctx.reporter.event(f"output: GGUF {found} ({why})", data={"gguf_type": [found]})
    return [found]


def check_gguf_output(ctx: JobContext, model: Any) -> None:
    """At loading: set ``ctx.gguf_types`` and refuse (ValueError, naming ``output.formats``) a
    GGUF output llama.cpp could not take or this worker could not write. GGUF files chosen by
    default (a GGUF input's) that this worker cannot write are dropped, said in a warning."""
    ctx.gguf_types = _types(ctx)
    if not ctx.gguf_types:
        return
    if not ctx.method.standard_architecture():
        raise ValueError(
            f"output.formats: method '{ctx.method.name}' gives custom (low-rank) layers that "
            f"llama.cpp does not know; use {', '.join(standard_methods())} or formats "
            "['safetensors']"
        )
    config = model.config.to_dict()
    config["architectures"] = config.get("architectures") or [type(model).__name__]
    try:
        converter_dir()  # installed here (gguf_supported's answer may be cached)
        verdict = gguf_supported(config)
    except RuntimeError as exc:
        if ctx.stored_metrics.get(DEFAULTED):
            ctx.reporter.event(
                "no GGUF output: this worker cannot write GGUF files (the gguf extra is not "
                "installed); the artifact is safetensors only",
                level="warning",
                data={"gguf_type": ctx.gguf_types, "reason": str(exc)},
            )
            ctx.gguf_types = []
            return
        raise ValueError(
            "output.formats asks for 'gguf', but this worker cannot write GGUF files (for the "
            f"operator: {exc}); submit with formats ['safetensors'], or ask the operator to "
            "install the gguf extra (scripts/setup.sh --dev, or the worker image)"
        ) from None
    if verdict is not True:
        raise ValueError(f"output.formats asks for 'gguf', but {verdict}; use ['safetensors']")


def _scoring_blocks(ctx: JobContext) -> torch.Tensor | None:
    if ctx.eval_blocks is None:
        return None
    seq_len = ctx.eval_blocks.shape[1]
    return ctx.eval_blocks[: max(1, GGUF_EVAL_TOKENS // seq_len)]


def write_gguf_files(ctx: JobContext, folder: Path, *, stem: str) -> dict[str, Any]:
    """Write ``ctx.gguf_types`` as GGUF files into the exported ``folder`` and score each with
    llama.cpp on the first :data:`GGUF_EVAL_TOKENS` held-out tokens (transformers' perplexity of
    the exported model on the same blocks beside them). Returns ``metrics["gguf"]``.

    Raises:
        OutputFormatError: converting, quantising or running a file failed (llama.cpp's log
            quoted); files written so far are removed.
        slimforge.compression.progress.Cancelled: the job was cancelled between files.
    """
    threads = torch.get_num_threads()
    ctx.reporter.event("writing GGUF files", data={"gguf_type": ctx.gguf_types})
    try:
        paths = export_ggufs(
            folder, folder, ctx.gguf_types, stem=stem, n_threads=threads, reporter=ctx.reporter
        )
        blocks = _scoring_blocks(ctx)
        scores = [
            None if blocks is None else gguf_perplexity(p, blocks.numpy(), n_threads=threads)
            for p in paths
        ]
    except (RuntimeError, ValueError) as exc:
        for stray in folder.glob("*.gguf"):
            stray.unlink()
        raise OutputFormatError(f"writing the GGUF output failed: {exc}") from None
    files = [
        {"path": p.name, "gguf_type": t, "size": p.stat().st_size, "perplexity": s}
        for p, t, s in zip(paths, ctx.gguf_types, scores, strict=True)
    ]
    found: dict[str, Any] = {"files": files, "llama_cpp_python": version("llama-cpp-python")}
    if blocks is not None:
        found["eval_tokens"] = int(blocks.numel())
        found["student_perplexity"] = perplexity(ctx.model, blocks)
    ctx.reporter.event("GGUF files scored by llama.cpp", data=found)
    return found
