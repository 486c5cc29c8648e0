"""`gpta list | show | delete | export | import` through the real CLI entry point."""

from __future__ import annotations

import io
import json

from gpta_tui.cli import main
from sessions.store import SessionStore

from test_sessions_helpers import SyntheticRun, feed, small_config


def _session(home, name):
    store = SessionStore(home)
    h = store.create(small_config(name))
    feed(h, SyntheticRun(h.config).events())
    h.close()


def test_list_show_export_import_delete(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    assert main(["--home", str(home), "list"]) == 0
    assert "No sessions" in capsys.readouterr().out
    _session(home, "cli-run")
    assert main(["--home", str(home), "list"]) == 0
    out = capsys.readouterr().out
    assert "cli-run" in out and "finished" in out and "2/2" in out and "0.8000" in out

    assert main(["--home", str(home), "show", "cli-run"]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "Epochs" in out and "acc 0.8000" in out and "test: accuracy 0.7000" in out
    assert main(["--home", str(home), "show", "cli-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "cli-run"

    assert main(["--home", str(home), "export", "cli-run", str(tmp_path / "exp")]) == 0
    assert (tmp_path / "exp" / "report.md").is_file()
    capsys.readouterr()
    assert main(["--home", str(home), "import", str(tmp_path / "exp"), "--name", "cli-copy"]) == 0
    assert "Imported session cli-copy" in capsys.readouterr().out

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["--home", str(home), "delete", "cli-copy"]) == 2
    err = capsys.readouterr().err
    assert "refusing to delete session 'cli-copy'" in err and "--yes" in err
    assert SessionStore(home).exists("cli-copy")
    assert main(["--home", str(home), "delete", "cli-copy", "--yes"]) == 0
    assert not SessionStore(home).exists("cli-copy")


def test_delete_asks_on_a_terminal(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    _session(home, "ask")

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Tty("n\n"))
    assert main(["--home", str(home), "delete", "ask"]) == 1
    assert SessionStore(home).exists("ask")
    monkeypatch.setattr("sys.stdin", Tty("y\n"))
    assert main(["--home", str(home), "delete", "ask"]) == 0
    assert not SessionStore(home).exists("ask")


def test_errors_are_one_line_with_exit_codes(tmp_path, capsys):
    home = tmp_path / "home"
    assert main(["--home", str(home), "show", "missing"]) == 2
    err = capsys.readouterr().err
    assert "no session named 'missing'" in err and "Fix:" in err and err.count("\n") == 1
    _session(home, "x")
    (home / "sessions" / "x" / "session.json").write_text("{not json")
    assert main(["--home", str(home), "show", "x"]) == 1
    assert "unreadable" in capsys.readouterr().err
    assert main(["--home", str(home), "list"]) == 0
    assert "unreadable" in capsys.readouterr().out


def test_home_after_the_command_works_like_the_global_one(tmp_path, capsys, monkeypatch):
    home, other = tmp_path / "home", tmp_path / "other"
    monkeypatch.setenv("GPTA_HOME", str(tmp_path / "env-home"))
    _session(home, "here")
    assert main(["list", "--home", str(home)]) == 0
    assert "here" in capsys.readouterr().out
    assert main(["show", "here", "--home", str(home)]) == 0
    assert "here" in capsys.readouterr().out
    assert main(["--home", str(other), "list", "--home", str(home)]) == 0  # the later one wins
    assert "here" in capsys.readouterr().out
    assert main(["--home", str(home), "list"]) == 0  # the global one still works alone
    assert "here" in capsys.readouterr().out
    assert main(["list"]) == 0  # neither: $GPTA_HOME
    assert "No sessions" in capsys.readouterr().out


def test_list_keeps_every_column_readable_at_80_columns_and_shows_the_test_figure(
        tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    _session(home, "a-rather-long-session-name-that-must-fold-s1-n2000")
    for width, wide in ((80, False), (140, True)):
        monkeypatch.setenv("COLUMNS", str(width))
        assert main(["--home", str(home), "list"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert max(len(line) for line in lines) <= width
        header = next(line for line in lines if "name" in line and "status" in line)
        for column in ("mode", "status", "epoch", "best val", "test"):
            assert column in header
        assert ("dataset" in header) is wide and ("updated" in header) is wide
        row = next(line for line in lines if "finished" in line)
        assert "acc 0.8000" in row and "acc 0.7000" in row and "2/2" in row


def test_list_and_show_call_the_validation_figure_best_val_and_name_the_selection_one(
        tmp_path, capsys, monkeypatch):
    from sessions.store import SessionStore as Store

    home = tmp_path / "home"
    store = Store(home)
    h = store.create(small_config("chosen-on-selection"))
    run = SyntheticRun(h.config)
    events = list(run.events())
    for e in events:  # the engine's shape with a selection split: score = selection figure
        best = getattr(e, "state", {}).get("best") if isinstance(getattr(e, "state", None), dict) else None
        if best:
            best["selection_metrics"] = {"accuracy": 0.9123}
            best["score"] = 0.9123
    feed(h, iter(events))
    h.close()
    [summary] = Store(home).list()
    assert summary.best_metric == 0.8  # the validation figure, not 0.9123
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["--home", str(home), "list"]) == 0
    out = capsys.readouterr().out
    assert "acc 0.8000" in out and "0.9123" not in out
    assert main(["--home", str(home), "show", "chosen-on-selection"]) == 0
    assert "val acc 0.8000, selection acc 0.9123" in capsys.readouterr().out
