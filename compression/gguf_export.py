"""Write a Hugging Face model folder as a GGUF file (llama.cpp, Ollama) with llama.cpp's own tools.

Two steps, both llama.cpp's code, each in a subprocess (a failing native call aborts that process,
not the worker, and its log becomes the error message):

1. ``convert_hf_to_gguf.py`` (llama.cpp's converter, with its own ``gguf-py``) writes f32, f16,
   bf16 or q8_0 directly.
2. Other quantisation types (``q4_k_m``, ``q4_0``, ...) convert to f16 first, then
   ``llama_model_quantize`` (llama.cpp's quantiser through llama-cpp-python's ctypes API)
   requantises that file.

The converter is not in llama-cpp-python's wheel: ``scripts/fetch_gguf_converter.py`` (run by
``scripts/setup.sh``) unpacks it from the sdist of the installed llama-cpp-python version, i.e.
the llama.cpp commit the installed library was built from, into :func:`converter_dir`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal, get_args

from slimforge.compression.progress import NullReporter, Reporter

__all__ = [
    "CONVERTER_ENV",
    "GGUF_TYPES",
    "GgufType",
    "converter_dir",
    "default_converter_dir",
    "export_gguf",
    "export_ggufs",
    "gguf_file_name",
    "gguf_file_type",
    "gguf_supported",
]

CONVERTER_ENV = "SLIMFORGE_GGUF_CONVERTER_DIR"
CONVERTER_SCRIPT = "convert_hf_to_gguf.py"
SOURCE_STAMP = "SOURCE.json"  # written by the fetch script: {"version": <llama-cpp-python>, ...}
LOWRANK_MODEL_TYPE = "slimforge_lowrank"  # slimforge.compression.export's remote-code model type
# Types convert_hf_to_gguf.py writes itself (its --outtype choices, less the ternary/auto ones).
ConverterType = Literal["f32", "f16", "bf16", "q8_0"]
# Types llama_model_quantize makes from f16 without an importance matrix (llama.cpp's
# tools/quantize refuses IQ1/IQ2/IQ3 and Q2_K_S without one).
QuantizeType = Literal[
    "q4_0", "q4_1", "q5_0", "q5_1",
    "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k",
    "iq4_nl", "iq4_xs",
]  # fmt: skip
# Every type export_gguf writes (llama.cpp's names, lower case), as a type and as a tuple.
GgufType = Literal[ConverterType, QuantizeType]
CONVERTER_TYPES: tuple[str, ...] = get_args(ConverterType)
QUANTIZE_TYPES: tuple[str, ...] = get_args(QuantizeType)
GGUF_TYPES: tuple[str, ...] = CONVERTER_TYPES + QUANTIZE_TYPES
_LOG_LINES = 20  # lines of a failed tool's output quoted in the error

# Run with sys.executable: imports llama_cpp only, so that the child needs no slimforge code.
_QUANTIZE_SCRIPT = """
import ctypes, sys
import llama_cpp
src, dst, ftype, nthread = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
llama_cpp.llama_backend_init()
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = ftype
params.nthread = nthread
sys.exit(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))
"""


def _llama_cpp_version() -> str:
    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        raise RuntimeError(
            "GGUF export needs llama-cpp-python: install slimforge[ml] (scripts/setup.sh)"
        ) from None


def default_converter_dir(llama_cpp_version: str) -> Path:
    """Where ``scripts/fetch_gguf_converter.py`` puts the converter: inside the environment
    (``sys.prefix``) that holds the matching llama-cpp-python, one folder per version."""
    return Path(sys.prefix) / "share" / "slimforge" / "llama-cpp-convert" / llama_cpp_version


def converter_dir() -> Path:
    """The folder holding llama.cpp's ``convert_hf_to_gguf.py`` (+ ``conversion/``, ``gguf-py/``).

    ``$SLIMFORGE_GGUF_CONVERTER_DIR`` if set, else
    ``<sys.prefix>/share/slimforge/llama-cpp-convert/<llama-cpp-python version>/`` (where
    ``scripts/fetch_gguf_converter.py`` puts it).

    Raises:
        RuntimeError: llama-cpp-python is not installed, the converter is missing, or its
            ``SOURCE.json`` names another llama-cpp-python version than the installed one (the
            converter and the quantiser would come from different llama.cpp commits).
    """
    installed = _llama_cpp_version()
    env = os.environ.get(CONVERTER_ENV)
    folder = Path(env) if env else default_converter_dir(installed)
    if not (folder / CONVERTER_SCRIPT).is_file():
        raise RuntimeError(
            f"llama.cpp's {CONVERTER_SCRIPT} is not in {folder}: run `python "
            f"scripts/fetch_gguf_converter.py` (part of scripts/setup.sh) or set {CONVERTER_ENV}"
        )
    stamp = folder / SOURCE_STAMP
    if stamp.is_file():
        fetched = json.loads(stamp.read_text()).get("version")
        if fetched != installed:
            raise RuntimeError(
                f"the GGUF converter in {folder} comes from llama-cpp-python {fetched}, "
                f"but {installed} is installed: run `python scripts/fetch_gguf_converter.py`"
            )
    return folder


def _run(argv: list[str], what: str) -> None:
    """Run a tool; on failure raise RuntimeError quoting the end of its output."""
    done = subprocess.run(argv, capture_output=True, text=True, errors="replace", check=False)
    if done.returncode != 0:
        lines = (done.stdout + done.stderr).replace("\r", "\n").splitlines()
        tail = "\n".join(line for line in lines if line.strip())
        tail = "\n".join(tail.splitlines()[-_LOG_LINES:])
        raise RuntimeError(f"{what} failed (exit status {done.returncode}):\n{tail}")


def _convert(hf_folder: Path, out: Path, outtype: str) -> None:
    script = converter_dir() / CONVERTER_SCRIPT
    argv = [
        sys.executable,
        str(script),
        str(hf_folder),
        "--outtype",
        outtype,
        "--outfile",
        str(out),
    ]
    _run(argv, f"llama.cpp's {CONVERTER_SCRIPT} ({hf_folder} -> {outtype})")


def _quantize(src: Path, out: Path, gguf_type: str, n_threads: int) -> None:
    import gguf  # llama.cpp's gguf-py: LlamaFileType mirrors llama.h's enum llama_ftype

    ftype = int(gguf.LlamaFileType[f"MOSTLY_{gguf_type.upper()}"])
    argv = [sys.executable, "-c", _QUANTIZE_SCRIPT, str(src), str(out), str(ftype), str(n_threads)]
    _run(argv, f"llama_model_quantize ({src.name} -> {gguf_type})")


def _output_path(hf_folder: Path, dest: Path, gguf_type: str) -> Path:
    if dest.suffix == ".gguf":
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    return dest / f"{hf_folder.resolve().name}.{gguf_type.upper()}.gguf"


def export_gguf(hf_folder: Path, dest: Path, *, gguf_type: str = "f16", n_threads: int = 0) -> Path:
    """Write the model in ``hf_folder`` (config, safetensors, tokenizer) as one GGUF file.

    Args:
        hf_folder: a ``save_pretrained`` folder of an architecture llama.cpp knows (see
            :func:`gguf_supported`), with its tokenizer files (the converter embeds the vocabulary).
        dest: the ``.gguf`` file to write, or a folder to write ``<folder name>.<TYPE>.gguf`` into.
        gguf_type: one of :data:`GGUF_TYPES` (llama.cpp's names, lower case: ``f16``, ``q8_0``,
            ``q4_k_m``, ...).
        n_threads: quantiser threads; 0 lets llama.cpp use every hardware thread.

    Returns:
        The path of the written GGUF file.

    Raises:
        ValueError: unknown ``gguf_type`` (the message lists the supported ones).
        RuntimeError: converter or quantiser missing or failed (the message quotes the end of
            its log).
    """
    gguf_type = gguf_type.lower()
    if gguf_type not in GGUF_TYPES:
        raise ValueError(f"unknown GGUF type {gguf_type!r}; supported: {', '.join(GGUF_TYPES)}")
    out = _output_path(Path(hf_folder), Path(dest), gguf_type)
    if gguf_type in CONVERTER_TYPES:
        _convert(Path(hf_folder), out, gguf_type)
        return out
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".gguf-f16-") as tmp:
        f16 = Path(tmp) / "model.F16.gguf"
        _convert(Path(hf_folder), f16, "f16")
        _quantize(f16, out, gguf_type, n_threads)
    return out


def gguf_file_name(stem: str, gguf_type: str) -> str:
    """``<stem>.<TYPE>.gguf``: llama.cpp's naming convention, which ``llama-cli -hf repo:TYPE``
    and Ollama's ``hf.co/repo:TYPE`` match on."""
    return f"{stem}.{gguf_type.upper()}.gguf"


def export_ggufs(
    hf_folder: Path,
    dest: Path,
    gguf_types: Sequence[str],
    *,
    stem: str,
    n_threads: int = 0,
    reporter: Reporter | None = None,
) -> list[Path]:
    """Write the model in ``hf_folder`` as one GGUF file per type, ``dest/<stem>.<TYPE>.gguf``.

    Like :func:`export_gguf`, but the f16 conversion that every quantised type starts from is
    made once (and kept when ``f16`` is asked for). ``reporter`` gets one event per file
    written (``data``: file, type, bytes) and is asked for cancellation between files.

    Returns:
        The written files, in the order of ``gguf_types``.

    Raises:
        ValueError: an unknown type (the message lists the supported ones).
        RuntimeError: converter or quantiser missing or failed (the end of its log quoted).
        slimforge.compression.progress.Cancelled: the reporter says the job was cancelled.
    """
    reporter = reporter or NullReporter()
    types = [t.lower() for t in gguf_types]
    unknown = [t for t in types if t not in GGUF_TYPES]
    if unknown:
        raise ValueError(f"unknown GGUF types {unknown}; supported: {', '.join(GGUF_TYPES)}")
    dest.mkdir(parents=True, exist_ok=True)
    out = {t: dest / gguf_file_name(stem, t) for t in types}

    def written(gguf_type: str) -> None:
        path = out[gguf_type]
        data = {"file": path.name, "gguf_type": gguf_type, "bytes": path.stat().st_size}
        reporter.event("GGUF file written", data=data)

    with tempfile.TemporaryDirectory(dir=dest, prefix=".gguf-f16-") as tmp:
        f16 = out.get("f16", Path(tmp) / "model.F16.gguf")
        for gguf_type in [t for t in types if t in CONVERTER_TYPES]:
            reporter.check_cancelled()
            _convert(Path(hf_folder), out[gguf_type], gguf_type)
            written(gguf_type)
        for gguf_type in [t for t in types if t in QUANTIZE_TYPES]:
            reporter.check_cancelled()
            if not f16.is_file():
                _convert(Path(hf_folder), f16, "f16")
            _quantize(f16, out[gguf_type], gguf_type, n_threads)
            written(gguf_type)
    return [out[t] for t in types]


@lru_cache(maxsize=1)
def _converter_architectures() -> frozenset[str]:
    """HF architecture names the converter knows (its ``--print-supported-models`` TEXT list)."""
    script = converter_dir() / CONVERTER_SCRIPT
    done = subprocess.run(
        [sys.executable, str(script), "--print-supported-models"],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = (done.stdout + done.stderr).splitlines()
    if done.returncode != 0 or "TEXT models:" not in lines:
        # e.g. an API host without torch, which the converter imports
        tail = "\n".join(lines[-_LOG_LINES:])
        raise RuntimeError(f"{CONVERTER_SCRIPT} --print-supported-models failed:\n{tail}")
    names = []
    for line in lines[lines.index("TEXT models:") + 1 :]:
        if not line.startswith("  - "):
            break  # the MMPROJ (vision projector) list follows
        names.append(line.removeprefix("  - "))
    return frozenset(names)


def gguf_supported(config: dict[str, Any]) -> bool | str:
    """Whether llama.cpp can take a model with this ``config.json``: True, or why not (a str).

    Low-rank slimforge artifacts (``model_type == "slimforge_lowrank"``) are refused: their
    factorised linears are no llama.cpp architecture. Otherwise the answer is the converter's own
    list of architectures (``convert_hf_to_gguf.py --print-supported-models``, cached).

    Raises:
        RuntimeError: the converter is not installed (see :func:`converter_dir`) or cannot run
            here (it imports torch).
    """
    if config.get("model_type") == LOWRANK_MODEL_TYPE:
        return "low-rank (slimforge_lowrank) models are not a llama.cpp architecture"
    architectures = config.get("architectures") or []
    if not architectures:
        return "config.json names no architecture"
    if architectures[0] not in _converter_architectures():
        return f"llama.cpp's converter does not know the architecture {architectures[0]}"
    return True


def gguf_file_type(path: Path) -> str:
    """A GGUF file's quantisation type in :data:`GGUF_TYPES` spelling (``q4_1``, ``f16``, ...).

    Read from the ``general.file_type`` key (llama.h's ``enum llama_ftype``) with gguf-py's reader.

    Raises:
        ValueError: the file has no ``general.file_type`` key.
    """
    import gguf

    field = gguf.GGUFReader(path).fields.get("general.file_type")
    if field is None:
        raise ValueError(f"{path} has no general.file_type key")
    name = gguf.LlamaFileType(int(field.contents())).name
    return name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()
