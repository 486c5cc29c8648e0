"""The API key never leaves memory: not on disk, not in exports, logs, output or events.

A unique marker is the API key, both in $OPENAI_API_KEY and in a config's `ta.api_key`.
Real sessions run the OpenAI TA and OpenAI fine-tuning against the fake server in
tests/fake_openai.py (which only answers requests carrying the marker), including error
paths where the server echoes the key back. Then every file under GPTA_HOME and the export
folders, every log record, everything printed and every event is searched for the marker.
"""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from pathlib import Path

import pytest

from engine.config import build_config
from engine.errors import TAUnavailable
from sessions.export import export_session
from sessions.runner import start_session
from sessions.store import SessionStore


def make_config(tiny_bert_dir: Path, csv: Path, base_url: str, name: str, **ta):
    return build_config("default", overrides={
        "name": name,
        "seed": 11, "device": "cpu",
        "data": {"dataset": str(csv), "train_size": 24, "val_size": 12, "test_size": 12},
        "student": {"model": str(tiny_bert_dir), "max_length": 32, "batch_size": 8,
                    "eval_batch_size": 32, "checkpoint_every": 2},
        "ta": {"backend": "openai", "model": "gpt-4o-mini", "base_url": base_url, "retries": 0,
               **ta},
        "finetune": {"backend": "openai", "poll_interval_s": 0.01, "timeout_s": 60.0},
        "loop": {"epochs": 2, "k": 12, "l": 4, "window": 2},  # 10 windows: OpenAI's minimum
    })


def files_containing(root: Path, secret: bytes) -> list[str]:
    return [str(p) for p in sorted(root.rglob("*")) if p.is_file() and secret in p.read_bytes()]


def test_api_key_is_never_written_logged_printed_or_emitted(
        tiny_bert_dir, sentiment_csv, gpta_home, fake_openai, monkeypatch, caplog, capfd, tmp_path):
    marker = f"gpta-secret-{uuid.uuid4().hex}"
    fake_openai.api_key = marker          # the server accepts only the marker
    monkeypatch.setenv("OPENAI_API_KEY", marker)
    caplog.set_level(logging.DEBUG)       # every logger, including openai / httpx / httpcore
    events: list = []

    def run(config, expect_failure: bool = False):
        handle, engine = start_session(config, gpta_home, listeners=[events.append])
        try:
            if expect_failure:
                with pytest.raises(TAUnavailable) as info:
                    engine.run()
                return handle.name, info.value
            return handle.name, engine.run()
        finally:
            handle.close()

    # 1. a full run: TA requests, a fine-tune upload and job, the tuned model answering
    config = make_config(tiny_bert_dir, sentiment_csv, fake_openai.base_url, "full", api_key=marker)
    assert marker not in repr(config) and marker not in json.dumps(config.to_dict())
    full, finished = run(config)
    assert finished.status == "finished"
    assert fake_openai.requests_to(r"/chat/completions$") and fake_openai.requests_to(r"/files$")
    assert finished.summary["ta_model"].startswith("ft:")  # the key really was used throughout

    # 2. fine-tune job creation refused with a server message that echoes the key
    fake_openai.add_fault(403, path=r"/fine_tuning/jobs$", method="POST",
                          body={"error": {"message": f"key {marker} may not fine-tune",
                                          "type": "invalid_request_error", "code": "forbidden"}})
    refused_ft, finished = run(make_config(tiny_bert_dir, sentiment_csv, fake_openai.base_url,
                                           "ft-refused", api_key=marker))
    assert finished.status == "finished"
    assert any(getattr(e, "status", "") == "failed" and "submit failed" in getattr(e, "message", "")
               for e in events)

    # 3. the key (from the environment only) rejected by the chat endpoint, which echoes it
    fake_openai.add_fault(401, path=r"/chat/completions$")
    rejected, error = run(make_config(tiny_bert_dir, sentiment_csv, fake_openai.base_url,
                                      "rejected"), expect_failure=True)
    assert "rejected the API key" in str(error)
    for text in (str(error), repr(error), "".join(traceback.format_exception(error))):
        assert marker not in text

    # the key went only into the Authorization header, never into a request body
    assert not any(marker.encode() in r.raw or marker in json.dumps(r.body or {}, default=repr)
                   for r in fake_openai.requests)

    # exports of every session
    store = SessionStore(gpta_home)
    exports = tmp_path / "exports"
    for name in (full, refused_ft, rejected):
        with store.open(name) as handle:
            export_session(handle, exports / name)
            assert marker not in json.dumps([e.to_dict() for e in handle.events()], default=repr)

    secret = marker.encode()
    assert files_containing(gpta_home, secret) == []
    assert files_containing(exports, secret) == []
    assert (exports / full / "session.json").is_file()
    assert any((gpta_home / "sessions" / full / "finetune").glob("*.jsonl"))
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
    assert caplog.records and marker not in logged
    out, err = capfd.readouterr()
    assert marker not in out and marker not in err
    emitted = json.dumps([e.to_dict() for e in events], default=repr)
    assert len(events) > 50 and marker not in emitted
