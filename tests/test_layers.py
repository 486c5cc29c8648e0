"""The layers of docs/ARCHITECTURE.md, enforced: gpta_tui -> sessions -> engine, nothing upward.

The import-linter contract lives in pyproject.toml ([tool.importlinter]); this test runs it, so
`make test` (and CI) fail on an upward import. A second test proves on a throwaway package that
the linter sees imports inside functions too (the leak issue 17 removed was six of those).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=cwd, text=True,
                          capture_output=True, env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def test_the_project_keeps_its_layers():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Layers: gpta_tui -> sessions -> engine KEPT" in res.stdout


def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path):
    for pkg in ("top", "low"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "top" / "ui.py").write_text("import low.core\n")
    (tmp_path / "low" / "core.py").write_text(textwrap.dedent("""
        def helper():
            from top.ui import something  # the kind of leak the contract must catch
            return something
    """))
    (tmp_path / ".importlinter").write_text(textwrap.dedent("""
        [importlinter]
        root_packages =
            top
            low

        [importlinter:contract:layers]
        name = probe
        type = layers
        layers =
            top
            low
    """))
    res = _lint(tmp_path)
    assert res.returncode != 0, res.stdout
    assert "low.core -> top.ui" in res.stdout
