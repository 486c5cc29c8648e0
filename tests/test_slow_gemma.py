"""The real offline default TA, Gemma 3 270M base from the GGUF packages (minutes on 2 CPU cores).

Builds the dequantized cache in a temporary GPTA_CACHE, proposes prefixes for a real GPTA
prompt, reloads from the cache, and runs a short local LoRA job whose adapter the TA loads.
Run with: python -m pytest tests/test_slow_gemma.py -m slow -s
"""

from __future__ import annotations

import time

import pytest

from engine import prompts
from engine.config import FinetuneConfig
from engine.finetune.local_lora import LocalLoRAFinetune
from engine.parsing import clean_prefixes, parse_prefixes
from engine.ta import local as local_mod
from engine.ta.local import LocalTA

pytestmark = pytest.mark.slow

DESCRIPTION = ("Tweets about everyday life, each labelled with the sentiment of its author: "
               "negative, neutral or positive.")
HISTORY = [("Read the tweet.", 0.41), ("Is this tweet happy or sad?", 0.52),
           ("Decide whether the following tweet expresses a positive, negative or neutral feeling.", 0.58)]


def system() -> str:
    return prompts.system_prompt("classification", "BERT", "[CLS]prefix + context",
                                 ["negative", "neutral", "positive"])


def test_gemma_builds_caches_generates_and_takes_a_lora_adapter(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTA_CACHE", str(tmp_path / "cache"))
    statuses: list[str] = []

    started = time.perf_counter()
    ta = LocalTA("gemma-3-270m", on_status=statuses.append)
    print(f"\nfirst start (assemble + dequantize + save): {time.perf_counter() - started:.0f} s")
    assert any("dequantizing Gemma 3 270M" in s for s in statuses)
    cached = tmp_path / "cache" / local_mod.DEFAULT_DIR_NAME
    assert (cached / "config.json").is_file() and (cached / "model.safetensors").is_file()
    assert (tmp_path / "cache" / local_mod.GGUF_NAME).is_file()
    assert ta.prompt_format == "transcript" and ta.model_name == "gemma-3-270m"

    accepted_all = []
    for label, history in (("empty history", []), ("with history", HISTORY)):
        msgs = prompts.build_messages(system(), prompts.user_prompt(DESCRIPTION, history, 4))
        t0 = time.perf_counter()
        reply = ta.propose(msgs, n=4, temperature=1.0, seed=0)
        print(f"{label}: {time.perf_counter() - t0:.1f} s, usage {reply.usage}")
        for text in reply.texts:
            print(f"    {text!r}")
        assert len(reply.texts) == 4
        accepted, _ = clean_prefixes([c for t in reply.texts for c in parse_prefixes(t)])
        accepted_all += accepted
        assert reply.usage["completion_tokens"] > 0
    assert len(accepted_all) >= 4  # at least half usable

    statuses.clear()
    started = time.perf_counter()
    again = LocalTA("gemma-3-270m", on_status=statuses.append)
    print(f"second start (from the cache): {time.perf_counter() - started:.1f} s")
    assert not any("dequantizing" in s or "assembling" in s for s in statuses)
    again.close()

    examples = [prompts.window_example(system(), DESCRIPTION, HISTORY[:2], HISTORY[2][0]),
                prompts.window_example(system(), DESCRIPTION, HISTORY[1:], "Is the author of this tweet "
                                       "positive, negative or neutral about their day?")]
    backend = LocalLoRAFinetune(FinetuneConfig(backend="local", epochs=1, batch_size=1, lr=2e-4),
                                ta_model="gemma-3-270m")
    started = time.perf_counter()
    job_id = backend.submit(examples, "gemma-3-270m", tmp_path / "run", epoch=1)
    status = backend.wait(job_id, timeout=900)
    print(f"LoRA job: {status.status} in {time.perf_counter() - started:.0f} s, "
          f"losses {[round(x, 3) for x in backend.losses(job_id)]}")
    assert status.status == "succeeded", status.message
    assert status.step == status.total_steps == 2

    ta.use_model(status.model)
    assert ta.model_name == "gemma-3-270m+epoch-1"
    msgs = prompts.build_messages(system(), prompts.user_prompt(DESCRIPTION, HISTORY, 2))
    tuned = ta.propose(msgs, n=2, temperature=1.0, seed=0)
    print(f"tuned: {tuned.texts}")
    assert len(tuned.texts) == 2 and tuned.model == "gemma-3-270m+epoch-1"
