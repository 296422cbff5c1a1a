"""Fetch llama.cpp's HF -> GGUF converter matching the installed llama-cpp-python (idempotent).

llama-cpp-python's wheel holds the compiled llama.cpp but not its Python converter
(``convert_hf_to_gguf.py`` with its ``conversion`` package and its own ``gguf-py``). Its source
distribution vendors the very llama.cpp commit the wheel was built from, so this script downloads
the sdist of the *installed* version from the package index (``pip download``, honouring the pip
configuration) and unpacks only the converter into ``<prefix>/share/slimforge/llama-cpp-convert/
<version>/``, where ``slimforge.compression.gguf_export`` looks for it. Nothing of llama.cpp enters
the
repository.

    python scripts/fetch_gguf_converter.py [--dest DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from slimforge.compression.gguf_export import CONVERTER_SCRIPT, SOURCE_STAMP, default_converter_dir

DIST = "llama-cpp-python"
# What the converter needs, relative to the sdist's vendor/llama.cpp/.
KEEP = (CONVERTER_SCRIPT, "LICENSE", "conversion/", "gguf-py/gguf/", "gguf-py/LICENSE")


def _download_sdist(dist_version: str, into: Path) -> Path:
    argv = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
    subprocess.run([*argv, f"{DIST}=={dist_version}", "-d", str(into)], check=True)
    (sdist,) = into.glob("*.tar.gz")
    return sdist


def _unpack_converter(sdist: Path, dest: Path) -> int:
    """Extract the ``KEEP`` members of the sdist into ``dest``; returns the number of files."""
    count = 0
    with tarfile.open(sdist) as tar:
        for member in tar:
            root, _, rest = member.name.partition("/vendor/llama.cpp/")
            if "/" in root or not rest or not member.isfile():
                continue
            if not any(rest == k or (k.endswith("/") and rest.startswith(k)) for k in KEEP):
                continue
            member.name = rest
            tar.extract(member, dest, filter="data")
            count += 1
    return count


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dest", type=Path, help="target folder (default: under sys.prefix)")
    args = parser.parse_args()
    try:
        dist_version = version(DIST)
    except PackageNotFoundError:
        print(f"{DIST} is not installed: no GGUF converter to fetch", file=sys.stderr)
        return 1
    dest: Path = args.dest or default_converter_dir(dist_version)
    stamp = dest / SOURCE_STAMP
    if stamp.is_file() and json.loads(stamp.read_text()).get("version") == dist_version:
        print(f"GGUF converter for {DIST} {dist_version} already in {dest}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        sdist = _download_sdist(dist_version, Path(tmp))
        staging = Path(tmp) / "converter"
        count = _unpack_converter(sdist, staging)
        if not (staging / CONVERTER_SCRIPT).is_file():
            print(f"{sdist.name} holds no vendor/llama.cpp/{CONVERTER_SCRIPT}", file=sys.stderr)
            return 1
        info = {"dist": DIST, "version": dist_version, "sdist": sdist.name}
        info["sdist_sha256"] = _sha256(sdist)
        (staging / SOURCE_STAMP).write_text(json.dumps(info, indent=2) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), dest)
    print(f"GGUF converter ({count} files) from {sdist.name} in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
