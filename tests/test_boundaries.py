"""Import boundaries: the API never loads torch; the compression library never loads the service."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _root(module: str) -> str:
    """``slimforge.app.x`` -> ``app``; ``torch.nn`` -> ``torch``; top-level app/worker/compression
    imports (outside the slimforge root) show as ``toplevel:app``."""
    parts = module.split(".")
    if parts[0] == "slimforge" and len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    if parts[0] in LAYERS:
        return "toplevel:" + parts[0]
    return parts[0]


LAYERS = ("app", "worker", "compression", "client")


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {_root(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(_root(node.module))
    return found


def test_compression_never_imports_the_service() -> None:
    assert not _imports("compression") & {"app", "worker", "client", "fastapi", "celery"}


def test_app_never_imports_torch_or_the_worker() -> None:
    assert not _imports("app") & {"torch", "transformers", "worker"}


def test_importing_the_api_loads_no_torch() -> None:
    code = (
        "import sys\n"
        "from slimforge.app.main import create_app\n"
        "import app.jobs.router, app.artifacts.router, app.methods.router\n"
        "bad = [m for m in ('torch', 'transformers', 'slimforge.worker') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_nothing_imports_the_unnamespaced_roots() -> None:
    for package in ("app", "worker", "compression", "slimforge", "tests", "bench"):
        bad = {m for m in _imports(package) if m.startswith("toplevel:")}
        assert not bad, f"{package}/ imports {bad}: use slimforge.<root>"
