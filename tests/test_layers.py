"""The layers of docs/ARCHITECTURE.md, enforced: gpta_tui -> sessions -> engine, nothing upward.

The import-linter contracts live in pyproject.toml ([tool.importlinter]); this test runs them, so
`make test` (and CI) fail on an upward import, an import cycle inside engine, sessions or
gpta_tui, or a gpta_tui widget importing a screen or the app. Throwaway packages prove that the
linter sees imports inside functions too (the leak issue 17 removed was six of those), that the
acyclic contract catches a cycle like the one between engine.data and engine.data_tasks that
issue 17 removed, and that the widgets contract catches a type-checking-only import of a screen
(how the session preview once reached SessionRow).
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
    assert "No cycles inside engine, sessions and gpta_tui KEPT" in res.stdout
    assert "gpta_tui widgets never import screens or the app KEPT" in res.stdout
    assert "Contracts: 3 kept, 0 broken." in res.stdout


def _packages(root: Path, *names: str) -> None:
    for pkg in names:
        (root / pkg).mkdir()
        (root / pkg / "__init__.py").write_text("")


def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path):
    _packages(tmp_path, "top", "low")
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


def test_a_cycle_between_the_data_loader_and_its_task_builders_breaks_the_contract(tmp_path):
    _packages(tmp_path, "eng")
    (tmp_path / "eng" / "data_tasks.py").write_text("from eng.data import Rows\n")
    # the registration import that used to close the cycle at the bottom of engine/data.py
    (tmp_path / "eng" / "data.py").write_text("class Rows: ...\nfrom eng import data_tasks\n")
    (tmp_path / ".importlinter").write_text(textwrap.dedent("""
        [importlinter]
        root_packages =
            eng

        [importlinter:contract:acyclic]
        name = probe
        type = acyclic_siblings
        ancestors =
            eng
    """))
    res = _lint(tmp_path)
    assert res.returncode != 0, res.stdout
    assert "No cycles are allowed in eng" in res.stdout and ".data" in res.stdout
    (tmp_path / "eng" / "data.py").write_text("class Rows: ...\n")  # the cycle broken
    res = _lint(tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_widget_importing_a_screen_for_type_checking_breaks_the_widgets_contract(tmp_path):
    _packages(tmp_path, "ui", "ui/widgets", "ui/screens")
    (tmp_path / "ui" / "rows.py").write_text("class Row: ...\n")
    (tmp_path / "ui" / "screens" / "list.py").write_text(
        "from ui.rows import Row\nfrom ui.widgets.preview import Preview\n")
    # the shape of the import the session preview had before SessionRow moved down
    (tmp_path / "ui" / "widgets" / "preview.py").write_text(textwrap.dedent("""
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from ui.screens.list import Row
        class Preview: ...
    """))
    (tmp_path / ".importlinter").write_text(textwrap.dedent("""
        [importlinter]
        root_packages =
            ui

        [importlinter:contract:widgets]
        name = probe
        type = forbidden
        source_modules =
            ui.widgets
        forbidden_modules =
            ui.screens
    """))
    res = _lint(tmp_path)
    assert res.returncode != 0, res.stdout
    assert "ui.widgets.preview -> ui.screens.list" in res.stdout
    (tmp_path / "ui" / "widgets" / "preview.py").write_text(
        "from ui.rows import Row\nclass Preview: ...\n")  # the row moved below both
    res = _lint(tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
