"""Control arms (frozen-ta, random-prefix, static-prefix), the selection split and the
rejection of prefixes copied from the TA prompt's own worked examples."""

from __future__ import annotations

import random

import pytest

from engine import events as ev
from engine.arms import RANDOM_PREFIX_WORDS, RandomWordsTA, static_instruction, word_vocabulary
from engine.parsing import COPIED, clean_prefixes, copy_similarity
from engine.ta import transcript
from engine.ta.base import TAReply, TeachingAssistant

from test_engine import FakeJobs, run_engine, tiny_config


def test_random_words_are_reproducible_and_within_the_length_range():
    vocab = word_vocabulary([f"w{i}" for i in range(10)] + ["apple", "##ing", "Zebra", "river",
                                                            "positive", "it", "x" * 20]
                            + [f"word{c}" for c in "abcdefghijklmnopqrstuvwxyz"])
    assert "apple" in vocab and "river" in vocab
    assert not {"##ing", "Zebra", "positive", "it", "x" * 20} & set(vocab)
    ta = RandomWordsTA([f"{a}{b}{c}" for a in "abcde" for b in "fghij" for c in "klmno"])
    one = ta.propose([], n=5, temperature=1.0, seed=11)
    assert one.texts == ta.propose([], n=5, temperature=1.0, seed=11).texts
    assert one.texts != ta.propose([], n=5, temperature=1.0, seed=12).texts
    rng = random.Random(0)
    lengths = {len(ta.prefix(rng).split()) for _ in range(300)}
    assert (min(lengths), max(lengths)) == RANDOM_PREFIX_WORDS == (8, 24)


def test_static_instruction_names_the_labels():
    assert static_instruction("classification", ["negative", "neutral", "positive"]) == \
        "Classify the text as negative, neutral or positive."
    assert static_instruction("summarization", []).startswith("Summarize")


def test_near_copies_of_the_prompt_examples_are_rejected():
    example = transcript.EXAMPLES[0][1]
    near = example.replace("recipe", "recipes").upper()
    assert copy_similarity(near, example) >= 0.8
    fresh = "Decide whether the tweet sounds happy, angry or calm."
    accepted, rejected = clean_prefixes([example, near, fresh], prompt_examples=[example])
    assert accepted == [fresh]
    assert [why for _, why in rejected] == [COPIED, COPIED]
    # the threshold is a setting; 1.0 rejects exact (normalised) copies only
    accepted, _ = clean_prefixes([near], prompt_examples=[example], copy_threshold=1.0)
    assert accepted == [near.strip()]


class CopyingTA(TeachingAssistant):
    """A TA that answers with its prompt's own worked example, then with fresh prefixes."""

    backend = "scripted"

    def __init__(self):
        self.calls = 0

    @property
    def model_name(self) -> str:
        return "copier"

    def prompt_examples(self) -> list[str]:
        return [p for _, p in transcript.EXAMPLES]

    def propose(self, messages, n, temperature, seed, should_stop=None):
        self.calls += 1
        prefixes = [transcript.EXAMPLES[0][1]] + [f"Fresh prefix number {self.calls} {i}" for i in range(n - 1)]
        from engine.prompts import assistant_message

        return TAReply(texts=[assistant_message(prefixes)], usage={})

    def use_model(self, model_ref):
        pass


def test_a_ta_that_copies_its_prompt_example_is_caught(tiny_bert_dir, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, loop={"epochs": 1, "k": 6, "l": 3, "window": 2})
    ta = CopyingTA()
    engine, rec = run_engine(cfg, tmp_path, ta=ta, jobs=FakeJobs(polls=1))
    finished = engine.run()
    assert finished.status == "finished"
    example = transcript.EXAMPLES[0][1]
    scored = [e.prefix for e in rec.of(ev.PrefixScored)]
    assert example not in scored and example != engine.state.training_prefix
    assert finished.summary["copied_from_prompt"] == ta.calls
    assert any(COPIED in [why for _, why in r.rejected] for r in rec.of(ev.TAResponse))


def _run_arm(tiny_bert_dir, sentiment_csv, tmp_path, mode, **over):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, mode=mode, **over)
    engine, rec = run_engine(cfg, tmp_path / mode, jobs=FakeJobs(polls=1))
    finished = engine.run()
    assert finished.status == "finished"
    return engine, rec, finished


def test_frozen_ta_collects_like_gpta_but_never_tunes(tiny_bert_dir, sentiment_csv, tmp_path):
    engine, rec, finished = _run_arm(tiny_bert_dir, sentiment_csv, tmp_path, "frozen-ta")
    assert len(engine.state.epochs) == 2
    assert all(r["history_size"] == 6 for r in engine.state.epochs)
    jobs = rec.of(ev.FinetuneUpdate)
    assert jobs and all(j.status == "skipped" and "frozen-ta" in j.message for j in jobs)
    assert not rec.of(ev.TAModelChanged)


def test_random_prefix_spends_gptas_budget_on_random_words(tiny_bert_dir, sentiment_csv, tmp_path):
    engine, rec, finished = _run_arm(tiny_bert_dir, sentiment_csv, tmp_path, "random-prefix")
    requests = rec.of(ev.TARequest)
    assert requests and all(r.backend == "random-words" for r in requests)
    assert all(r["history_size"] == 6 for r in engine.state.epochs)  # the same k as GPTA
    scored = [e.prefix for e in rec.of(ev.PrefixScored) if not e.reused]
    lo, hi = RANDOM_PREFIX_WORDS
    assert all(lo <= len(p.split()) <= hi for p in scored)
    assert all(j.status == "skipped" for j in rec.of(ev.FinetuneUpdate))
    # reproducible: the same seed gives the same prefixes
    again, rec2, _ = _run_arm(tiny_bert_dir, sentiment_csv, tmp_path / "again", "random-prefix")
    assert [e.prefix for e in rec2.of(ev.PrefixScored)] == [e.prefix for e in rec.of(ev.PrefixScored)]


def test_static_prefix_trains_with_one_instruction_and_no_ta(tiny_bert_dir, sentiment_csv, tmp_path):
    engine, rec, finished = _run_arm(tiny_bert_dir, sentiment_csv, tmp_path, "static-prefix")
    assert not rec.of(ev.TARequest) and not rec.of(ev.PrefixScored)
    want = static_instruction("classification", list(engine.data.label_names))
    assert {v.prefix for v in rec.of(ev.ValidationResult)} == {want}
    assert finished.best_prefix in (want, "")  # chosen on the selection split, with "no prefix"


def test_every_arm_chooses_on_a_disjoint_selection_split(tiny_bert_dir, sentiment_csv, tmp_path):
    over = {"data": {"dataset": str(sentiment_csv), "train_size": 48, "val_size": 24,
                     "test_size": 24, "selection_size": 20}}
    for mode in ("baseline", "gpta"):
        engine, rec, finished = _run_arm(tiny_bert_dir, sentiment_csv, tmp_path, mode, **over)
        data = engine.data
        assert len(data.selection) == 20
        texts = {s: {r["text"] for r in getattr(data, s)} for s in ("train", "validation", "test", "selection")}
        assert not texts["selection"] & (texts["validation"] | texts["test"] | texts["train"])
        for record in engine.state.epochs:
            sel = record["selection"]
            prefixes = [c[0] for c in sel["candidates"]]
            assert "" in prefixes and sel["prefix"] in prefixes
            assert sel["score"] == max(c[2] for c in sel["candidates"])
        best = engine.state.best
        chosen = max(engine.state.epochs, key=lambda r: r["selection"]["score"])
        assert best["epoch"] == chosen["epoch"] and best["prefix"] == chosen["selection"]["prefix"]
        assert best["score"] == chosen["selection"]["score"]
        assert finished.summary["selection_metrics"] == best["selection_metrics"]
        if mode == "gpta":
            assert len(engine.state.epochs[0]["selection"]["candidates"]) == 4  # top 3 + no prefix


def test_paper_preset_names_the_papers_models_and_refuses_offline_in_one_line(
        tmp_path, monkeypatch, capsys):
    from engine.config import build_config
    from gpta_tui.cli import main

    cfg = build_config("paper")
    assert (cfg.student.model, cfg.ta.backend, cfg.finetune.backend) == (
        "bert-base-uncased", "openai", "openai")
    assert (cfg.data.train_size, cfg.loop.k, cfg.loop.window, cfg.loop.epochs) == (10000, 50, 5, 5)
    assert build_config("paper", overrides={"data": {"task": "summarization", "dataset": "xsum"}}
                        ).student.model == "facebook/bart-base"
    sizes = build_config("paper-sizes")
    assert sizes.student.model == "all-MiniLM-L6-v2" and sizes.data.train_size == 10000
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["--home", str(tmp_path / "home"), "run", "--preset", "paper"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "OPENAI_API_KEY" in err and "Hugging Face Hub" in err and "paper-sizes" in err
    assert not (tmp_path / "home" / "sessions").exists() or not any((tmp_path / "home" / "sessions").iterdir())
