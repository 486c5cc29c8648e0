"""Parsing TA completions: every format yields the prefixes, nothing ever raises."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.errors import UsageError
from engine.parsing import clean_prefixes, normalize_prefix, parse_prefixes

EXPECTED = ["Classify the sentiment of this tweet.", "Is the author happy, sad or neutral?"]


def accepted(text: str, **kw) -> list[str]:
    return clean_prefixes(parse_prefixes(text), **kw)[0]


# ---- formats ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    '{"prefixes": ["Classify the sentiment of this tweet.", "Is the author happy, sad or neutral?"]}',
    '["Classify the sentiment of this tweet.", "Is the author happy, sad or neutral?"]',
    'Sure! Here they are:\n```json\n{\n  "prefixes": [\n    "Classify the sentiment of this tweet.",\n'
    '    "Is the author happy, sad or neutral?"\n  ]\n}\n```\nGood luck with training!',
    'Here you go {"prefixes": ["Classify the sentiment of this tweet.", '
    '"Is the author happy, sad or neutral?"]} -- hope that helps',
    '{"new_prefixes": ["Classify the sentiment of this tweet.", "Is the author happy, sad or neutral?"]}',
    '{"answer": {"prefixes": ["Classify the sentiment of this tweet.", "Is the author happy, sad or neutral?"]}}',
    '{"prefixes": [{"prefix": "Classify the sentiment of this tweet.", "score": 0.9}, '
    '{"prefix": "Is the author happy, sad or neutral?"}]}',
    '{"prefix": "Classify the sentiment of this tweet."}\n{"prefix": "Is the author happy, sad or neutral?"}',
    "1. Classify the sentiment of this tweet.\n2. Is the author happy, sad or neutral?",
    "Here are two new prefixes:\n\n1) Classify the sentiment of this tweet.\n"
    "2) Is the author happy, sad or neutral?\n\nThese should score higher.",
    "- Classify the sentiment of this tweet.\n- Is the author happy, sad or neutral?",
    "* Classify the sentiment of this tweet.\n* Is the author happy, sad or neutral?",
    "• Classify the sentiment of this tweet.\n• Is the author happy, sad or neutral?",
    '1. "Classify the sentiment of this tweet." - short and direct\n'
    '2. "Is the author happy, sad or neutral?" (names the labels)',
    '"Classify the sentiment of this tweet.",\n"Is the author happy, sad or neutral?"',
    '"Classify the sentiment of this tweet.", "Is the author happy, sad or neutral?"',
    "“Classify the sentiment of this tweet.”\n“Is the author happy, sad or neutral?”",
    "Prefix: Classify the sentiment of this tweet.\nPrefix: Is the author happy, sad or neutral?",
    "Prefix 1: Classify the sentiment of this tweet.\nPrefix 2: Is the author happy, sad or neutral?",
    "1. **Prefix:** Classify the sentiment of this tweet.\n2. **Prefix:** Is the author happy, sad or neutral?",
    "Classify the sentiment of this tweet.\nIs the author happy, sad or neutral?",
    "  Classify the   sentiment of this tweet.  \n\n\tIs the author happy,  sad or neutral?\n",
    "`Classify the sentiment of this tweet.`\n'Is the author happy, sad or neutral?'",
])
def test_formats(text):
    assert accepted(text) == EXPECTED


def test_truncated_json_keeps_complete_items():
    full = json.dumps({"prefixes": EXPECTED + ["Decide whether the tweet is positive"]})
    cut = full[: full.index("positive") + 3]
    assert accepted(cut) == EXPECTED
    assert accepted('```json\n["Classify the sentiment of this tweet.", "Is the au') == EXPECTED[:1]
    assert accepted('{"prefixes": ["Classify the sent') == []


def test_history_echo_is_dropped():
    text = ("Prefix: Classify the sentiment of this tweet.\nScore: 0.7100\n\n"
            "Prefix: Is the author happy, sad or neutral?\nScore: 0.7400")
    assert accepted(text) == EXPECTED
    acc, rej = clean_prefixes(["score: 0.71", "Accuracy = .5", "Name the mood. Score: 0.80"])
    assert acc == [] and {r for _, r in rej} == {"history echo"}


@pytest.mark.parametrize("garbage", [
    "", "   \n\n ", "{", "}", "[", "]", "```", "```json\n```", '{"prefixes": []}', '{"prefixes": [', "[]",
    "{}", "null", "42", "3.14159", '{"score": 0.5}', "prefixes", "Prefixes:", "<end_of_turn>",
    '{"prefixes": ["', "\\\\\\", "\x00\x01\x02", "!!!???", '"""', "{{{{[[[[]]]]}}}}",
])
def test_garbage_yields_nothing(garbage):
    assert accepted(garbage) == []


def test_non_string_input_yields_nothing():
    assert parse_prefixes(None) == []  # type: ignore[arg-type]
    assert parse_prefixes(b"bytes") == []  # type: ignore[arg-type]


# ---- cleaning -----------------------------------------------------------------------------------
def test_clean_reasons_and_order():
    acc, rej = clean_prefixes(
        ["  b  second ", "first   one", "", "```", "{", '"prefixes":', "b second", "old one",
         "word " * 41, "x" * 241, "'quoted one'", "`ticked`"],
        known={"old one"})
    assert acc == ["b second", "first one", "quoted one", "ticked"]
    reasons = dict(rej)
    assert reasons["b second"] == "duplicate"
    assert reasons["old one"] == "known"
    assert reasons[""] == "empty"
    assert reasons["```"] == reasons["{"] == reasons['"prefixes":'] == "debris"
    assert reasons["x" * 241] == "too long"
    assert reasons[("word " * 41).strip()] == "too long"


def test_clean_limits_are_inclusive():
    acc, _ = clean_prefixes(["one two three", "a" * 10], max_words=3, max_chars=13)
    assert acc == ["one two three", "a" * 10]
    acc, rej = clean_prefixes(["one two three four"], max_words=3)
    assert acc == [] and rej == [("one two three four", "too long")]


def test_clean_known_is_normalised():
    assert clean_prefixes(['"Old   one"'], known={" Old one "})[1] == [("Old one", "known")]


def test_clean_rejects_bad_limits():
    with pytest.raises(UsageError):
        clean_prefixes(["x"], max_words=0)


def test_normalize_prefix():
    assert normalize_prefix(' "\'  a \n b \' " ') == "a b"
    assert normalize_prefix("don't stop") == "don't stop"


# ---- properties ---------------------------------------------------------------------------------
FRAGMENTS = ['{', '}', '[', ']', '"', "'", ':', ',', '\n', ' ', '```', '```json', '"prefixes"', '"prefix"',
             '1. ', '2) ', '- ', '* ', '• ', 'Prefix: ', 'Score: 0.5', '\\', '\\"', 'null', '0.71',
             'Classify the tweet', 'mood', '“', '”', '**', '<eos>', '\t', 'é', '\u2028', '\x00']
noisy_text = st.one_of(st.text(max_size=300),
                       st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join),
                       st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=5)), max_size=40).map("".join))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=noisy_text, max_words=st.integers(1, 12), max_chars=st.integers(1, 80),
       known=st.sets(st.text(max_size=12), max_size=5))
@example(text='{"prefixes": ["a", "a", " a "]}', max_words=5, max_chars=20, known=set())
def test_never_raises_and_accepted_are_clean(text, max_words, max_chars, known):
    candidates = parse_prefixes(text)
    assert isinstance(candidates, list) and all(isinstance(c, str) for c in candidates)
    acc, rej = clean_prefixes(candidates, known=known, max_words=max_words, max_chars=max_chars)
    assert len(acc) == len(set(acc))
    known_norm = {normalize_prefix(k) for k in known}
    for a in acc:
        assert a and a == a.strip() and a == " ".join(a.split())
        assert len(a) <= max_chars and len(a.split()) <= max_words
        assert a not in known_norm
    assert len(acc) + len(rej) == len(candidates)


WORD_CHARS = string.ascii_letters + string.digits + "éüßøñ'"
word = st.text(alphabet=WORD_CHARS, min_size=1, max_size=9)
punct = st.sampled_from(["", "", "", ".", ",", "?", "!", ";", ":"])
prefix = st.builds(
    lambda first, rest, end: " ".join([first, *rest]) + end,
    st.text(alphabet=string.ascii_letters + "éü", min_size=1, max_size=8),
    st.lists(st.builds(lambda w, p: w + p, word, punct), max_size=10),
    punct,
).filter(lambda p: clean_prefixes([p])[0] == [p] and not p.lower().startswith("prefix"))
prefix_lists = st.lists(prefix, min_size=1, max_size=6, unique=True)

SERIALIZERS = {
    "json": lambda ps: json.dumps({"prefixes": ps}),
    "json-unicode-indent": lambda ps: json.dumps({"prefixes": ps}, ensure_ascii=False, indent=2),
    "bare-list": lambda ps: json.dumps(ps),
    "fenced": lambda ps: "```json\n" + json.dumps({"prefixes": ps}, indent=2) + "\n```",
    "fenced-chatter": lambda ps: "Sure! Here are some:\n```json\n" + json.dumps({"prefixes": ps})
                                 + "\n```\nLet me know if you need more.",
    "numbered": lambda ps: "\n".join(f"{i}. {p}" for i, p in enumerate(ps, 1)),
    "numbered-paren-chatter": lambda ps: "Here are new prefixes:\n"
                                         + "\n".join(f"{i}) {p}" for i, p in enumerate(ps, 1)) + "\nDone.",
    "dash": lambda ps: "\n".join(f"- {p}" for p in ps),
    "star": lambda ps: "\n".join(f"* {p}" for p in ps),
    "dot": lambda ps: "\n".join(f"• {p}" for p in ps),
    "quoted": lambda ps: "\n".join(json.dumps(p) for p in ps),
    "labelled": lambda ps: "\n".join(f"Prefix: {p}" for p in ps),
}


@settings(max_examples=150, deadline=None)
@given(ps=prefix_lists, fmt=st.sampled_from(sorted(SERIALIZERS)))
def test_roundtrip(ps, fmt):
    assert accepted(SERIALIZERS[fmt](ps)) == ps


@settings(max_examples=150, deadline=None)
@given(ps=prefix_lists, data=st.data())
def test_truncated_json_yields_the_complete_items(ps, data):
    full = json.dumps({"prefixes": ps})
    cut_at = data.draw(st.integers(0, len(full)))
    got = accepted(full[:cut_at])
    assert got == ps[: len(got)]
    complete = sum(1 for j in range(len(ps)) if len(json.dumps({"prefixes": ps[: j + 1]})) - 2 <= cut_at)
    assert len(got) == complete
