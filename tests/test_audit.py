"""Exposure audit: planted leaks are caught, clean runs pass, declared exemplars are accepted.

The first half tests `engine.audit.audit_exposure` on hand-made data and real prompts; the
second half runs the real engine (tiny BERT, in-test TA) as a session and drives `gpta audit`.
"""

from __future__ import annotations

import json

import pytest

from engine import prompts
from engine.audit import AuditReport, audit_exposure, normalise, words
from engine.config import DataConfig, build_config
from engine.data import TaskData, load_task_data
from engine.errors import UsageError
from engine.finetune.base import FinetuneBackend, JobStatus
from fake_ta import SeededTA

LABELS = ["negative", "neutral", "positive"]
DESCRIPTION = ("Short English tweets about airlines, each labelled with the sentiment it "
               "expresses: negative, neutral or positive.")
TRAIN = [
    "@united my flight to Denver was cancelled twice and nobody at the desk could help",
    "@JetBlue thanks for the smooth landing and the free snacks, best crew ever",
    "@SouthwestAir is the 6pm flight from Dallas to Austin still on time tonight?",
    "@AmericanAir lost my bag again, third time this year, I am done with you",
    "@VirginAmerica the new seats are so comfortable, I slept the whole way to Boston",
    "@USAirways can you tell me where to find the baggage claim for flight 1832",
    "I love #DeflateGate",
    "@united thanks",
]
VALIDATION = [
    "@JetBlue why does the wifi never work on the morning flights out of JFK",
    "@SouthwestAir gate agents in Phoenix were friendly and quick this morning, thank you",
]
TEST = [
    "@AmericanAir the pilot kept us informed during the storm delay and we felt safe",
    "@united does the lounge in Newark open before five in the morning on Sundays",
]


def task_data() -> TaskData:
    def rows(texts):
        return [{"text": t, "label": i % 3} for i, t in enumerate(texts)]

    return TaskData(task="classification", source="test", label_names=LABELS, train=rows(TRAIN),
                    validation=rows(VALIDATION), test=rows(TEST), default_description=DESCRIPTION)


def gpta_messages(description: str = DESCRIPTION, exemplars: list[dict] | None = None,
                  n_history: int = 6) -> list[tuple[str, str]]:
    """The (where, text) pairs of a realistic request built with the real prompt templates."""
    system = prompts.system_prompt("classification", "BERT", "[CLS]prefix + context", LABELS)
    history = [(f"Decide whether this tweet sounds pleased, upset or indifferent, version {i}",
                i / 10) for i in range(n_history)]
    user = prompts.user_prompt(description, history, 3, exemplars=exemplars, label_names=LABELS)
    return [("request 1 system message", system), ("request 1 user message", user)]


# ---- audit_exposure ----------------------------------------------------------------------
def test_clean_gpta_requests_expose_nothing():
    sent = gpta_messages() * 3
    report = audit_exposure(sent, task_data(), [])
    assert report.ok and not report.expected and not report.unexpected
    assert report.sent == 6
    assert report.examples == len(TRAIN) + len(VALIDATION) + len(TEST) - 1  # "@united thanks"
    assert report.too_short == 1


def test_a_training_tweet_pasted_into_a_request_is_caught_verbatim():
    sent = gpta_messages()
    leaked = TRAIN[3]
    sent.append(("request 2 user message", f"Dataset description: tweets.\nFor example: {leaked}"))
    report = audit_exposure(sent, task_data(), [])
    assert not report.ok
    [exposure] = report.unexpected
    assert (exposure.split, exposure.index, exposure.text) == ("train", 3, leaked)
    assert exposure.kind == "verbatim" and exposure.words == len(words(leaked))
    assert exposure.places == ["request 2 user message"]


def test_case_whitespace_and_json_quoting_do_not_hide_a_copy():
    text = TRAIN[0]
    shouted = "\n  ".join(text.upper().split(" "))
    report = audit_exposure([("a", shouted)], task_data(), [])
    assert [(e.index, e.kind) for e in report.unexpected] == [(0, "verbatim")]
    # inside a JSON string the quotes and escapes change, the words do not
    quoted = json.dumps({"note": text.replace("my", '"my"')})
    report = audit_exposure([("b", quoted)], task_data(), [])
    [exposure] = report.unexpected
    assert exposure.index == 0 and exposure.kind == "span"
    assert exposure.words == len(words(text))


def test_an_eight_word_span_of_a_test_example_in_a_finetune_file_is_caught():
    test_words = TEST[0].split()
    span8 = " ".join(test_words[2:10])
    window = prompts.window_example(
        "system", f"{DESCRIPTION} Some users write things like: {span8} or so.",
        [("a prefix", 0.5), ("another prefix", 0.6)], "the next prefix", label_names=LABELS)
    sent = [(f"fine-tune file finetune/epoch-1.jsonl line 1 {m['role']} message", m["content"])
            for m in window["messages"]]
    report = audit_exposure(sent, task_data(), [])
    [exposure] = report.unexpected
    assert (exposure.split, exposure.index, exposure.kind, exposure.words) == ("test", 0, "span", 8)
    assert exposure.hits[0].span == " ".join(words(span8))
    assert exposure.places == ["fine-tune file finetune/epoch-1.jsonl line 1 user message"]
    # seven words are below the threshold; a lower threshold reports them
    span7 = " ".join(test_words[2:9])
    assert audit_exposure([("x", span7)], task_data(), []).ok
    assert not audit_exposure([("x", span7)], task_data(), [], min_words=7).ok


def test_each_place_is_listed_and_the_longest_run_is_reported():
    text = VALIDATION[1]
    ws = text.split()
    sent = [("request 1 user message", " ".join(ws[:9])),
            ("request 2 user message", " ".join(ws[:12]) + " and then something else entirely"),
            ("request 3 user message", "unrelated words only here")]
    report = audit_exposure(sent, task_data(), [])
    [exposure] = report.unexpected
    assert exposure.split == "validation"
    assert exposure.places == ["request 1 user message", "request 2 user message"]
    assert [h.words for h in exposure.hits] == [9, 12] and exposure.words == 12


def test_short_texts_are_audited_verbatim_only():
    data = task_data()
    # 3 words, verbatim: reported; the same words apart or reordered: not
    assert [e.text for e in audit_exposure([("a", "so, I love #DeflateGate!")], data, []).unexpected] \
        == ["I love #DeflateGate"]
    assert audit_exposure([("a", "I really love #DeflateGate")], data, []).ok
    assert audit_exposure([("a", "DeflateGate: I love it")], data, []).ok
    # two words are too few to tell apart from ordinary phrases: never reported
    report = audit_exposure([("a", "@united thanks")], data, [])
    assert report.ok and report.too_short == 1


def test_gpta_data_mode_accepts_exactly_the_declared_exemplars():
    data = task_data()
    exemplars = [data.train[0], data.train[1], data.train[2]]
    declared = [r["text"] for r in exemplars]
    sent = gpta_messages(exemplars=exemplars)
    report = audit_exposure(sent, data, declared)
    assert report.ok and not report.unexpected
    assert sorted(e.index for e in report.expected) == [0, 1, 2]
    assert {e.reason for e in report.expected} == {"declared exemplar"}
    assert report.declared == 3 and report.declared_unseen == []
    # a 4th example in the prompt is flagged, the 3 declared ones stay expected
    sent = gpta_messages(exemplars=[*exemplars, data.train[4]])
    report = audit_exposure(sent, data, declared)
    assert not report.ok
    assert [(e.split, e.index) for e in report.unexpected] == [("train", 4)]
    assert len(report.expected) == 3
    # a declared exemplar that was never sent is listed, without failing the audit
    report = audit_exposure(gpta_messages(exemplars=exemplars[:2]), data, declared)
    assert report.ok and report.declared_unseen == [declared[2]]


def test_near_duplicate_of_a_declared_exemplar_is_expected_but_extra_words_are_not():
    base = "@JetBlue thanks for the smooth landing and the free snacks, best crew ever"
    data = task_data()
    data.test.append({"text": "RT @fan: " + base, "label": 2})          # retweet of the exemplar
    data.test.append({"text": base.replace("ever", "ever, and then we waited four hours at the "
                                                    "gate for a replacement plane"),
                      "label": 2})
    report = audit_exposure([("request 1 user message", f"Text: {base}\nLabel: positive")], data,
                            [base])
    by_index = {(e.split, e.index): e for e in report.exposures}
    assert by_index[("train", 1)].reason == "declared exemplar"
    assert by_index[("test", 2)].expected and by_index[("test", 2)].reason == "inside a declared exemplar"
    # the third text shares the exemplar's words too (all of them lie inside the exemplar)
    assert by_index[("test", 3)].expected
    # ... but once the prompt also carries that text's own extra words, it is unexpected
    extra = data.test[3]["text"]
    report = audit_exposure([("request 1 user message", f"Text: {base}"), ("request 2", extra)],
                            data, [base])
    assert [(e.split, e.index) for e in report.unexpected] == [("test", 3)]


def test_a_dataset_text_sharing_a_phrase_with_the_description_is_reported_with_a_note():
    # The prompt template and the description are not dataset texts: their words alone never
    # count. But a tweet that contains the description's phrase shares a real span with what
    # was sent: it is reported (unexpected), with a note saying where the words also occur.
    phrase = "each labelled with the sentiment it expresses negative neutral or positive"
    data = task_data()
    data.train.append({"text": f"lol this dataset is {phrase} #nlp", "label": 1})
    public = {"dataset description v1": DESCRIPTION}
    report = audit_exposure(gpta_messages(), data, [], public_texts=public)
    [exposure] = report.unexpected
    assert exposure.split == "train" and exposure.kind == "span"
    assert exposure.words == len(phrase.split())
    assert "dataset description v1" in exposure.note
    # without that tweet the same requests are clean
    assert audit_exposure(gpta_messages(), task_data(), [], public_texts=public).ok


def test_report_renders_to_json_and_markdown():
    sent = gpta_messages() + [("request 9 user message", TRAIN[4] + " | pipes | too")]
    report = audit_exposure(sent, task_data(), [TRAIN[0]])
    assert isinstance(report, AuditReport)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["unexpected"][0]["index"] == 4
    assert data["unexpected"][0]["hits"][0]["where"] == "request 9 user message"
    assert data["declared_unseen"] == [TRAIN[0]]
    md = report.to_markdown()
    assert md.startswith("# Exposure audit") and "LEAK" in md
    assert "## Unexpected exposures (1)" in md and "request 9 user message" in md
    clean = audit_exposure(gpta_messages(), task_data(), [])
    assert clean.summary().startswith("OK:") and "None." in clean.to_markdown()


def test_invalid_span_length_is_a_usage_error():
    with pytest.raises(UsageError, match="span length"):
        audit_exposure([], task_data(), [], min_words=0)


def test_normalise_and_words():
    assert normalise("  A\tB\n\nc ") == "a b c"
    assert words("@United: it's #great!") == ["united", "it", "s", "great"]


def test_real_twitter_dataset_real_prompts_no_false_positives():
    """The built-in tweets against the real templates and default description: in gpta-data
    mode exactly the declared exemplars are found, nothing else (no false positives)."""
    data = load_task_data(DataConfig(), 42)
    exemplars = data.exemplars(3, 42)
    system = prompts.system_prompt("classification", "BERT", "[CLS]prefix + context",
                                   data.label_names)
    history = [("Classify the sentiment of this tweet about an airline or a brand as negative, "
                f"neutral or positive, version {i}", i / 40) for i in range(40)]
    sent = []
    for r in range(40):
        user = prompts.user_prompt(data.default_description, history[:r], 5, exemplars=exemplars,
                                   label_names=data.label_names)
        sent += [(f"request {r} system message", system), (f"request {r} user message", user)]
    report = audit_exposure(sent, data, [r["text"] for r in exemplars])
    assert report.ok
    assert {e.reason for e in report.expected} <= {"declared exemplar", "inside a declared exemplar"}
    assert sum(e.reason == "declared exemplar" for e in report.expected) == 3
    # gpta mode: the same requests without exemplars expose nothing at all
    clean = []
    for r in range(40):
        user = prompts.user_prompt(data.default_description, history[:r], 5,
                                   label_names=data.label_names)
        clean += [(f"request {r} system message", system), (f"request {r} user message", user)]
    report = audit_exposure(clean, data, [])
    assert report.ok and not report.expected


# ---- gpta audit on real sessions --------------------------------------------------------
PREFIX_WORDS = ["decide", "whether", "writer", "sounds", "pleased", "upset", "indifferent",
                "judge", "tone", "carefully", "overall", "mood", "clearly"]


class WordTA(SeededTA):
    """Prefixes from words the generated data never uses."""

    def __init__(self):
        super().__init__(PREFIX_WORDS, prompt_tokens=100, tokens_per_prefix=10)


class NoJobs(FinetuneBackend):
    name = "fake"
    poll_interval_s = 0.0

    def submit(self, examples, base_model, workdir, epoch):
        return f"job-{epoch}"

    def poll(self, job_id):
        return JobStatus(job_id, "succeeded", model="word-ta")

    def cancel(self, job_id):
        pass


def session_config(tiny_bert_dir, sentiment_csv, data=None, **over):
    return build_config("default", overrides={
        "seed": 5, "device": "cpu",
        "data": {"dataset": str(sentiment_csv), "train_size": 24, "val_size": 12, "test_size": 12,
                 **(data or {})},
        "student": {"model": str(tiny_bert_dir), "max_length": 32, "batch_size": 8,
                    "eval_batch_size": 32, "checkpoint_every": 100},
        "loop": {"epochs": 1, "k": 4, "l": 2, "window": 2},
        "ta": {"backend": "scripted"},
        **over,
    })


def run_session(config, home) -> str:
    from sessions.runner import start_session

    handle, engine = start_session(config, home, ta=WordTA(), finetune=NoJobs())
    try:
        assert engine.run().status == "finished"
    finally:
        handle.close()
    return handle.name


def gpta(home, *argv) -> int:
    from gpta_tui import cli

    if "gpta_tui.commands.audit" not in cli.COMMAND_MODULES:
        cli.COMMAND_MODULES.append("gpta_tui.commands.audit")
    return cli.main(["--home", str(home), *argv])


@pytest.fixture()
def audit_cli(monkeypatch):
    from gpta_tui import cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", list(cli.COMMAND_MODULES))


def test_cli_clean_session_exits_0_then_a_planted_finetune_leak_exits_1(
        tiny_bert_dir, sentiment_csv, gpta_home, audit_cli, capsys):
    config = session_config(tiny_bert_dir, sentiment_csv, name="clean")
    name = run_session(config, gpta_home)
    assert gpta(gpta_home, "audit", name) == 0
    out = capsys.readouterr().out
    assert "OK: 0 unexpected and 0 expected" in out
    # the session sent requests and wrote dialogue gradients, and the audit read them
    assert gpta(gpta_home, "audit", name, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["sent_texts"] > 4 and report["examples"] > 40

    # plant an 8-word span of a test example in a fine-tune file of the session
    data = load_task_data(config.data, config.seed)
    test_text = max((r["text"] for r in data.test), key=lambda t: len(t.split()))
    assert len(test_text.split()) >= 8
    span = " ".join(test_text.split()[:8])
    leak = {"messages": [{"role": "system", "content": "s"},
                         {"role": "user", "content": f"Dataset description: {span}"},
                         {"role": "assistant", "content": '{"prefixes": ["p"]}'}]}
    folder = gpta_home / "sessions" / name / "finetune"
    folder.mkdir()
    (folder / "epoch-1.jsonl").write_text(json.dumps(leak) + "\n", encoding="utf-8")
    md = gpta_home / "audit.md"
    assert gpta(gpta_home, "audit", name, "--json", "--markdown", str(md)) == 1
    report = json.loads(capsys.readouterr().out)
    [exposure] = report["unexpected"]
    assert exposure["split"] == "test" and exposure["text"] == test_text
    assert exposure["hits"][0]["where"] == "file finetune/epoch-1.jsonl line 1 user message"
    assert "finetune/epoch-1.jsonl" in md.read_text(encoding="utf-8")
    assert gpta(gpta_home, "audit", name) == 1
    assert "LEAK" in capsys.readouterr().out


def test_cli_flags_a_training_text_in_the_description(tiny_bert_dir, sentiment_csv, gpta_home,
                                                       audit_cli, capsys):
    probe = session_config(tiny_bert_dir, sentiment_csv)
    data = load_task_data(probe.data, probe.seed)
    leaked = max((r["text"] for r in data.train), key=lambda t: len(t.split()))
    config = session_config(tiny_bert_dir, sentiment_csv, name="leaky",
                            data={"description": f"Tweets such as: {leaked}"})
    name = run_session(config, gpta_home)
    assert gpta(gpta_home, "audit", name, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert [(e["split"], e["text"], e["kind"]) for e in report["unexpected"]] == [
        ("train", leaked, "verbatim")]
    places = {h["where"] for h in report["unexpected"][0]["hits"]}
    assert "request 1 user message" in places
    assert any(p.startswith("file windows/epoch-1.jsonl") for p in places)
    assert "dataset description v1" in report["unexpected"][0]["note"]


def test_cli_gpta_data_session_accepts_its_exemplars(tiny_bert_dir, sentiment_csv, gpta_home,
                                                     audit_cli, capsys):
    config = session_config(tiny_bert_dir, sentiment_csv, name="with-data", mode="gpta-data")
    name = run_session(config, gpta_home)
    assert gpta(gpta_home, "audit", name, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    data = load_task_data(config.data, config.seed)
    exemplars = {r["text"] for r in data.exemplars(config.data.exemplars, config.seed)}
    declared = {e["text"] for e in report["expected"] if e["reason"] == "declared exemplar"}
    audited = {t for t in exemplars if len(words(t)) >= 3}
    assert declared == audited and audited
    assert report["declared"] == 3 and not report["unexpected"]


def test_cli_unknown_session_is_a_usage_error(gpta_home, audit_cli, capsys):
    assert gpta(gpta_home, "audit", "nope") == 2
    assert "no session named 'nope'" in capsys.readouterr().err
