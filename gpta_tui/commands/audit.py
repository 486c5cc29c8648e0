"""`gpta audit NAME`: check that a session never sent dataset examples to the TA.

The session is opened read-only. Its data splits are rebuilt from the stored config (same
dataset, sizes and seed give the same splits), and every text that reached the TA is
gathered: each recorded request message (including requests a resume superseded: they were
sent all the same) and every JSONL file under the session folder (dialogue gradients and the
files uploaded for fine-tuning). `engine.audit.audit_exposure` then looks for verbatim
copies and shared spans of words. Exit status: 0 clean, 1 on any unexpected exposure.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine import prompts
from engine.audit import AuditReport, Exposure, audit_exposure
from engine.errors import DataError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "audit", help="check that no dataset example was sent to the TA",
        description="Rebuild the session's data splits and search every TA request and "
                    "fine-tune file of the session for dataset texts (verbatim or shared "
                    "spans of words). Exit status 0: clean; 1: unexpected exposure.")
    p.add_argument("name", help="session name (see `gpta list`)")
    p.add_argument("--min-words", type=int, default=8,
                   help="report shared spans of at least this many consecutive words (default 8)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="also write the report as Markdown")
    p.add_argument("--max-rows", type=int, default=30, help="rows shown per table (default 30)")
    p.set_defaults(handler=cmd_audit)


# ---- what was sent -------------------------------------------------------------------
def content_text(content: Any) -> str:
    """The text of a chat message's content: a string, or a list of parts with "text"."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(content_text(p.get("text", "") if isinstance(p, dict) else p)
                         for p in content)
    return "" if content is None else str(content)


def _json_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _json_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _json_strings(v)


def request_texts(calls: list[dict]) -> list[tuple[str, str]]:
    """(where, text) for every message of every recorded TA request."""
    out = []
    for call in calls:
        tag = " (superseded by a resume)" if call.get("superseded") else ""
        for message in call.get("messages") or []:
            role = message.get("role", "?") if isinstance(message, dict) else "?"
            text = content_text(message.get("content") if isinstance(message, dict) else message)
            out.append((f"request {call.get('request_id', '?')} {role} message{tag}", text))
    return out


def jsonl_texts(path: Path, label: str) -> list[tuple[str, str]]:
    """(where, text) for every message (or, for other objects, every string) of a JSONL file."""
    out = []
    raw = path.read_bytes().decode("utf-8", errors="replace")
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            out.append((f"{label} line {number}", line))
            continue
        messages = obj.get("messages") if isinstance(obj, dict) else None
        if isinstance(messages, list):
            for message in messages:
                role = message.get("role", "?") if isinstance(message, dict) else "?"
                text = content_text(message.get("content") if isinstance(message, dict) else message)
                out.append((f"{label} line {number} {role} message", text))
        else:
            out.append((f"{label} line {number}", "\n".join(_json_strings(obj))))
    return out


def gather_sent(handle) -> list[tuple[str, str]]:
    """Everything of the session that reached (or was prepared for) the TA."""
    sent = request_texts(handle.ta_calls(include_superseded=True))
    files = sorted(p for p in Path(handle.dir).rglob("*.jsonl") if p.is_file())
    for path in files:
        rel = path.relative_to(handle.dir).as_posix()
        sent.extend(jsonl_texts(path, f"file {rel}"))
    # windows recorded in the database whose file is gone (deleted, or never copied here)
    on_disk = {p.relative_to(handle.dir).as_posix() for p in files}
    for i, window in enumerate(handle.windows()):
        if f"windows/epoch-{window.get('epoch')}.jsonl" in on_disk:
            continue
        for message in window.get("messages") or []:
            sent.append((f"recorded window {i + 1} of epoch {window.get('epoch')} "
                         f"{message.get('role', '?')} message", content_text(message.get("content"))))
    return sent


def public_texts(handle, config, data) -> dict[str, str]:
    """Texts whose words are not dataset data: descriptions, the prompt templates, TA replies."""
    out: dict[str, str] = {}
    for d in handle.descriptions():
        out[f"dataset description v{d.get('version')}"] = d.get("text", "")
    if config.data.description:
        out["the configured description"] = config.data.description
    out["the dataset's default description"] = data.default_description
    out["the prompt template"] = "\n".join(
        v for k, v in vars(prompts).items() if k.isupper() and isinstance(v, str))
    replies = [t for call in handle.ta_calls(include_superseded=True)
               for r in call.get("responses", []) for t in r.get("texts", []) if isinstance(t, str)]
    if replies:
        out["the TA's own replies"] = "\n".join(replies)
    return out


def audit_session(handle, min_words: int = 8) -> AuditReport:
    """Audit an open session (read access is enough)."""
    from engine.data import load_task_data

    config = handle.config
    try:
        data = load_task_data(config.data, config.seed)
    except DataError as exc:
        raise DataError(f"cannot rebuild the data of session {handle.name!r}: {exc.problem}",
                        exc.fix or "make the dataset available again") from None
    declared = []
    if config.mode == "gpta-data":
        declared = [row.get("text", "") for row in data.exemplars(config.data.exemplars, config.seed)]
    return audit_exposure(gather_sent(handle), data, declared, min_words,
                          public_texts=public_texts(handle, config, data))


# ---- output ----------------------------------------------------------------------------
def _table(title: str, items: list[Exposure], max_rows: int, style: str) -> Table:
    table = Table(title=f"{title} ({len(items)})", title_style=style, show_lines=False,
                  expand=True)
    table.add_column("split")
    table.add_column("#", justify="right")
    table.add_column("kind")
    table.add_column("words", justify="right")
    table.add_column("dataset text", ratio=3)
    table.add_column("sent in", ratio=2)
    table.add_column("note", ratio=1)
    for e in items[:max_rows]:
        places = e.places
        where = "; ".join(places[:3]) + (f"; +{len(places) - 3} more" if len(places) > 3 else "")
        text = " ".join(e.text.split())
        note = "; ".join(x for x in (e.reason, e.note) if x)
        table.add_row(e.split, str(e.index), e.kind, str(e.words),
                      escape(text if len(text) <= 200 else text[:197] + "..."),
                      escape(where), escape(note))
    if len(items) > max_rows:
        table.caption = f"... and {len(items) - max_rows} more (use --json or --markdown for all)"
    return table


def print_report(console: Console, name: str, report: AuditReport, max_rows: int) -> None:
    console.print(f"exposure audit of session [bold]{escape(name)}[/]: "
                  f"{report.sent} sent texts, {report.examples} dataset examples, "
                  f"spans of >= {report.min_words} words")
    if report.too_short:
        console.print(f"[dim]{report.too_short} examples have too few words to audit[/]")
    if report.unexpected:
        console.print(_table("Unexpected exposures", report.unexpected, max_rows, "bold red"))
    if report.expected:
        console.print(_table("Expected exposures", report.expected, max_rows, "green"))
    if report.declared:
        unseen = len(report.declared_unseen)
        console.print(f"declared exemplars: {report.declared}"
                      + (f" ([yellow]{unseen} never found in what was sent[/])" if unseen else ""))
    style = "bold green" if report.ok else "bold red"
    console.print(f"[{style}]{escape(report.summary())}[/]", soft_wrap=True)


def cmd_audit(args: argparse.Namespace) -> int:
    from sessions.store import SessionStore

    handle = SessionStore(getattr(args, "home", None)).open(args.name)
    try:
        report = audit_session(handle, args.min_words)
    finally:
        handle.close()
    if args.markdown:
        args.markdown.write_text(report.to_markdown(max_items=len(report.exposures) or 1),
                                 encoding="utf-8")
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=1))
    else:
        print_report(Console(highlight=False), args.name, report, max(1, args.max_rows))
    return 0 if report.ok else 1
