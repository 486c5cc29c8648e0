"""Experiments: prefix transfer in the loop, `gpta compare` orchestration, aggregation and
statistics, reports, and `gpta prefixes export`. Tiny random BERT, generated CSV, in-test TA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import events as ev
from engine.config import build_config
from engine.errors import ConfigError
from engine.finetune.base import FinetuneBackend, JobStatus
from engine.loop import Engine
from engine.ta.base import TAReply, TeachingAssistant

WORDS = ["judge", "the", "feeling", "in", "this", "tweet", "mood", "tone", "label", "opinion",
         "positive", "negative", "neutral", "carefully", "read", "sentiment"]


class FakeTA(TeachingAssistant):
    """Deterministic prefixes from (seed, j); records every request it answers."""

    backend = "fake"

    def __init__(self):
        self.calls: list[list[dict]] = []
        self.model = "fake-ta"

    @property
    def model_name(self) -> str:
        return self.model

    def propose(self, messages, n, temperature, seed):
        self.calls.append(messages)
        prefixes = []
        for j in range(n):
            r = (seed + 11 * j) % 997
            words = [WORDS[(r + 5 * i) % len(WORDS)] for i in range(3 + r % 3)]
            prefixes.append(" ".join([*words, str(r)]))
        return TAReply(texts=[json.dumps({"prefixes": prefixes})],
                       usage={"prompt_tokens": 10, "completion_tokens": 5 * n,
                              "total_tokens": 10 + 5 * n}, model=self.model)

    def use_model(self, model_ref):
        self.model = model_ref


class InstantJobs(FinetuneBackend):
    name = "fake"
    poll_interval_s = 0.0

    def submit(self, examples, base_model, workdir, epoch):
        return f"job-{epoch}"

    def poll(self, job_id):
        return JobStatus(job_id, "succeeded", model=f"tuned-{job_id}")


def tiny_overrides(tiny_bert_dir: Path, csv: Path, **over) -> dict:
    base = {
        "seed": 3,
        "data": {"dataset": str(csv), "train_size": 48, "val_size": 24, "test_size": 24},
        "student": {"model": str(tiny_bert_dir), "max_length": 32, "batch_size": 8,
                    "eval_batch_size": 32, "lr": 1e-3, "checkpoint_every": 4},
        "loop": {"epochs": 2, "k": 4, "l": 2, "window": 2},
        "ta": {"backend": "scripted"},
    }
    for key, value in over.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    return base


class Recorder:
    def __init__(self):
        self.events: list[ev.Event] = []

    def __call__(self, event):
        self.events.append(event)

    def of(self, cls):
        return [e for e in self.events if isinstance(e, cls)]


SEEDS = ["Decide the sentiment of the tweet:", "Is this tweet positive, negative or neutral?",
         "Tweet mood:"]


# ---- prefix transfer in the loop ----------------------------------------------------------
def test_seed_prefixes_replace_the_first_ta_call(tiny_bert_dir, sentiment_csv, tmp_path):
    cfg = build_config("default", overrides=tiny_overrides(
        tiny_bert_dir, sentiment_csv, loop={"epochs": 1, "seed_prefixes": SEEDS}))
    ta, rec = FakeTA(), Recorder()
    done = Engine(cfg, tmp_path, ta=ta, finetune=InstantJobs(), listeners=[rec]).run()
    assert done.status == "finished"
    # epoch 1 trains with the first seed prefix; no TA call happened before collection
    assert rec.of(ev.ValidationResult)[0].prefix == SEEDS[0]
    first_request = rec.events.index(rec.of(ev.TARequest)[0])
    phases = [e for e in rec.events[:first_request] if isinstance(e, ev.PhaseChanged)]
    assert [p.phase for p in phases][-1] == "collecting"
    # the other seeds are the first candidates: scored before any TA prefix, as carried ones
    scored = rec.of(ev.PrefixScored)
    assert [s.prefix for s in scored[:2]] == SEEDS[1:] and all(s.request_id == -1 for s in scored[:2])
    assert len(ta.calls) == 1  # k=4: the training prefix, 2 seeds, then one request for 1


def test_fixed_prefix_trains_every_epoch_with_it_and_never_uses_the_ta(
        tiny_bert_dir, sentiment_csv, tmp_path):
    cfg = build_config("default", overrides=tiny_overrides(
        tiny_bert_dir, sentiment_csv, loop={"seed_prefixes": SEEDS, "fixed_prefix": True}))
    ta, rec = FakeTA(), Recorder()
    engine = Engine(cfg, tmp_path, ta=ta, finetune=InstantJobs(), listeners=[rec])
    done = engine.run()
    assert done.status == "finished"
    assert ta.calls == [] and not rec.of(ev.TARequest) and not rec.of(ev.FinetuneUpdate)
    assert [v.prefix for v in rec.of(ev.ValidationResult)] == [SEEDS[0]] * cfg.loop.epochs
    assert done.best_prefix == SEEDS[0] and done.test_metrics and done.test_metrics_no_prefix
    assert not rec.of(ev.PrefixScored)


def test_fixed_prefix_does_not_build_a_ta(tiny_bert_dir, sentiment_csv, tmp_path):
    # ta.backend local would load Gemma; a fixed prefix never needs it
    cfg = build_config("default", overrides=tiny_overrides(
        tiny_bert_dir, sentiment_csv, ta={"backend": "local"},
        loop={"epochs": 1, "seed_prefixes": SEEDS[:1], "fixed_prefix": True}))
    engine = Engine(cfg, tmp_path)
    assert engine.run().status == "finished"
    assert engine.ta is None and engine.finetune is None


def test_fixed_prefix_needs_a_seed_prefix(tiny_bert_dir, sentiment_csv):
    with pytest.raises(ConfigError, match="loop.fixed_prefix"):
        build_config("default", overrides=tiny_overrides(
            tiny_bert_dir, sentiment_csv, loop={"fixed_prefix": True}))
    with pytest.raises(ConfigError, match="seed_prefixes"):
        build_config("default", overrides=tiny_overrides(
            tiny_bert_dir, sentiment_csv, loop={"seed_prefixes": ["ok", "  "]}))
