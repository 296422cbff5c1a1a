"""Import boundaries: every rule of the layout is an import-linter contract in pyproject.toml
(``[tool.importlinter]``); this runs them, and checks at run time that the API loads no torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The console script ``lint-imports``, run by this interpreter (the dev extra installs it).
LINT_IMPORTS = (
    "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"
)


def test_import_contracts_are_kept() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--config", str(REPO / "pyproject.toml")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = out.stdout + out.stderr
    assert "No module named 'importlinter'" not in report, (
        "import-linter is missing: pip install -e '.[dev]'"
    )
    assert out.returncode == 0, report
    assert "0 broken" in report, report


def test_importing_the_api_loads_no_torch() -> None:
    code = (
        "import sys\n"
        "from slimforge.app.main import create_app\n"
        "import slimforge.app.jobs.router, slimforge.app.artifacts.router\n"
        "import slimforge.app.methods.router\n"
        "bad = [m for m in ('torch', 'transformers', 'slimforge.worker') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
