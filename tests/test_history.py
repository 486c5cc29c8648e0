"""History ordering, dialogue-gradient windows and atomic JSONL files."""

from __future__ import annotations

import json

import pytest

from engine.errors import ConfigError, DataError
from engine.history import History, build_windows, cap_windows, read_jsonl, write_jsonl


def make(*pairs: tuple[str, float]) -> History:
    h = History()
    for p, s in pairs:
        assert h.add(p, s)
    return h


def test_add_rejects_duplicates_and_keeps_first_score():
    h = make(("a", 0.5))
    assert h.add("a", 0.9) is False
    assert h.score_of("a") == 0.5
    assert len(h) == 1 and "a" in h and "b" not in h
    assert h.score_of("b") is None


def test_add_rejects_non_finite_scores():
    h = History()
    with pytest.raises(ValueError):
        h.add("a", float("nan"))
    with pytest.raises(ValueError):
        h.add("a", float("inf"))
    assert len(h) == 0


def test_sorted_is_ascending_and_stable_on_ties():
    h = make(("c", 0.7), ("t1", 0.5), ("a", 0.1), ("t2", 0.5), ("t3", 0.5), ("z", 0.9))
    assert h.sorted() == [("a", 0.1), ("t1", 0.5), ("t2", 0.5), ("t3", 0.5), ("c", 0.7), ("z", 0.9)]


def test_best_and_top_with_ties():
    assert History().best() is None
    h = make(("x", 0.2), ("first", 0.8), ("y", 0.5), ("second", 0.8), ("z", 0.5))
    assert h.best() == ("first", 0.8)
    assert h.top(3) == [("first", 0.8), ("second", 0.8), ("y", 0.5)]
    assert h.top(10) == [("first", 0.8), ("second", 0.8), ("y", 0.5), ("z", 0.5), ("x", 0.2)]
    assert h.top(0) == []


def test_to_list_from_list_roundtrip_keeps_insertion_order():
    h = make(("b", 0.3), ("a", 0.9), ("c", 0.1))
    data = h.to_list()
    assert data == [["b", 0.3], ["a", 0.9], ["c", 0.1]]
    back = History.from_list(json.loads(json.dumps(data)))
    assert back.to_list() == data
    assert back.sorted() == h.sorted()


@pytest.mark.parametrize("bad", [None, "x", [["a"]], [["a", "high"]], [[1, 0.5]], [["a", float("nan")]]])
def test_from_list_rejects_malformed(bad):
    with pytest.raises(DataError):
        History.from_list(bad)


PAIRS = [("p0", 0.1), ("p1", 0.2), ("p2", 0.3), ("p3", 0.4), ("p4", 0.5)]


def test_windows_hand_checked():
    windows = build_windows(PAIRS, 2)
    assert windows == [
        ([("p0", 0.1), ("p1", 0.2)], "p2"),
        ([("p1", 0.2), ("p2", 0.3)], "p3"),
        ([("p2", 0.3), ("p3", 0.4)], "p4"),
    ]
    assert build_windows(PAIRS, 4) == [(PAIRS[:4], "p4")]
    assert [t for _, t in build_windows(PAIRS, 1)] == ["p1", "p2", "p3", "p4"]


@pytest.mark.parametrize("k", range(0, 7))
@pytest.mark.parametrize("w", range(1, 6))
def test_window_count_and_targets(k, w):
    pairs = [(f"p{i}", i / 10) for i in range(k)]
    windows = build_windows(pairs, w)
    assert len(windows) == max(0, k - w)
    for i, (window, target) in enumerate(windows):
        assert window == pairs[i:i + w]
        assert target == f"p{i + w}"


def test_windows_reject_bad_size():
    with pytest.raises(ConfigError):
        build_windows(PAIRS, 0)


def test_cap_keeps_windows_nearest_the_best():
    windows = build_windows(PAIRS, 1)  # targets p1..p4
    capped = cap_windows(windows, 2)
    assert [t for _, t in capped] == ["p3", "p4"]
    assert cap_windows(windows, 10) == windows
    assert cap_windows([], 3) == []
    with pytest.raises(ConfigError):
        cap_windows(windows, 0)


def test_jsonl_roundtrip(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "héllo \"q\"\nnew line"}]}, {"n": 1, "x": [1.5, None]}]
    path = tmp_path / "sub" / "w.jsonl"
    write_jsonl(rows, path)
    assert read_jsonl(path) == rows
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "héllo" in lines[0]
    write_jsonl([], path)
    assert read_jsonl(path) == []


def test_jsonl_write_is_atomic(tmp_path):
    path = tmp_path / "w.jsonl"
    write_jsonl([{"a": 1}, {"b": 2}], path)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_jsonl([{"ok": 1}, {"bad": object()}, {"never": 3}], path)
    assert path.read_bytes() == before
    with pytest.raises(ValueError):
        write_jsonl([{"ok": 1}, {"nan": float("nan")}], path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.jsonl"]  # no temp files left behind


def test_jsonl_failed_first_write_leaves_no_file(tmp_path):
    path = tmp_path / "new.jsonl"
    with pytest.raises(TypeError):
        write_jsonl([{"bad": {1, 2}}], path)
    assert list(tmp_path.iterdir()) == []


def test_read_jsonl_errors(tmp_path):
    with pytest.raises(DataError):
        read_jsonl(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2"):
        read_jsonl(bad)
    bad.write_text('{"a": 1}\n\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 3"):
        read_jsonl(bad)
