"""Row builders for extractive QA, multiple choice and summarization.

The task registry (`engine.tasks`) names them, so ``data.task`` may be ``extractive_qa``,
``multiple_choice`` or ``summarization`` besides ``classification``; this module builds on
`engine.data`, which does not import it. The splits are drawn by `engine.data.sample_splits`
as for classification (seeded, deterministic, disjoint) but without stratification.

Hub datasets of the GPTA paper, with their columns built in (`engine.data.KNOWN_HUB_DATASETS`):
``squad``, ``squad_v2``, ``race:all`` / ``race:middle`` / ``race:high``,
``cnn_dailymail:3.0.0``, ``xsum``.

Local files (.csv, .tsv, .json, .jsonl, .parquet) use these columns (names are matched
case-insensitively; ``data.text_column`` / ``data.label_column`` pick other ones):

extractive_qa
    ``question``; ``context`` (text_column; also passage, paragraph, text);
    ``answers`` (label_column) as ``{"text": [...], "answer_start": [...]}``, a list of such
    objects, a list of strings, or one string (in CSV a JSON string or the plain answer).
    Without ``answer_start`` the first occurrence of the answer in the context is used.
    An empty answer (``""``, ``[]``, ``{"text": []}``) marks an unanswerable question
    (SQuAD v2); an ``answer_start`` column may hold the start of a single string answer;
    ``id`` is optional.
multiple_choice
    ``article`` (text_column; also context, passage); ``question``; the options as one
    list column (``options``, ``choices``, ``endings``; a JSON list in CSV) or one column
    per option (``A``, ``B``, ... or ``option_0``, ``option_1``, ...); the answer
    (label_column; ``label`` or ``answer``) as a 0-based index, a letter A, B, ... or the
    option text.
summarization
    ``document`` (text_column; also article, text, dialogue); ``summary`` (label_column;
    also highlights, abstract, target).
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable, Sequence
from typing import Any

from engine.config import DataConfig
from engine.data import Rows, Source, pick_column, source_columns
from engine.errors import DataError

QA_CONTEXT = ("context", "passage", "paragraph", "text", "article", "document")
QA_QUESTION = ("question", "query", "questions")
QA_ANSWERS = ("answers", "answer", "answer_text", "answers_text")
MC_ARTICLE = ("article", "context", "passage", "text", "story", "document")
MC_QUESTION = ("question", "query", "stem", "prompt")
MC_OPTIONS = ("options", "choices", "endings", "candidates")
MC_LABEL = ("label", "answer", "answer_idx", "answer_index", "correct", "target")
SUM_DOCUMENT = ("document", "article", "text", "source", "dialogue", "content", "body")
SUM_SUMMARY = ("summary", "highlights", "abstract", "target", "headline")
_OPTION_COLUMN = re.compile(r"(option|choice|ending)_?(\d+)", re.IGNORECASE)

_TASK_DESCRIPTIONS = {
    "extractive_qa": "Questions about paragraphs from {where}; the answer to each question is a "
                     "span of its paragraph.",
    "multiple_choice": "Reading-comprehension questions from {where}: a passage, a question "
                       "and several answer options, exactly one of them correct.",
    "summarization": "Documents from {where}, each paired with a reference summary.",
}


# --------------------------------------------------------------------------------------
# Helpers shared by the builders
# --------------------------------------------------------------------------------------


def _no_stratum(row: dict) -> Hashable:
    """Non-classification tasks are sampled without stratification."""
    return 0


def _check_present(source: Source, columns: Sequence[str]) -> None:
    if len(set(columns)) != len(columns):
        raise DataError(f"one column of {source.name!r} was picked for two roles ({', '.join(columns)})",
                        "set data.text_column and data.label_column to distinct columns")
    for split, table in source.splits.items():
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise DataError(f"split {split!r} of {source.name!r} lacks column {missing[0]!r}; "
                            f"available columns: {', '.join(table.columns)}",
                            "choose columns present in every split")


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else str(value).strip()


def _maybe_json(value: Any) -> Any:
    """A string holding a JSON list or object is decoded; anything else is returned as is."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _describe(source: Source, task: str, extra: str = "") -> None:
    """Give a generically described source (a local file, an unknown Hub name) a description
    that fits the task; the loader's generic one talks about labels."""
    if source.description and "{labels}" not in source.description:
        return
    where = source.name
    match = re.match(r"Texts from (.*), each labelled", source.description or "")
    if match:
        where = match.group(1)
    source.description = _TASK_DESCRIPTIONS[task].format(where=where) + extra


def _finish(source: Source, task: str, splits: dict[str, list[dict]], warnings: list[str],
            columns: str) -> Rows:
    if not any(splits.values()):
        raise DataError(f"{source.name!r} has no usable {task} rows (columns {columns})",
                        "check the columns named in the docs of engine/data_tasks.py "
                        "(data.text_column / data.label_column pick others)")
    return Rows(splits, [], warnings, stratum=_no_stratum)


# --------------------------------------------------------------------------------------
# Extractive QA
# --------------------------------------------------------------------------------------


class _BadAnswer(Exception):
    pass


def _parse_answers(value: Any, start_value: Any = None) -> list[tuple[str, int | None]] | None:
    """Answers as (text, start or None); [] = unanswerable; None = missing value."""
    if value is None:
        return None
    value = _maybe_json(value)
    if isinstance(value, dict):
        if "text" not in value and "texts" not in value:
            raise _BadAnswer
        texts = value.get("text", value.get("texts"))
        starts = value.get("answer_start", value.get("answer_starts", []))
        if isinstance(texts, str):
            texts, starts = [texts], [starts] if not isinstance(starts, list) else starts
        if not isinstance(texts, list):
            raise _BadAnswer
        starts = list(starts) if isinstance(starts, (list, tuple)) else []
        return [(_text(t), starts[i] if i < len(starts) else None)
                for i, t in enumerate(texts) if _text(t)]
    if isinstance(value, (list, tuple)):
        out: list[tuple[str, int | None]] = []
        for item in value:
            if isinstance(item, dict):
                text = _text(item.get("text"))
                if text:
                    out.append((text, item.get("answer_start")))
            elif isinstance(item, (str, int, float)) and not isinstance(item, bool):
                if _text(item):
                    out.append((_text(item), None))
            else:
                raise _BadAnswer
        return out
    text = _text(value)
    if not text:
        return []
    return [(text, start_value)]


def _locate(context: str, text: str, start: Any) -> int | None:
    """The character start of `text` in `context`: the given start when it matches, else the
    occurrence nearest to it (the first one without a start); None if absent."""
    try:
        start = int(start) if start is not None and str(start).strip() != "" else None
    except (TypeError, ValueError):
        start = None
    if start is not None and context[start:start + len(text)] == text:
        return start
    found = [m.start() for m in re.finditer(re.escape(text), context)]
    if not found:
        return None
    return found[0] if start is None else min(found, key=lambda s: abs(s - start))


def build_qa_rows(source: Source, cfg: DataConfig) -> Rows:
    """Rows {"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}};
    "answers" is empty for unanswerable (SQuAD v2) questions."""
    context_col = pick_column(source, "context", QA_CONTEXT, configured=cfg.text_column,
                              config_key="text_column", hint=source.text_column)
    question_col = pick_column(source, "question", QA_QUESTION)
    answers_col = pick_column(source, "answers", QA_ANSWERS, configured=cfg.label_column,
                              config_key="label_column", hint=source.label_column)
    start_col = pick_column(source, "answer start", ("answer_start",), required=False)
    id_col = pick_column(source, "id", ("id", "example_id", "qid"), required=False)
    _check_present(source, [c for c in (context_col, question_col, answers_col) if c])

    seen: set[tuple[str, str]] = set()
    splits: dict[str, list[dict]] = {}
    empty = missing = not_found = duplicates = unanswerable = 0
    for split, table in source.splits.items():
        starts = table.column(start_col) if start_col and start_col in table.columns \
            else [None] * table.num_rows
        ids = table.column(id_col) if id_col and id_col in table.columns else [None] * table.num_rows
        rows = []
        for i, (raw_q, raw_c, raw_a, raw_s, raw_id) in enumerate(zip(
                table.column(question_col), table.column(context_col), table.column(answers_col),
                starts, ids)):
            question = _text(raw_q)
            # answer offsets index the context as given: it is never stripped
            context = raw_c if isinstance(raw_c, str) else _text(raw_c)
            if not question or not context.strip():
                empty += 1
                continue
            try:
                answers = _parse_answers(raw_a, raw_s)
            except _BadAnswer:
                raise DataError(f"answers column {answers_col!r} holds a value of unknown shape: "
                                f"{str(raw_a)[:60]}",
                                'use {"text": [...], "answer_start": [...]}, a list of strings or a '
                                "string (set data.label_column to the answers column)") from None
            if answers is None:
                missing += 1
                continue
            located = [(text, _locate(context, text, start)) for text, start in answers]
            kept = [(text, start) for text, start in located if start is not None]
            if answers and not kept:
                not_found += 1
                continue
            key = (question, context)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            unanswerable += not kept
            rows.append({"id": _text(raw_id) or f"{split}-{i}", "question": question,
                         "context": context,
                         "answers": {"text": [t for t, _ in kept],
                                     "answer_start": [s for _, s in kept]}})
        splits[split] = rows
    warnings = [f"dropped {duplicates} repeated (question, context) pairs"] if duplicates else []
    if empty or missing or not_found:
        warnings.append(f"dropped {empty + missing + not_found} QA rows ({empty} without question "
                        f"or context, {missing} without an answers value, {not_found} whose "
                        "answer is not in the context)")
    _describe(source, "extractive_qa",
              " Some questions cannot be answered from the paragraph." if unanswerable else "")
    return _finish(source, "extractive_qa", splits, warnings,
                   f"{question_col!r}, {context_col!r}, {answers_col!r}")


# --------------------------------------------------------------------------------------
# Multiple choice
# --------------------------------------------------------------------------------------


def _option_columns(source: Source) -> list[str]:
    """Columns A, B, C, ... or option_0, option_1, ... (also choiceN / endingN), in order."""
    columns = source_columns(source)
    letters = []
    for i in range(26):
        name = next((c for c in columns if c.upper() == chr(65 + i) and len(c) == 1), None)
        if name is None:
            break
        letters.append(name)
    if len(letters) >= 2:
        return letters
    numbered: dict[int, str] = {}
    for c in columns:
        match = _OPTION_COLUMN.fullmatch(c)
        if match:
            numbered.setdefault(int(match.group(2)), c)
    first = 0 if 0 in numbered else 1
    ordered = []
    while first + len(ordered) in numbered:
        ordered.append(numbered[first + len(ordered)])
    return ordered if len(ordered) >= 2 else []


def _label_index(value: Any, options: list[str]) -> int | None:
    """A 0-based index, a letter A.., or an option's text -> index; None if unusable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, int):
        return value if 0 <= value < len(options) else None
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        index = int(text)
        return index if index < len(options) else None
    if len(text) == 1 and text.isalpha():
        index = ord(text.upper()) - 65
        return index if index < len(options) else None
    return options.index(text) if text in options else None


def build_multiple_choice_rows(source: Source, cfg: DataConfig) -> Rows:
    """Rows {"article", "question", "options": [str, ...], "label": int (0-based)}."""
    article_col = pick_column(source, "article", MC_ARTICLE, configured=cfg.text_column,
                              config_key="text_column", hint=source.text_column)
    question_col = pick_column(source, "question", MC_QUESTION)
    label_col = pick_column(source, "answer", MC_LABEL, configured=cfg.label_column,
                            config_key="label_column", hint=source.label_column)
    options_col = pick_column(source, "options", MC_OPTIONS, required=False)
    option_cols = [] if options_col else _option_columns(source)
    if not options_col and not option_cols:
        raise DataError(f"no options found in {source.name!r}; available columns: "
                        f"{', '.join(source_columns(source))}",
                        "give a list column 'options' or one column per option (A, B, ... or "
                        "option_0, option_1, ...)")
    _check_present(source, [article_col, question_col, label_col, *([options_col] if options_col
                                                                    else option_cols)])
    seen: set[tuple] = set()
    splits: dict[str, list[dict]] = {}
    empty = few = bad_label = duplicates = 0
    for split, table in source.splits.items():
        if options_col:
            option_lists = [_maybe_json(v) for v in table.column(options_col)]
        else:
            option_lists = [list(opts) for opts in zip(*(table.column(c) for c in option_cols))]
        rows = []
        for raw_a, raw_q, raw_opts, raw_label in zip(table.column(article_col),
                                                     table.column(question_col), option_lists,
                                                     table.column(label_col)):
            article, question = _text(raw_a), _text(raw_q)
            if not article or not question:
                empty += 1
                continue
            if not isinstance(raw_opts, (list, tuple)):
                raise DataError(f"options column {options_col!r} holds {type(raw_opts).__name__} "
                                "values, not lists",
                                'write the options as a list, e.g. ["Paris", "Rome", "Oslo"]')
            options = [_text(o) for o in raw_opts]
            if len(options) < 2 or not all(options):
                few += 1
                continue
            label = _label_index(raw_label, options)
            if label is None:
                bad_label += 1
                continue
            key = (article, question, tuple(options))
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            rows.append({"article": article, "question": question, "options": options,
                         "label": label})
        splits[split] = rows
    warnings = [f"dropped {duplicates} repeated questions"] if duplicates else []
    if empty or few or bad_label:
        warnings.append(f"dropped {empty + few + bad_label} multiple-choice rows ({empty} without "
                        f"article or question, {few} with fewer than two non-empty options, "
                        f"{bad_label} whose answer is not an option index, letter or text)")
    _describe(source, "multiple_choice")
    return _finish(source, "multiple_choice", splits, warnings,
                   f"{article_col!r}, {question_col!r}, {options_col or option_cols!r}, {label_col!r}")


# --------------------------------------------------------------------------------------
# Summarization
# --------------------------------------------------------------------------------------


def build_summarization_rows(source: Source, cfg: DataConfig) -> Rows:
    """Rows {"document": str, "summary": str}."""
    document_col = pick_column(source, "document", SUM_DOCUMENT, configured=cfg.text_column,
                               config_key="text_column", hint=source.text_column)
    summary_col = pick_column(source, "summary", SUM_SUMMARY, configured=cfg.label_column,
                              config_key="label_column", hint=source.label_column)
    _check_present(source, [document_col, summary_col])
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {}
    empty = duplicates = 0
    for split, table in source.splits.items():
        rows = []
        for raw_d, raw_s in zip(table.column(document_col), table.column(summary_col)):
            if isinstance(raw_s, (list, tuple)):
                raw_s = "\n".join(_text(s) for s in raw_s if _text(s))
            document, summary = _text(raw_d), _text(raw_s)
            if not document or not summary:
                empty += 1
            elif document in seen:
                duplicates += 1
            else:
                seen.add(document)
                rows.append({"document": document, "summary": summary})
        splits[split] = rows
    warnings = [f"dropped {empty} rows with an empty document or summary"] if empty else []
    if duplicates:
        warnings.append(f"dropped {duplicates} repeated documents")
    _describe(source, "summarization")
    return _finish(source, "summarization", splits, warnings,
                   f"{document_col!r}, {summary_col!r}")
