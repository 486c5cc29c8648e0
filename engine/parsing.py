"""Turn whatever the TA returns into clean candidate prefixes, never crashing the run.

`parse_prefixes` finds candidates in any of the shapes a model tends to produce, most
structured first:

1. JSON values anywhere in the text (bare, in ```json fences, or with chatter around them):
   ``{"prefixes": [...]}``, ``{"prefix": "..."}``, other list-valued keys, a bare list,
   lists of ``{"prefix": ...}`` objects, one level of nesting;
2. truncated JSON (the model hit its token limit mid-string): the complete strings;
3. lines: numbered/bulleted items, quoted strings and "Prefix: ..." labels; when some lines
   are marked like that, unmarked lines (intro/outro chatter) are ignored, otherwise every
   non-empty line is a candidate.

`clean_prefixes` then normalises candidates and rejects the unusable ones with a reason.
"""

from __future__ import annotations

import json
import re
from typing import Any

from engine.errors import UsageError, strip_control
from engine.prompts import decode_assistant_message

#: keys whose values are taken first from a JSON object, in this order
PREFIX_KEYS = ("prefixes", "prefix", "new_prefixes", "candidates", "suggestions")
#: keys read from objects inside a list (``[{"prefix": "...", "score": 0.5}]``)
ITEM_KEYS = ("prefix", "text", "content", "value")

_MAX_JSON_STARTS = 64  # how many "{" / "[" positions are tried as JSON starts
_MAX_DEPTH = 3

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})[\w+-]*\s*$")
_LIST_MARKER = re.compile(r"^\s*(?:\(?\d{1,3}[.):]|[-*•+‣▪◦])\s+")
_LABEL = re.compile(r"^\s*(?:new\s+)?prefix(?:\s*#?\s*\d{1,3})?\s*[:=\-–]\s*", re.IGNORECASE)
_QUOTES = {'"': '"', "'": "'", "`": "`", "“": "”", "‘": "’", "«": "»", "„": "“"}
_LEADING_QUOTED = re.compile(r'^\s*(?:"((?:[^"\\]|\\.)+)"|“([^”]+)”)\s*,?\s*(?:$|[-–—:(])')
_TRUNCATED_START = re.compile(r'"(?:new_)?prefix(?:es)?"\s*:\s*\[?\s*|^\s*\[\s*(?=")',
                              re.IGNORECASE | re.MULTILINE)
_JSON_START = re.compile(r"[\[{]")
_QUOTED_LIST = re.compile(r'\s*"(?:[^"\\]|\\.)*"(?:\s*,\s*"(?:[^"\\]|\\.)*")+\s*,?\s*')
_QUOTED_ITEM = re.compile(r'"((?:[^"\\]|\\.)*)"')
_JSON_STRING = re.compile(r'\s*"((?:[^"\\\n]|\\.)*)"\s*(?:,|\]|\}|$)')

_HISTORY_ECHO = re.compile(
    r"\b(?:score|accuracy|acc|macro[ _-]?f1|f1|exact[ _]match)\s*[:=]\s*[-+]?(?:\d+\.?\d*|\.\d+)",
    re.IGNORECASE)
_DEBRIS_WORDS = {"prefix", "prefixes", "json", "new prefixes", "here are the prefixes", "null",
                 "none", "true", "false", "assistant", "user", "system", "answer"}
_MARKUP_START = re.compile(r'^\s*(?:[{}\]]|\[\s*(?:["{\[]|$)|```|~~~|"\w+"\s*:|</?\w+>)')


# ---- parsing ------------------------------------------------------------------------------------
def _strings_from_json(value: Any, depth: int = 0) -> list[str]:
    """Candidate strings in a decoded JSON value (see module docstring)."""
    if depth > _MAX_DEPTH:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, dict):
                for key in ITEM_KEYS:
                    if isinstance(item.get(key), str):
                        out.append(item[key])
                        break
            elif isinstance(item, list):
                out.extend(_strings_from_json(item, depth + 1))
        return out
    if isinstance(value, dict):
        lowered = {str(k).strip().lower(): v for k, v in value.items()}
        for key in PREFIX_KEYS:
            if key in lowered:
                found = _strings_from_json(lowered[key], depth + 1)
                if found:
                    return found
        for v in value.values():  # any other list of strings, or a nested object
            if isinstance(v, (list, dict)):
                found = _strings_from_json(v, depth + 1)
                if found:
                    return found
    return []


def _json_candidates(text: str) -> list[str]:
    """Strings from every complete JSON object/list found in `text`, left to right."""
    decoder = json.JSONDecoder()
    out: list[str] = []
    pos, tries = 0, 0
    while tries < _MAX_JSON_STARTS:
        match = _JSON_START.search(text, pos)
        if not match:
            break
        tries += 1
        try:
            value, end = decoder.raw_decode(text, match.start())
        except (ValueError, RecursionError):
            pos = match.start() + 1
            continue
        out.extend(_strings_from_json(value))
        pos = end
    return out


def _truncated_json_candidates(text: str) -> list[str]:
    """Complete string items of a JSON list cut off mid-way: ``{"prefixes": ["a", "b", "c``."""
    start = _TRUNCATED_START.search(text)
    if not start:
        return []
    out: list[str] = []
    pos = start.end()
    while True:
        match = _JSON_STRING.match(text, pos)
        if not match:
            break
        try:
            out.append(json.loads('"' + match.group(1) + '"'))
        except ValueError:
            break
        pos = match.end()
    return out


def _unquote(raw: str) -> str:
    try:
        return json.loads('"' + raw + '"')
    except ValueError:
        return raw


def _unwrap_line(line: str) -> tuple[list[str], bool]:
    """Strip list markers, "Prefix:" labels, markdown bold and quotes from one line.

    Returns ``(texts, was_marked)``: a line of comma-separated quoted strings gives several.
    """
    marked = False
    line = line.replace("**", "")
    stripped = _LIST_MARKER.sub("", line, count=1)
    if stripped != line:
        marked, line = True, stripped
    stripped = _LABEL.sub("", line, count=1)
    if stripped != line:
        marked, line = True, stripped
    if _QUOTED_LIST.fullmatch(line):
        return [_unquote(raw) for raw in _QUOTED_ITEM.findall(line)], True
    quoted = _LEADING_QUOTED.match(line)
    if quoted:
        line = _unquote(quoted.group(1)) if quoted.group(1) is not None else quoted.group(2)
        marked = True
    return [line.strip()], marked


def _line_candidates(text: str) -> list[str]:
    lines: list[tuple[list[str], bool]] = []
    for raw in text.splitlines():
        if not raw.strip() or _FENCE.match(raw):
            continue
        lines.append(_unwrap_line(raw))
    any_marked = any(marked for _, marked in lines)
    return [item for items, marked in lines if marked or not any_marked for item in items]


def parse_prefixes(text: str) -> list[str]:
    """Candidate prefixes in a TA completion, uncleaned (see `clean_prefixes`). Never raises."""
    if not isinstance(text, str) or not text.strip():
        return []
    found = decode_assistant_message(text)  # the format the request asks for
    if found:
        return found
    found = _json_candidates(text)
    if found:
        return found
    found = _truncated_json_candidates(text)
    if found:
        return found
    return _line_candidates(text)


# ---- cleaning -----------------------------------------------------------------------------------
def normalize_prefix(text: str) -> str:
    """Drop control characters (ESC, BEL, ...), collapse whitespace and strip wrapping
    quotes/backticks (repeatedly: ``"'a'"`` -> ``a``)."""
    text = " ".join(strip_control(text).split())
    while len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = " ".join(text[1:-1].split())
    return text


def _is_debris(text: str) -> bool:
    if not any(ch.isalpha() for ch in text):
        return True
    words = " ".join(re.sub(r"[^\w\s]", " ", text).lower().split())
    return words in _DEBRIS_WORDS or bool(_MARKUP_START.match(text))


COPIED = "copied from the prompt"


def _comparable(text: str) -> str:
    """Lower-case words and digits only: what "near copy" compares."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def copy_similarity(prefix: str, example: str) -> float:
    """Normalised similarity (0..1, difflib ratio of the comparable forms) of two prefixes."""
    import difflib

    a, b = _comparable(prefix), _comparable(example)
    if not a or not b:
        return 0.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def clean_prefixes(candidates: list[str], *, known: set[str] | frozenset[str] = frozenset(),
                   max_words: int = 40, max_chars: int = 240,
                   prompt_examples: tuple[str, ...] | list[str] = (),
                   copy_threshold: float = 0.8) -> tuple[list[str], list[tuple[str, str]]]:
    """Normalise candidates and keep the usable ones, in order.

    Returns ``(accepted, rejected)``; each rejection is ``(text, reason)`` with reason one of
    "empty", "debris" (JSON/markup left-overs), "history echo" ("Score: 0.71"), "too long",
    "known" (already in `known`), "duplicate" (earlier in this batch) or COPIED (similarity
    >= `copy_threshold` to one of `prompt_examples`, the worked examples of the TA's prompt).
    """
    if max_words < 1 or max_chars < 1:
        raise UsageError(f"prefix limits must be positive (max_words={max_words}, max_chars={max_chars})",
                         "set ta.max_prefix_words and ta.max_prefix_chars to numbers greater than 0")
    known_norm = {normalize_prefix(k) for k in known}
    seen: set[str] = set()
    accepted: list[str] = []
    rejected: list[tuple[str, str]] = []
    for raw in candidates:
        collapsed = " ".join(strip_control(raw).split()) if isinstance(raw, str) else repr(raw)
        text = normalize_prefix(raw) if isinstance(raw, str) else ""
        if not text:
            reason, text = "empty", collapsed
        elif _is_debris(collapsed) or _is_debris(text):
            reason, text = "debris", collapsed
        elif _HISTORY_ECHO.search(text):
            reason = "history echo"
        elif len(text) > max_chars or len(text.split()) > max_words:
            reason = "too long"
        elif any(copy_similarity(text, ex) >= copy_threshold for ex in prompt_examples):
            reason = COPIED
        elif text in known_norm:
            reason = "known"
        elif text in seen:
            reason = "duplicate"
        else:
            seen.add(text)
            accepted.append(text)
            continue
        rejected.append((text, reason))
    return accepted, rejected
