"""Hostile and odd inputs (issue 13): text shown literally, faults that leave one clear line,
odd config values and datasets, SIGTERM, and secrets beyond the environment key."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
from pathlib import Path

import pytest

from engine import events as ev
from engine.config import build_config
from engine.controls import Controls
from engine.errors import GptaError, TAUnavailable, strip_control
from engine.parsing import clean_prefixes, parse_prefixes
from gpta_tui.cli import main
from sessions import storage
from sessions.runner import start_session
from sessions.store import DB_FILE, SessionStore

from fake_ta import SeededTA
from test_sessions_helpers import SyntheticRun, feed, small_config
from test_sessions_resume import tiny_config

HOSTILE = "evil [/x] [bold]loud[/bold] \x1b[31mred\x1b[0m \x07bell"
SHOWN = "evil [/x] [bold]loud[/bold] [31mred[0m bell"  # what a user must see, literally
WORDS = ["zebra", "quartz", "violet", "harbor", "lantern", "meadow", "copper", "saffron"]


def _one_error_line(err: str) -> str:
    """The error line, which ends stderr (after any progress output); nothing else failed."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("gpta: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err and "\x1b" not in err
    return errors[0]


# ---- text is shown literally ------------------------------------------------------------
def _hostile_session(home: Path, name: str = "hostile") -> None:
    store = SessionStore(home)
    handle = store.create(small_config(name, data={"dataset": f"/data/{HOSTILE}.csv"}))
    events = list(SyntheticRun(handle.config).events())
    events.insert(3, ev.Notice(level="warning", message=HOSTILE))
    events = [dataclasses.replace(e, prefix=HOSTILE) if isinstance(e, ev.ValidationResult) else e
              for e in events]
    feed(handle, events)
    handle.listener(ev.Notice(level="error", message=f"TA said {HOSTILE}"))
    handle.close()


def test_list_and_show_print_markup_and_control_bytes_literally(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside table cells
    _hostile_session(tmp_path)
    assert main(["--home", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "[/x]" in out and "[bold]loud" in out
    assert main(["--home", str(tmp_path), "show", "hostile"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert f"TA said {SHOWN}" in " ".join(out.split())


def test_errors_notices_and_prefixes_lose_control_characters():
    err = GptaError(f"bad {HOSTILE}", "fix \x1b]0;title\x07 it")
    assert "\x1b" not in str(err) and "\x07" not in str(err) and "[/x]" in str(err)
    assert strip_control("a\tb\nc\x00\x9b\u202ed") == "a\tb\ncd"
    accepted, _ = clean_prefixes(parse_prefixes('{"prefixes": ["Judge the \\u001b[31mtweet\\u0007:"]}'))
    assert accepted == ["Judge the [31mtweet:"]


def test_headless_view_prints_hostile_text_literally():
    from rich.console import Console

    from gpta_tui.headless import HeadlessView, summary_table

    console = Console(record=True, width=200, force_terminal=False)
    view = HeadlessView(console=console, verbose=True)
    view(ev.Notice(level="warning", message=HOSTILE))
    view(ev.PrefixScored(epoch=1, prefix=HOSTILE, score=0.5, metrics={}, reused=False,
                         request_id=1))
    view(ev.ValidationResult(epoch=1, prefix=HOSTILE, metrics={"accuracy": 0.5}, best_epoch=1,
                             improved=True))
    console.print(summary_table(ev.RunFinished(
        status="finished", best_epoch=1, best_prefix=HOSTILE, val_metrics={}, reason=HOSTILE,
        test_metrics={"accuracy": 0.5}, test_metrics_no_prefix={"accuracy": 0.4},
        summary={"epochs": [{"epoch": 1, "prefix": HOSTILE, "val_score": 0.5,
                             "best_prefix": HOSTILE}]})))
    text = console.export_text()
    assert "\x1b" not in text and text.count("[/x]") >= 4


@pytest.mark.anyio
async def test_tui_sessions_screen_shows_hostile_and_unreadable_sessions(tmp_path):
    from textual.widgets import DataTable

    from gpta_tui.app import GptaApp

    _hostile_session(tmp_path)
    store = SessionStore(tmp_path)
    handle = store.create(small_config("broken"))
    handle.close()
    db = store.session_dir("broken") / DB_FILE
    data = json.loads(db.read_text())
    data["session"] = [1, 2]
    db.write_text(json.dumps(data))
    app = GptaApp(tmp_path)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        assert table.row_count == 2
        cells = {str(table.get_row(name)[0]): [str(c) for c in table.get_row(name)]
                 for name in ("hostile", "broken")}
        assert cells["hostile"][2].startswith("/data/evil [/x] [bold]loud")
        assert "\x1b" not in cells["hostile"][2]
        assert "unreadable" in cells["broken"][3] and "wrong shape" in cells["broken"][2]
        table.move_cursor(row=[r.name for r in app.screen.rows].index("broken"))
        await pilot.press("enter")  # a notification, not a crash
        await pilot.pause()
        assert app.is_running
        app.open_session("hostile", resume=False)  # the dashboard of the hostile session
        await pilot.pause(0.5)
        assert app.is_running and app.run_screen is not None


# ---- faults -------------------------------------------------------------------------------
def _config_file(tmp_path: Path, tiny_bert_dir, sentiment_csv, name: str) -> Path:
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, name, mode="baseline",
                      loop={"epochs": 1, "k": 4, "l": 2, "window": 2})
    data = cfg.to_dict()
    lines = [f"name = {json.dumps(name)}", 'mode = "baseline"', 'device = "cpu"']
    for section in ("data", "student", "loop"):
        lines.append(f"[{section}]")
        for key in {"data": ("dataset", "train_size", "val_size", "test_size"),
                    "student": ("model", "max_length", "batch_size", "eval_batch_size", "lr",
                                "checkpoint_every"),
                    "loop": ("epochs", "k", "l", "window")}[section]:
            lines.append(f"{key} = {json.dumps(data[section][key])}")
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("code,fix", [(errno.ENOSPC, "free space on that disk"),
                                      (errno.EACCES, "writable")])
def test_disk_full_stops_with_one_line_and_the_session_resumes(
        tiny_bert_dir, sentiment_csv, tmp_path, capsys, monkeypatch, code, fix):
    home = tmp_path / "home"
    config = _config_file(tmp_path, tiny_bert_dir, sentiment_csv, "full")
    real = storage.atomic_write_text
    writes = {"n": 0}

    def failing(path, text):
        writes["n"] += 1
        if writes["n"] > 4:  # the session exists and has a checkpoint; then the disk fills
            raise OSError(code, os.strerror(code))
        real(path, text)

    monkeypatch.setattr(storage, "atomic_write_text", failing)
    assert main(["--home", str(home), "run", "--config", str(config)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    db = home / "sessions" / "full" / DB_FILE
    assert f"cannot write session database {str(db)!r}" in line
    assert fix in line and "then `gpta resume full`" in line
    monkeypatch.setattr(storage, "atomic_write_text", real)
    store = SessionStore(home)
    assert store.open("full").status in ("running", "interrupted", "paused")
    assert main(["--home", str(home), "resume", "full"]) == 0
    assert store.open("full").status == "finished"


def test_a_new_session_whose_first_ta_request_fails_is_removed_and_says_so(
        tiny_bert_dir, sentiment_csv, tmp_path, capsys):
    from rich.console import Console

    from gpta_tui.commands.run import _drive
    from gpta_tui.headless import HeadlessView

    class DownTA(SeededTA):
        def propose(self, messages, n, temperature, seed, should_stop=None):
            raise TAUnavailable("the TA endpoint is down", "start it")

    cfg = tiny_config(tiny_bert_dir, sentiment_csv, "down")
    console = Console(record=True, width=200)
    view = HeadlessView(console=console)
    handle, engine = start_session(cfg, tmp_path, listeners=[view], controls=Controls(),
                                   ta=DownTA(WORDS))
    with pytest.raises(TAUnavailable):
        _drive(handle, engine, view, new=True)
    text = console.export_text()
    assert "removed the new session down" in text
    assert "session is saved" not in text and "resume" not in text.replace("to resume", "")
    assert not SessionStore(tmp_path).exists("down")


def test_the_tui_removes_a_new_session_that_fails_in_setup_like_the_cli(tiny_bert_dir,
                                                                        sentiment_csv, tmp_path):
    """One run loop (sessions.runner.run_session): the TUI's controller deletes a new session
    whose run never got past setup, and its dashboard says so."""
    from gpta_tui.run_control import RunController

    class DownTA(SeededTA):
        def propose(self, messages, n, temperature, seed, should_stop=None):
            raise TAUnavailable("the TA endpoint is down", "start it")

    cfg = tiny_config(tiny_bert_dir, sentiment_csv, "down-tui")
    controller = RunController(tmp_path, name="down-tui", config=cfg,
                               engine_kwargs={"ta": DownTA(WORDS), "on_ta_unavailable": "stop"})
    controller.start()
    assert controller.join(timeout=300)
    assert isinstance(controller.error, TAUnavailable)
    assert not SessionStore(tmp_path).exists("down-tui")
    controller.drain()
    assert any("removed the new session down-tui" in entry.text for entry in controller.state.log)


def test_sigterm_saves_says_so_and_exits_143(tiny_bert_dir, sentiment_csv, tmp_path):
    from rich.console import Console

    from gpta_tui.commands.run import _drive
    from gpta_tui.headless import HeadlessView

    def terminate_at_step_3(event):
        if isinstance(event, ev.TrainStep) and event.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = tiny_config(tiny_bert_dir, sentiment_csv, "term", mode="baseline")
    console = Console(record=True, width=200)
    view = HeadlessView(console=console)
    handle, engine = start_session(cfg, tmp_path, listeners=[view, terminate_at_step_3],
                                   controls=Controls())
    assert _drive(handle, engine, view, new=True) == 143
    text = console.export_text()
    assert "SIGTERM: stopping" in text and "continue with: gpta resume term" in text
    reader = SessionStore(tmp_path).open("term")
    assert reader.status == "paused" and reader.last_state["checkpoint"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# ---- odd inputs ----------------------------------------------------------------------------
@pytest.mark.parametrize("argv,toml,match", [
    (["--lr", "nan"], None, "student.lr must be a finite number"),
    (["--lr", "inf"], None, "student.lr must be a finite number"),
    ([], "[student]\nlr = nan\n", "student.lr must be a finite number"),
    ([], "[ta]\ntemperature = -inf\n", "ta.temperature must be a finite number"),
    ([], "preset = [1]\n", "unknown preset [1]"),
])
def test_odd_config_values_are_one_line_usage_errors(tmp_path, capsys, argv, toml, match):
    if toml is not None:
        (tmp_path / "c.toml").write_text(toml)
        argv = argv + ["--config", str(tmp_path / "c.toml")]
    assert main(["--home", str(tmp_path), "run", *argv]) == 2
    assert match in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "sessions").exists() or not any((tmp_path / "sessions").iterdir())


@pytest.mark.parametrize("suffix,body", [
    (".json", "[" * 100000 + "]" * 100000),
    (".jsonl", '{"text": ' + "[" * 100000 + "]" * 100000 + "}\n"),
])
def test_a_deeply_nested_json_dataset_is_a_one_line_error(tmp_path, capsys, suffix, body):
    path = tmp_path / f"deep{suffix}"
    path.write_text(body)
    assert main(["--home", str(tmp_path), "run", "--dataset", str(path), "--mode", "baseline"]) == 2
    assert "nested too deeply" in _one_error_line(capsys.readouterr().err)


def _load(path: Path):
    from engine.data import load_task_data

    cfg = build_config("default", overrides={"data": {"dataset": str(path), "train_size": 30,
                                                      "val_size": 10, "test_size": 10}})
    return load_task_data(cfg.data, 0)


@pytest.mark.parametrize("lines,warning", [
    # NaN, None and empty labels are missing labels, not classes
    (["text,label", *(f"text number {i} {w},{['pos', 'neg'][i % 2]}" for i, w in enumerate(WORDS * 8)),
      "odd one,NaN", "odd two,nan", "odd three,None", "odd four,", "odd five,null"],
     "5 without label"),
    # a tab-separated file named .csv is detected (its texts hold commas)
    (["text\tlabel", *(f"text number {i}, with a comma {w}\t{['pos', 'neg'][i % 2]}"
                       for i, w in enumerate(WORDS * 8))],
     "tab-separated"),
], ids=["missing-labels-are-not-classes", "tabs-in-a-csv-file"])
def test_an_odd_csv_file_loads_its_two_classes_and_says_why(tmp_path, lines, warning):
    path = tmp_path / "odd.csv"
    path.write_text("\n".join(lines) + "\n")
    data = _load(path)
    assert sorted(data.label_names) == ["neg", "pos"]
    assert any(warning in w for w in data.warnings), data.warnings


# ---- secrets beyond the environment key ---------------------------------------------------
def test_credentials_in_the_base_url_are_never_stored_or_exported(tmp_path):
    from sessions.export import export_session

    url = "https://bob:s3cr3t-pw@proxy.example/v1"
    cfg = small_config("creds", ta={"base_url": url})
    assert cfg.ta.base_url == url  # kept in memory for the client
    assert cfg.to_dict()["ta"]["base_url"] == "https://proxy.example/v1"
    store = SessionStore(tmp_path)
    handle = store.create(cfg)
    feed(handle, SyntheticRun(handle.config).events())
    handle.close()
    export_session(store.open("creds"), tmp_path / "out")
    for path in [*tmp_path.rglob("*")]:
        if path.is_file():
            assert b"s3cr3t-pw" not in path.read_bytes(), path


def test_url_credentials_go_to_basic_auth_not_the_logged_url(fake_openai, caplog):
    from engine.ta.openai_ta import OpenAITA

    host = fake_openai.base_url.split("://", 1)[1]
    ta = OpenAITA("gpt-4o-mini", base_url=f"http://bob:pw-77x@{host}", api_key=fake_openai.api_key,
                  retries=0)
    try:
        assert "pw-77x" not in str(ta.endpoint.client.base_url)
        caplog.set_level("DEBUG")
        with pytest.raises(GptaError) as info:
            ta.propose([{"role": "user", "content": "hi"}], n=1, temperature=1.0, seed=1)
        assert "pw-77x" not in str(info.value)  # basic auth replaced the bearer key: 401
        assert "pw-77x" not in caplog.text and "bob:" not in caplog.text
    finally:
        ta.close()


def test_a_reply_echoing_the_api_key_is_redacted(fake_openai):
    from engine.ta.openai_ta import OpenAITA

    key = fake_openai.api_key
    fake_openai.set_chat_replies([f'{{"prefixes": ["Use key {key} now:"]}}'])
    ta = OpenAITA("gpt-4o-mini", base_url=fake_openai.base_url, api_key=key, retries=0)
    try:
        reply = ta.propose([{"role": "user", "content": "hi"}], n=1, temperature=1.0, seed=1)
    finally:
        ta.close()
    assert key not in json.dumps(reply.texts) and "***" in reply.texts[0]


def test_a_reply_with_a_lone_surrogate_runs_saves_and_exports(tiny_bert_dir, sentiment_csv,
                                                             fake_openai, monkeypatch, tmp_path):
    """An endpoint's JSON may escape a lone surrogate (`\\ud800`): valid JSON, a Python str,
    but no UTF-8 writer takes it. The reply is cleaned where it enters (U+FFFD), so the run,
    its TA log and its export go through."""
    from sessions.export import export_session
    from sessions.runner import run_session

    monkeypatch.setenv("OPENAI_API_KEY", fake_openai.api_key)
    fake_openai.set_chat_replies(['{"prefixes": ["Read \ud800 the tweet:", "Judge the mood:"]}'] * 40)
    home = tmp_path / "home"
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, "surrogate",
                      ta={"backend": "openai", "model": "gpt-4o-mini",
                          "base_url": fake_openai.base_url, "retries": 0},
                      finetune={"backend": "none"})
    handle, engine = start_session(cfg, home)
    assert run_session(handle, engine).status == "finished"
    out = export_session(SessionStore(home).open("surrogate"), tmp_path / "out")
    text = "".join(p.read_text(encoding="utf-8") for p in out.rglob("*.json*"))
    assert "Read \ufffd the tweet" in text
