"""Small text helpers shared by the screens and widgets."""

from __future__ import annotations

import time
import unicodedata

from rich.text import Text

from engine.errors import strip_control

STATUS_STYLE = {
    "new": "dim",
    "running": "bold green",
    "paused": "bold yellow",
    "stopping": "bold yellow",
    "stopped": "yellow",
    "interrupted": "yellow",
    "failed": "bold red",
    "finished": "bold cyan",
    "created": "dim",
    "unreadable": "bold red",
}
STATUS_ICON = {
    "running": "●", "paused": "⏸", "stopping": "◌", "stopped": "■", "interrupted": "◐",
    "failed": "✖", "finished": "✔", "new": "○", "created": "○", "unreadable": "⚠",
}
LEVEL_STYLE = {"info": "dim", "warning": "yellow", "error": "bold red"}
LEVEL_ICON = {"info": "·", "warning": "⚠", "error": "✖"}
JOB_STYLE = {
    "submitted": "cyan", "validating_files": "cyan", "queued": "cyan", "running": "bold green",
    "succeeded": "bold cyan", "failed": "bold red", "cancelled": "red", "timeout": "red",
    "skipped": "dim",
}


def duration(seconds: float | None) -> str:
    """'0:07', '12:03', '1:02:03'; '--:--' when unknown."""
    if seconds is None:
        return "--:--"
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def clock(ts: float | None) -> str:
    """Local wall-clock time of a timestamp, 'HH:MM:SS'."""
    if not ts:
        return "--:--:--"
    return time.strftime("%H:%M:%S", time.localtime(ts))


def when(ts: float | None, now: float | None = None) -> str:
    """A compact 'updated' column: time today, else the date."""
    if not ts:
        return "-"
    now = time.time() if now is None else now
    same_day = time.localtime(ts)[:3] == time.localtime(now)[:3]
    return time.strftime("%H:%M" if same_day else "%Y-%m-%d", time.localtime(ts))


def printable(text: str) -> str:
    """`text` without control, format and private-use characters (escape sequences, NULs,
    zero-width marks from a TA reply or a file would otherwise draw as stray blocks); line
    breaks and tabs are kept."""
    return "".join(ch for ch in str(text) if ch in "\n\t"
                   or unicodedata.category(ch) not in ("Cc", "Cf", "Co", "Cs", "Cn"))


def one_line(text: str, width: int) -> str:
    """Collapse whitespace and cut to `width` characters with an ellipsis."""
    flat = " ".join(printable(text).split())
    return flat if len(flat) <= width else flat[: max(1, width - 1)] + "…"


def score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def test_figure(metric: str, value: float, without: float | None = None) -> str:
    """One test figure, with the no-prefix figure and the prefix's gain (value - without)
    when the engine measured it: 'accuracy 0.6917 (no prefix 0.6542, +0.0375)'. The run
    summary and the compare view both say it this way."""
    shown = f"{metric} {score(value)}"
    if without is not None:
        shown += f"  (no prefix {score(without)}, {value - without:+.4f})"
    return shown


def ta_usage_text(requests: int, tokens: int, cost: float = 0.0) -> str:
    """'12 requests · 3400 tokens · $0.0021' (no cost when none was estimated)."""
    text = f"{requests} request{'s' * (requests != 1)} · {tokens} tokens"
    return text + (f" · ${cost:.4f}" if cost else "")


def literal(text: object, style: str = "") -> Text:
    """Text from users, files or the TA for a widget: shown as written (never parsed as
    markup), without control characters."""
    return Text(strip_control(text), style=style)


# A description this long is sent with every TA request and starts to slow each one.
LONG_DESCRIPTION = 600


def description_size(text: str) -> Text:
    """'N characters · ~T tokens with every TA request' (tokens: about 4 characters each);
    yellow with a note once the description is long."""
    chars = len(text.strip())
    tokens = (chars + 3) // 4
    line = Text(f"{chars} character{'s' * (chars != 1)} · ~{tokens} tokens with every TA request",
                style="yellow" if chars > LONG_DESCRIPTION else "dim")
    if chars > LONG_DESCRIPTION:
        line.append(f" · long: over {LONG_DESCRIPTION} characters slows every request")
    return line
