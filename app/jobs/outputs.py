"""A job's output formats, resolved at submit: defaults filled in, and GGUF outputs that
llama.cpp could not load refused (422). Torch-free.

Rules (``output.formats``, ``output.gguf_type``):

- asked for GGUF (``formats`` has 'gguf', or a ``gguf_type`` is given): refused when the method's
  result is not a standard architecture (``MethodParameters.standard_architecture``) or when
  llama.cpp's converter does not know the model's architecture (``gguf_supported``);
- nothing said: a GGUF input (``model.gguf_file``) gets ``['safetensors', 'gguf']`` when the
  method keeps the architecture, ``['safetensors']`` (said in an event) when it does not; any
  other input gets ``['safetensors']``;
- GGUF without a type: the GGUF input's own type (:func:`input_gguf_type`), else f16.

The resolved section is stored in the job's request, so users see what they will get. What cannot
be read here (the converter or the ``gguf`` package missing on an API host, a Hub model) is
left to the worker, which checks it again when it loads the model. A GGUF output the user did
not ask for (a GGUF input's default) is marked in the job's metrics (:data:`DEFAULTED`): a worker
that cannot write GGUF files then returns the safetensors alone instead of failing the job.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimforge.app.errors import UnprocessableInput
from slimforge.compression.gguf_export import GGUF_TYPES, gguf_file_type, gguf_supported
from slimforge.compression.methods import method_specs
from slimforge.contract.jobs import JobCreate, Output

log = logging.getLogger("slimforge.api")

__all__ = [
    "DEFAULTED",
    "OutputNote",
    "ResolvedOutput",
    "input_gguf_type",
    "resolve_output",
    "standard_methods",
]

# The job metrics key that marks GGUF files chosen by default, not asked for.
DEFAULTED = "gguf_by_default"

# The default for an input whose own type slimforge cannot write (an importance-matrix type):
# llama.cpp's most used 4-bit type, so that the output stays about as small as the input.
FALLBACK_QUANTISED = "q4_k_m"


@dataclass(frozen=True)
class OutputNote:
    """What the submit says about the resolved output (one job event)."""

    message: str
    level: str
    data: dict[str, Any]


@dataclass(frozen=True)
class ResolvedOutput:
    """The job's ``output`` section as stored (JSON), the events to record, and the metrics the
    job starts with (:data:`DEFAULTED` when GGUF files were chosen by default)."""

    section: dict[str, Any]
    notes: list[OutputNote]
    metrics: dict[str, Any]


def standard_methods() -> list[str]:
    """Registered methods whose result (with default parameters) is a standard architecture."""
    found = []
    for spec in method_specs():
        if spec.config_class.model_construct().standard_architecture():
            found.append(spec.name)
    return found


def input_gguf_type(gguf_path: Path) -> tuple[str, str]:
    """The default GGUF output type for a GGUF input, and why (for the event).

    Its own type (``general.file_type``) when slimforge writes it, else ``q4_k_m`` (a type that
    needs an importance matrix, or one llama.cpp no longer writes), or f16 when the header names
    none.

    Raises:
        ImportError: the ``gguf`` package is not installed here.
        OSError, ValueError: the file cannot be read as GGUF.
    """
    try:
        found = gguf_file_type(gguf_path)
    except ValueError:
        return "f16", "the GGUF input names no file type (general.file_type)"
    if found in GGUF_TYPES:
        return found, "the GGUF input's own type"
    return FALLBACK_QUANTISED, f"slimforge cannot write the GGUF input's own type, {found}"


def _asking_field(output: Output) -> tuple[str, Any, str]:
    """The field that asked for GGUF (``output.formats`` when it names 'gguf', else
    ``output.gguf_type``), its value, and how the message quotes it."""
    if "gguf" in (output.formats or ()):
        return "output.formats", output.formats, "output.formats asks for 'gguf'"
    return (
        "output.gguf_type",
        output.gguf_type,
        f"output.gguf_type = {output.gguf_type} asks for GGUF",
    )


def _refuse(message: str, output: Output) -> UnprocessableInput:
    field, value, _ = _asking_field(output)
    return UnprocessableInput(message, details={"field": field, "value": value})


def _check_gguf_possible(body: JobCreate, output: Output, folder: Path | None) -> None:
    """422 for a GGUF output llama.cpp could not load; unknowable cases pass (the worker checks)."""
    method = body.method
    asks = _asking_field(output)[2]
    if not method.standard_architecture():
        raise _refuse(
            f"{asks}, but method '{method.name}' gives a result with "
            "custom modules (low-rank layers, factors B·A) that llama.cpp does not know, so no "
            f"GGUF of it would load; use a method whose result is a standard architecture "
            f"({', '.join(standard_methods())}), or formats ['safetensors'] without gguf_type",
            output,
        )
    config_file = folder / "config.json" if folder is not None else None
    if body.model.gguf_file is not None or config_file is None or not config_file.is_file():
        return  # a GGUF input came from llama.cpp; a Hub model is checked at loading
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("config.json is not a JSON object")
        verdict = gguf_supported(config)
    except (RuntimeError, OSError, ValueError) as exc:  # no converter here, an odd config.json
        log.info("GGUF support of %s left to the worker: %s", folder, exc)
        return
    if verdict is not True:
        raise _refuse(
            f"{asks}, but {verdict}, so llama.cpp's converter cannot write it; use formats "
            "['safetensors'] without gguf_type",
            output,
        )


def _default_types(body: JobCreate, folder: Path | None) -> tuple[list[str] | None, str]:
    """The GGUF type when none is given, and why; None when the input's type cannot be read
    here (the worker reads it by the same rule)."""
    if body.model.gguf_file is None or folder is None:
        return ["f16"], "the default when no gguf_type is given"
    try:
        found, why = input_gguf_type(folder / body.model.gguf_file)
    except (ImportError, OSError, ValueError) as exc:
        log.info("GGUF type of %s left to the worker: %s", body.model.gguf_file, exc)
        return None, "the GGUF input's own type, read when the worker loads it"
    return [found], why


def resolve_output(body: JobCreate, folder: Path | None) -> ResolvedOutput:
    """The job's ``output`` section with ``formats`` and ``gguf_type`` resolved, the notes to
    record as events and the job's first metrics. ``folder``: the resolved local model folder
    (None: a Hub model).

    Raises:
        UnprocessableInput: GGUF asked for a result llama.cpp could not load (field
            ``output.formats``, or ``output.gguf_type`` when that alone asked; the message
            says why and what to use instead).
    """
    output = body.output or Output()
    asked = output.gguf_type is not None or "gguf" in (output.formats or ())
    standard = body.method.standard_architecture()
    notes: list[OutputNote] = []
    if asked:
        _check_gguf_possible(body, output, folder)
        formats = ["safetensors", "gguf"]
    elif output.formats is None and body.model.gguf_file is not None and standard:
        formats = ["safetensors", "gguf"]
    else:
        formats = ["safetensors"]
        if output.formats is None and body.model.gguf_file is not None:
            notes.append(
                OutputNote(
                    f"output.formats: ['safetensors'] only, no GGUF: method '{body.method.name}' "
                    "gives custom (low-rank) layers that llama.cpp does not know",
                    "warning",
                    {"formats": formats},
                )
            )
    types: list[str] | None = list(output.gguf_type) if output.gguf_type else None
    why = "as asked"
    if "gguf" in formats and types is None:
        types, why = _default_types(body, folder)
    resolved = {**output.model_dump(mode="json"), "formats": formats, "gguf_type": types}
    data = {"formats": formats, "gguf_type": types}
    metrics: dict[str, Any] = {}
    if "gguf" in formats:
        named = ", ".join(types) if types else "to be read"
        notes.append(OutputNote(f"output: safetensors and GGUF {named} ({why})", "info", data))
        if not asked:
            metrics[DEFAULTED] = True
    return ResolvedOutput(resolved, notes, metrics)
