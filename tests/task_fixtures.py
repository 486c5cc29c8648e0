"""Generated data and tiny random models for the QA, multiple-choice and summarization tests.

Each generator is seeded and makes data a tiny model can learn something from:
- QA: the answer is always the city of the fact the question asks about;
- multiple choice: the correct option is the only "positive" word among neutral ones;
- summarization: the summary is the document's first sentence.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from engine import events as ev
from engine.data import TaskData
from engine.finetune.base import FinetuneBackend, JobStatus
from engine.loop import Engine
from conftest import Recorder
from fake_ta import SeededTA

COLORS = ["red", "blue", "green", "yellow", "black", "white", "brown", "pink"]
ANIMALS = ["cat", "dog", "horse", "fox", "owl", "bear", "wolf", "duck"]
CITIES = ["Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Oslo", "Lisbon"]
POS = ["great", "love", "happy", "wonderful", "excellent", "amazing", "good", "nice"]
NEU = ["today", "table", "monday", "street", "paper", "window", "train", "coffee"]
FILLER = ["people", "say", "that", "it", "is", "quiet", "there", "and", "often", "sunny",
          "in", "spring", "but", "rainy", "autumn"]


def make_qa_rows(n: int, seed: int = 0, unanswerable_every: int = 0, facts: int = 3) -> list[dict]:
    """SQuAD-style rows; every `unanswerable_every`-th question asks about an absent animal."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        chosen = rng.sample(range(len(ANIMALS)), facts + 1)
        parts, facts_at = [], []
        for k in chosen[:facts]:
            filler = " ".join(rng.choice(FILLER) for _ in range(rng.randint(2, 6)))
            city = rng.choice(CITIES)
            sentence = f"The {COLORS[k]} {ANIMALS[k]} lives in {city}. {filler.capitalize()}."
            offset = sum(len(p) + 1 for p in parts)
            facts_at.append((k, city, offset + sentence.index(city)))
            parts.append(sentence)
        context = " ".join(parts)
        if unanswerable_every and i % unanswerable_every == 0:
            k = chosen[facts]
            answers = {"text": [], "answer_start": []}
        else:
            k, city, start = rng.choice(facts_at)
            answers = {"text": [city], "answer_start": [start]}
        rows.append({"id": f"q{i}", "question": f"Where does the {COLORS[k]} {ANIMALS[k]} live?",
                     "context": context, "answers": answers})
    return rows


def make_mc_rows(n: int, seed: int = 0, options: int = 4) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        count = options if isinstance(options, int) else rng.choice(options)
        wrong = rng.sample(NEU, count - 1)
        label = rng.randrange(count)
        opts = wrong[:label] + [rng.choice(POS)] + wrong[label:]
        article = " ".join(rng.choice(FILLER) for _ in range(rng.randint(8, 20)))
        rows.append({"article": f"Story {i}: {article}.", "question": "Which word is positive?",
                     "options": opts, "label": label})
    return rows


def make_summarization_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        sentences = []
        for _ in range(rng.randint(2, 4)):
            k = rng.randrange(len(ANIMALS))
            sentences.append(f"the {COLORS[k]} {ANIMALS[k]} went to {rng.choice(CITIES).lower()} "
                             f"{' '.join(rng.choice(FILLER) for _ in range(rng.randint(1, 4)))}.")
        rows.append({"document": f"report {i}. " + " ".join(sentences), "summary": sentences[0]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def task_data(task: str, train: list[dict], validation: list[dict], test: list[dict]) -> TaskData:
    """The real TaskData of generated rows (no labels, no description: the task students
    need neither)."""
    return TaskData(task, "generated", [], train, validation, test, "")


@pytest.fixture(scope="session")
def tiny_bart_dir(tmp_path_factory, minilm_dir) -> Path:
    """A 1-layer, 32-wide BART with the MiniLM tokenizer ([CLS] starts, [SEP] ends a sequence)."""
    import torch
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration, GenerationConfig

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-bart")
    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id,
               eos_token_id=tok.sep_token_id, decoder_start_token_id=tok.sep_token_id)
    cfg = BartConfig(vocab_size=tok.vocab_size, d_model=32, encoder_layers=1, decoder_layers=1,
                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                     decoder_ffn_dim=64, max_position_embeddings=256, **ids)
    model = BartForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------
# The engine with an in-test TA and fine-tune backend
# ---------------------------------------------------------------------------------------

PREFIX_WORDS = ["answer", "the", "question", "read", "passage", "carefully", "summarize",
                "document", "choose", "best", "option", "briefly", "find", "span", "text"]


class WordTA(SeededTA):
    def __init__(self):
        super().__init__(PREFIX_WORDS)


class FakeJobs(FinetuneBackend):
    """A fine-tune job that succeeds on its second poll."""

    name = "fake"
    poll_interval_s = 0.0

    def __init__(self):
        self.submitted: list[list[dict]] = []
        self.polls: dict[str, int] = {}

    def submit(self, examples, base_model, workdir, epoch):
        self.submitted.append(examples)
        self.polls[f"job-{epoch}"] = 0
        return f"job-{epoch}"

    def poll(self, job_id):
        self.polls[job_id] += 1
        if self.polls[job_id] < 2:
            return JobStatus(job_id, "running", step=1, total_steps=2)
        return JobStatus(job_id, "succeeded", model=f"tuned-{job_id}")

    def cancel(self, job_id):
        pass


def run_engine(cfg, workdir, *, controls=None, resume=None, listeners=()):
    """(engine, recorder, ta) for one run of the real Engine with the fakes."""
    rec, ta = Recorder(), WordTA()
    engine = Engine(cfg, workdir, ta=ta, finetune=FakeJobs(), controls=controls,
                    listeners=[rec, *listeners], resume=resume)
    return engine, rec, ta


def fingerprint(rec: Recorder) -> dict:
    finished = rec.of(ev.RunFinished)[-1]
    return {"losses": {e.step: e.loss for e in rec.of(ev.TrainStep)},
            "history": rec.of(ev.HistoryUpdated)[-1].history,
            "val": rec.of(ev.ValidationResult)[-1].metrics,
            "test": finished.test_metrics, "best": finished.best_prefix}


def stop_and_resume(cfg, workdir, stop_step: int) -> tuple[Recorder, Recorder]:
    """Stop a run after training step `stop_step`, resume it from its last checkpoint; the
    events of both parts."""
    from engine.controls import Controls

    controls = Controls()

    def stopper(event):
        if isinstance(event, ev.TrainStep) and event.step == stop_step:
            controls.stop()

    first, part1, _ = run_engine(cfg, workdir, controls=controls, listeners=[stopper])
    assert first.run().status == "stopped"
    state = json.loads(json.dumps(part1.of(ev.CheckpointSaved)[-1].state))
    second, part2, _ = run_engine(cfg, workdir, resume=state)
    assert second.run().status == "finished"
    return part1, part2
