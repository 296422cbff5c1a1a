"""Import boundaries: the API never loads torch; the compression library never loads the service."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_compression_never_imports_the_service() -> None:
    assert not _imports("compression") & {"app", "worker", "slimforge", "fastapi", "celery"}


def test_app_never_imports_torch_or_the_worker() -> None:
    assert not _imports("app") & {"torch", "transformers", "worker"}


def test_importing_the_api_loads_no_torch() -> None:
    code = (
        "import sys\n"
        "from app.main import create_app\n"
        "import app.jobs.router, app.artifacts.router, app.methods.router\n"
        "bad = [m for m in ('torch', 'transformers', 'worker') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
