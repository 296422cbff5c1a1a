"""Submit-time checks of a job against a local model, without loading it (no torch).

The model's shapes come from its config and the headers of exactly the weight files
transformers would load (``weight_files``); every section of the job is then checked against
them: the text's ``seq_len`` against the model's positions, the method's and the ``kd`` stage's
parameters against its shape (each parameter model's ``check_model``), and the target against
what the method can reach (``check_target``). Nothing here names a method. Models the reader
does not understand (and Hub models) are checked by the worker when it loads them.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from slimforge.app.errors import UnprocessableInput
from slimforge.compression.methods import check_target
from slimforge.compression.model_shapes import ModelShapes, read_model_shapes, weight_files
from slimforge.compression.parameters import ParameterConflict
from slimforge.compression.planning import UnreachableTargetError, resolve_target
from slimforge.contract.jobs import JobCreate

log = logging.getLogger("slimforge.api")

__all__ = ["check_job_against_model", "model_shapes"]


@functools.lru_cache(maxsize=64)
def _cached_shapes(
    folder: str, gguf_file: str | None, stamp: tuple[tuple[str, int, int], ...]
) -> ModelShapes | None:
    # ``stamp`` (name, size, mtime) of every file read makes a replaced file a cache miss.
    return read_model_shapes(Path(folder), gguf_file=gguf_file)


def model_shapes(folder: Path, gguf_file: str | None) -> ModelShapes | None:
    """The shapes of a local model, cached on the files transformers would load; None when
    they cannot be read here (the worker checks after loading)."""
    try:
        files = weight_files(folder, gguf_file=gguf_file)
        stats = [(p.name, p.stat()) for p in files]
        stamp = tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats)
        return _cached_shapes(str(folder), gguf_file, stamp)
    except Exception as exc:  # unreadable here: leave the verdict to the worker
        log.info("could not read shapes of %s: %s", folder, exc)
        return None


def _conflict(exc: ParameterConflict, section: str) -> UnprocessableInput:
    named = exc.within(section)
    return UnprocessableInput(str(named), details=named.details())


def _check_positions(body: JobCreate, shapes: ModelShapes) -> None:
    """A text's ``seq_len`` (tokens) must fit the model's position embeddings."""
    limit = shapes.max_positions
    for section in ("calibration", "evaluation"):
        data = getattr(body, section)
        if limit is None or data is None or data.seq_len <= limit:
            continue
        raise _conflict(
            ParameterConflict(
                "seq_len",
                value=data.seq_len,
                model_value=limit,
                working_value=limit,
                reason=f"the model has positions for {limit} tokens "
                "(max_position_embeddings / n_positions)",
            ),
            section,
        )


def check_job_against_model(body: JobCreate, folder: Path) -> int | None:
    """Refuse (422) a job the local model rules out; returns the model's parameter count
    when it could be read."""
    shapes = model_shapes(folder, body.model.gguf_file)
    if shapes is None:
        return None
    _check_positions(body, shapes)
    if body.distill is not None:
        try:
            body.distill.check_model(shapes)
        except ParameterConflict as exc:
            raise _conflict(exc, "distill") from None
    target = resolve_target(shapes.total_params, params=body.target.params, ratio=body.target.ratio)
    try:
        check_target(body.method, shapes, target)
    except ParameterConflict as exc:
        raise _conflict(exc, "method") from None
    except UnreachableTargetError as exc:
        details: dict[str, Any] = {
            "field": "target",
            "model_params": shapes.total_params,
            "target_params": exc.target_params,
            "min_params": exc.min_params,
            "max_params": exc.max_params,
        }
        if exc.closest_params is not None:
            details["closest_params"] = exc.closest_params
        raise UnprocessableInput(str(exc), details=details) from None
    return shapes.total_params
