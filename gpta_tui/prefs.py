"""What gpta-tui remembers between launches, in one small JSON file: the theme, and how long
loading the models took (for the loading bar's percentage and ETA). No secrets: model names
and seconds only, never a URL or a key.

The file lives in the user's config folder (platformdirs; $GPTA_CONFIG overrides it). It is
read as untrusted input: anything of the wrong shape is ignored, never an error. Writes are
atomic (a temporary file renamed into place); a failed write only costs the memory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path

FILE_NAME = "tui.json"
MAX_LOAD_TIMES = 50
MAX_LOAD_S = 24 * 3600.0
# The first dequantization of the offline Gemma TA, before one was timed on this machine
# (the engine's own notice says "~2 min").
DEQUANTIZE_TYPICAL_S = 120.0

log = logging.getLogger(__name__)


def prefs_path() -> Path:
    env = os.environ.get("GPTA_CONFIG")
    if env:
        return Path(env).expanduser() / FILE_NAME
    from platformdirs import user_config_dir

    return Path(user_config_dir("gpta-tui", appauthor=False)) / FILE_NAME


def _read(path: Path) -> dict:
    try:
        if path.stat().st_size > 1 << 20:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and 0 < value <= MAX_LOAD_S else None


class Prefs:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or prefs_path()
        data = _read(self.path)
        theme = data.get("theme")
        self.theme: str | None = theme if isinstance(theme, str) and 0 < len(theme) <= 64 else None
        times = data.get("load_times")
        self.load_times: dict[str, float] = {}
        if isinstance(times, dict):
            for key, value in list(times.items())[-MAX_LOAD_TIMES:]:
                seconds = _seconds(value)
                if isinstance(key, str) and len(key) <= 500 and seconds is not None:
                    self.load_times[key] = seconds

    def save(self) -> bool:
        data = {"theme": self.theme, "load_times": dict(list(self.load_times.items())[-MAX_LOAD_TIMES:])}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{FILE_NAME}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(data, fh, indent=1)
                os.replace(tmp, self.path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not save %s: %s", self.path, exc)
            return False
        return True

    def remember_theme(self, theme: str) -> None:
        if theme != self.theme:
            self.theme = theme
            self.save()

    def remember_load(self, key: str, seconds: float) -> None:
        if _seconds(seconds) is None:
            return
        self.load_times.pop(key, None)  # most recent last (the oldest go first when full)
        self.load_times[key] = round(seconds, 1)
        self.save()


def load_key(config: dict, resumed: bool, dequantized: bool) -> str:
    """What a load's duration depends on: the student, the TA (none for the arms without one),
    new run or resume, and whether the TA had to be dequantized first."""
    student = config.get("student", {}) if isinstance(config.get("student"), dict) else {}
    ta = config.get("ta", {}) if isinstance(config.get("ta"), dict) else {}
    mode = str(config.get("mode", ""))
    no_ta = mode in ("baseline", "static-prefix")
    parts = [str(student.get("model", "")), str(student.get("tuning", "")),
             "no-ta" if no_ta else f"{ta.get('backend', '')}:{ta.get('model', '')}",
             "resume" if resumed else "new"]
    if dequantized:
        parts.append("dequantize")
    return "|".join(parts)


def load_estimates(prefs: "Prefs", config: dict, resumed: bool) -> dict[str, float]:
    """How long loading these models took last time on this machine: {"plain": s,
    "dequantize": s}, only the ones that were timed."""
    return {name: seconds for name, dequantized in (("plain", False), ("dequantize", True))
            if (seconds := prefs.load_times.get(load_key(config, resumed, dequantized)))}


def expected_load_s(estimates: dict[str, float], setup_since: float | None,
                    dequantize_at: float | None) -> float | None:
    """How long this load should take in all (seconds from the setup phase), from the last
    load of the same models; the first dequantization counts its typical time. None: never
    timed (no percentage is shown then)."""
    if dequantize_at is not None:
        known = estimates.get("dequantize")
        if known:
            return known
        return max(0.0, dequantize_at - (setup_since or 0.0)) + DEQUANTIZE_TYPICAL_S
    return estimates.get("plain")
