"""Prepare ``.gpu/`` (git-ignored) for ``gpu_check.py`` on a lent GPU machine, and print the
command to run there.

The device tool carries at most 64 MiB (working tree included) to a machine that reaches no
registry, whose python3 has torch and transformers but not pydantic or gguf. So ``.gpu/`` holds:

- ``whl/``: wheels of the packages slimforge.compression needs that the machine lacks, at this
  environment's versions, for CPython 3.12 on manylinux x86-64 (``pip download``);
- a slice of SmolLM2-135M-Instruct's GGUF: the whole file is 94 MiB, so the slice keeps the
  tokenizer, the embeddings and the first ``--layers`` decoder layers (their published
  tensors, byte for byte; ``llama.block_count`` set to match), a real model's weights and
  text statistics for the parity check at a size that travels.

    python bench/gpu_bundle.py            # then run the printed command with the device tool
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import gguf
from common import GGUF, ROOT
from gpu_report import commit

# Imported by slimforge.compression (pydantic's own needs included) and absent from the GPU
# machine's image (/work/.library/device/KINDS.md, "Python packages already there").
WHEELS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection",
          "typing-extensions", "gguf")  # fmt: skip
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
CARRY_LIMIT = 64 * 2**20  # bytes the device tool carries: tree + carried paths
BUNDLE = ROOT / ".gpu"


def slice_gguf(source: Path, dest: Path, layers: int) -> Path:
    """Copy ``source`` without the decoder layers from ``layers`` on (tensors ``blk.<i>.*``),
    with ``<arch>.block_count`` = ``layers``. Raises ValueError if the model has fewer."""
    reader = gguf.GGUFReader(source)
    arch = str(reader.fields["general.architecture"].contents())
    count_key = f"{arch}.block_count"
    total = int(reader.fields[count_key].contents())
    if not 0 < layers <= total:
        raise ValueError(f"{source.name} has {total} layers; cannot keep {layers}")
    writer = gguf.GGUFWriter(dest, arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        # The writer sets the architecture and the GGUF.* header fields itself.
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = layers if field.name == count_key else field.contents()
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    kept = [t for t in reader.tensors if not _layer_at_or_above(t.name, layers)]
    for t in kept:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in kept:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()
    return dest


def _layer_at_or_above(name: str, layers: int) -> bool:
    match = re.match(r"blk\.(\d+)\.", name)
    return match is not None and int(match.group(1)) >= layers


def download_wheels(dest: Path) -> list[Path]:
    """``pip download`` of ``WHEELS`` at this environment's versions, for the GPU machine."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()  # one version of each: two would stop the install there
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.12", "--implementation", "cp", *platforms,
         "-d", str(dest), *pins],
        check=True,
    )  # fmt: skip
    return sorted(dest.glob("*.whl"))


def tree_bytes() -> int:
    """Bytes of the files the device tool sends: tracked and untracked-not-ignored ones."""
    names = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    paths = (ROOT / n.decode() for n in names if n)
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def device_command(model: Path) -> str:
    """The command for the device tool's ``run`` (carry ``.gpu``)."""
    return (
        "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "
        "--target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; "
        f"SLIMFORGE_COMMIT={commit()} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 python3 "
        f"bench/gpu_check.py --teacher-gguf {model.relative_to(ROOT)} 2>&1 | tee $OUT/log.txt"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=8, help="SmolLM2 layers kept (of 30)")
    folder = os.environ.get("SLIMFORGE_SMOLLM2_DIR")
    default = Path(folder) / GGUF.name if folder else GGUF
    parser.add_argument("--source", type=Path, default=default, help="SmolLM2's GGUF file")
    args = parser.parse_args()
    wheels = download_wheels(BUNDLE / "whl")
    name = args.source.name.replace(".gguf", f".first{args.layers}.gguf")
    model = slice_gguf(args.source, BUNDLE / name, args.layers)
    carried = sum(p.stat().st_size for p in [*wheels, model]) + tree_bytes()
    mib = 2**20
    print(
        f"{len(wheels)} wheels, {model.name}: {model.stat().st_size / mib:.1f} MiB; with the "
        f"tree {carried / mib:.1f} MiB of the {CARRY_LIMIT / mib:.0f} MiB carried"
    )
    if carried > CARRY_LIMIT:
        raise SystemExit("too large for the device tool: use fewer --layers")
    print("device command (run with carry=['.gpu']):\n" + device_command(model))


if __name__ == "__main__":
    main()
