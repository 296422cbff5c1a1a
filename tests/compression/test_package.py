"""Package boundaries: the API-facing modules import no torch; no service imports anywhere."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from slimforge import compression

ROOT = Path(__file__).resolve().parents[2]


def test_api_facing_modules_import_no_torch() -> None:
    code = (
        "import sys\n"
        "import slimforge.compression, slimforge.compression.configs\n"
        "import slimforge.compression.planning, slimforge.compression.progress\n"
        "from slimforge.compression.planning import plan_uniform\n"
        "bad = sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_no_service_imports() -> None:
    forbidden = {"app", "worker", "slimforge.app", "slimforge.worker", "slimforge.client"}
    forbidden |= {"fastapi", "celery"}
    for path in (ROOT / "compression").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                assert not {parts[0], ".".join(parts[:2])} & forbidden, f"{path}: imports {name}"


def test_public_names_resolve() -> None:
    assert sorted(compression.__all__) == sorted(compression._EXPORTS)
    for name in compression.__all__:
        assert getattr(compression, name) is not None
    assert callable(compression.compress)
