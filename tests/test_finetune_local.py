"""LocalLoRAFinetune on the tiny causal LM: a job trains, saves an adapter the LocalTA can load,
and can be paused, cancelled or fail cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import prompts
from engine.config import FinetuneConfig
from engine.finetune.local_lora import LocalLoRAFinetune
from engine.ta.local import LocalTA, encode_prompt, encode_training_example

TARGET = "hello world"


def examples(count: int = 8) -> list[dict]:
    """Dialogue gradients whose answer is always TARGET, so a LoRA can learn it fast."""
    out = []
    for i in range(count):
        window = [(f"prefix number {i}", 0.1 * i), (f"another prefix {i}", 0.1 * i + 0.05)]
        out.append(prompts.window_example("You write prefixes.", "Tweets.", window, TARGET))
    return out


def backend(lm_dir: Path, **overrides) -> LocalLoRAFinetune:
    cfg = FinetuneConfig(backend="local", epochs=10, lr=5e-2, batch_size=4, lora_r=8, lora_alpha=16,
                         lora_dropout=0.0)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return LocalLoRAFinetune(cfg, device="cpu", ta_model=str(lm_dir), seed=1)


@pytest.fixture(scope="module")
def finished(tiny_causal_lm_dir, tmp_path_factory):
    """One successful job, shared by the tests that inspect its result."""
    workdir = tmp_path_factory.mktemp("run")
    be = backend(tiny_causal_lm_dir)
    job_id = be.submit(examples(), str(tiny_causal_lm_dir), workdir, epoch=1)
    first = be.poll(job_id)
    final = be.wait(job_id, timeout=600)
    return be, job_id, workdir, first, final


def test_training_examples_mask_everything_but_the_answer(tiny_causal_lm_dir):
    ta = LocalTA(str(tiny_causal_lm_dir))
    example = examples(1)[0]["messages"]
    prompt_ids, target_ids = encode_training_example(ta.tokenizer, example, chat=False)
    # the prompt part is exactly what generation feeds the model
    assert prompt_ids == encode_prompt(ta.tokenizer, ta.render(example[:-1]), chat=False)
    assert ta.tokenizer.decode(target_ids) == f'{TARGET} "'


def test_job_succeeds_and_loss_goes_down(finished):
    be, job_id, workdir, first, final = finished
    assert first.status in ("queued", "running")
    assert final.status == "succeeded", final.message
    assert final.step == final.total_steps == 20  # 10 epochs x ceil(8 / 4) steps
    losses = be.losses(job_id)
    assert len(losses) == 20
    assert sum(losses[-4:]) / 4 < losses[0]
    assert final.loss == losses[-1] and final.eta_s == 0.0
    # the job's own token accuracy on the answers (paper Figure 4, second reading) climbs
    log = json.loads((workdir / "ta-adapters" / "epoch-1" / "training_log.json").read_text())
    accuracies = log["token_accuracies"]
    assert len(accuracies) == 20 and all(0.0 <= a <= 1.0 for a in accuracies)
    assert final.accuracy == accuracies[-1]
    assert sum(accuracies[-4:]) / 4 > accuracies[0]
    events = first.events + final.events
    assert any(e.startswith("step 1/20 loss ") for e in events)
    assert any("adapter saved" in e for e in events)
    assert be.poll(job_id).events == []  # events are handed out once


def test_adapter_is_saved_atomically_with_a_log(finished):
    _, job_id, workdir, _, final = finished
    adapter = workdir / "ta-adapters" / "epoch-1"
    assert final.model == str(adapter)
    assert (adapter / "adapter_config.json").is_file()
    assert any(adapter.glob("adapter_model.*"))
    log = json.loads((adapter / "training_log.json").read_text())
    assert log["prompt_format"] == "transcript" and log["examples"] == 8 and len(log["losses"]) == 20
    assert [p.name for p in (workdir / "ta-adapters").iterdir()] == ["epoch-1"]


def test_local_ta_loads_the_adapter_and_generation_changes(finished, tiny_causal_lm_dir):
    _, _, _, _, final = finished
    ta = LocalTA(str(tiny_causal_lm_dir), max_new_tokens=6)
    msgs = examples(1)[0]["messages"][:2]
    base = ta.propose(msgs, n=1, temperature=0.0, seed=0).texts
    ta.use_model(final.model)
    assert ta.model_name == f"{tiny_causal_lm_dir.name}+epoch-1"
    tuned = ta.propose(msgs, n=1, temperature=0.0, seed=0)
    assert tuned.texts != base
    assert "hello" in tuned.texts[0]
    assert tuned.model == ta.model_name
    ta.use_model(final.model)  # loading it again replaces, not stacks, the adapter
    assert ta.propose(msgs, n=1, temperature=0.0, seed=0).texts == tuned.texts
    ta.use_model(str(tiny_causal_lm_dir))  # the base model's name switches back
    assert ta.model_name == tiny_causal_lm_dir.name
    assert ta.propose(msgs, n=1, temperature=0.0, seed=0).texts == base


def test_a_job_can_continue_from_an_adapter(finished, tiny_causal_lm_dir, tmp_path):
    _, _, _, _, final = finished
    be = backend(tiny_causal_lm_dir, epochs=1)
    job_id = be.submit(examples(4), final.model, tmp_path, epoch=2)
    status = be.wait(job_id, timeout=600)
    assert status.status == "succeeded", status.message
    log = json.loads((Path(status.model) / "training_log.json").read_text())
    assert log["continued_from"] == final.model
    assert Path(status.model) == tmp_path / "ta-adapters" / "epoch-2"


def test_pause_holds_the_job_and_resume_finishes_it(tiny_causal_lm_dir, tmp_path):
    be = backend(tiny_causal_lm_dir, epochs=3)
    job_id = be.submit(examples(), str(tiny_causal_lm_dir), tmp_path, epoch=1)
    be.set_paused(job_id, True)
    held = be.wait(job_id, timeout=1.0)  # the thread stays parked between steps
    assert held.status in ("queued", "running")
    assert held.step < held.total_steps or held.total_steps == 0
    assert "paused" in held.events
    be.set_paused(job_id, False)
    final = be.wait(job_id, timeout=600)
    assert final.status == "succeeded", final.message
    assert "resumed" in final.events


def test_cancel_stops_between_steps_without_an_adapter(tiny_causal_lm_dir, tmp_path):
    be = backend(tiny_causal_lm_dir)
    job_id = be.submit(examples(), str(tiny_causal_lm_dir), tmp_path, epoch=1)
    be.set_paused(job_id, True)
    be.cancel(job_id)
    final = be.wait(job_id, timeout=600)
    assert final.status == "cancelled" and final.done
    assert final.step < 20 and final.model == ""
    assert not (tmp_path / "ta-adapters" / "epoch-1").exists()


@pytest.mark.parametrize("bad, expected", [
    ([{"messages": [{"role": "user", "content": "only a question"}]}], "example 0"),
    ([{"text": "not a chat"}], "example 0"),
    ([], "no examples"),
    ([*examples(2), {"messages": [{"role": "user", "content": "q"},
                                  {"role": "assistant", "content": "  "}]}], "example 2"),
])
def test_bad_examples_fail_with_a_message(tiny_causal_lm_dir, tmp_path, bad, expected):
    be = backend(tiny_causal_lm_dir)
    job_id = be.submit(bad, str(tiny_causal_lm_dir), tmp_path, epoch=1)
    final = be.wait(job_id, timeout=600)
    assert final.status == "failed"
    assert expected in final.message and "Fix:" in final.message
    assert any(e.startswith("failed:") for e in final.events)


def test_a_missing_base_model_fails_the_job_not_the_caller(tiny_causal_lm_dir, tmp_path):
    be = backend(tiny_causal_lm_dir)
    job_id = be.submit(examples(2), str(tmp_path / "no-model"), tmp_path, epoch=1)
    final = be.wait(job_id, timeout=600)
    assert final.status == "failed" and "does not exist" in final.message


def test_unknown_job_polls_as_failed(tiny_causal_lm_dir):
    status = backend(tiny_causal_lm_dir).poll("local-e9-deadbeef")
    assert status.status == "failed" and "unknown" in status.message


def test_engine_runs_gpta_with_the_local_ta_and_local_lora(tiny_bert_dir, tiny_causal_lm_dir,
                                                          sentiment_csv, tmp_path):
    """The whole loop with both local backends built from the config: the TA is tuned after
    epoch 1 and epoch 2 asks the tuned TA."""
    from engine import events as ev
    from engine.config import build_config
    from engine.loop import Engine

    cfg = build_config("default", overrides={
        "seed": 3, "device": "cpu",
        "data": {"dataset": str(sentiment_csv), "train_size": 32, "val_size": 16, "test_size": 16},
        "student": {"model": str(tiny_bert_dir), "max_length": 32, "batch_size": 8,
                    "eval_batch_size": 32, "checkpoint_every": 4},
        "loop": {"epochs": 2, "k": 6, "l": 3, "window": 2},
        "ta": {"backend": "local", "model": str(tiny_causal_lm_dir), "max_new_tokens": 8},
        "finetune": {"backend": "local", "epochs": 1, "batch_size": 2},
    })
    seen: list[ev.Event] = []
    done = Engine(cfg, tmp_path, listeners=[seen.append]).run()
    assert done.status == "finished"
    changed = [e for e in seen if isinstance(e, ev.TAModelChanged)]
    assert [e.model for e in changed] == [f"{tiny_causal_lm_dir.name}+epoch-1"]
    steps = [e for e in seen if isinstance(e, ev.FinetuneUpdate) and e.message.startswith("step ")]
    assert steps and steps[-1].step == steps[-1].total_steps == 2  # 4 windows, batch 2
    assert all(e.accuracy is not None and 0.0 <= e.accuracy <= 1.0 for e in steps)
    epoch1 = next(r for r in done.summary["epochs"] if r["epoch"] == 1)
    assert epoch1["finetune_train_accuracy"] == steps[-1].accuracy
    assert (tmp_path / "ta-adapters" / "epoch-1" / "adapter_config.json").is_file()
    epoch2 = [e for e in seen if isinstance(e, ev.TAResponse) and e.epoch == 2]
    assert epoch2 and all(e.usage["total_tokens"] > 0 for e in epoch2)
    # Events are persisted and exported: no path of this machine in any of them.
    import json
    from dataclasses import asdict

    home = str(tmp_path.resolve())
    assert not [e for e in seen if home in json.dumps(asdict(e), default=str)]
    done_job = [e for e in seen if isinstance(e, ev.FinetuneUpdate) and e.status == "succeeded"]
    assert done_job[-1].model == "ta-adapters/epoch-1"


# ---- precision, cache and memory (#21.5) ------------------------------------------------------
def _fake_cuda(monkeypatch, native_bf16: bool):
    """Pretend a CUDA GPU is present; `native_bf16` is what it supports without emulation."""
    import contextlib

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device", lambda *_: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: native_bf16 or including_emulation)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_only_on_gpus_that_run_it_natively(monkeypatch, native):
    import torch

    from engine.finetune.local_lora import autocast_dtype
    from engine.ta.local import ta_dtype

    _fake_cuda(monkeypatch, native)
    want = torch.bfloat16 if native else torch.float32
    assert ta_dtype("cuda") == want and ta_dtype("cuda:0") == want
    assert autocast_dtype("cuda") == (torch.bfloat16 if native else None)  # never fp16
    assert ta_dtype("cpu") == torch.float32 and autocast_dtype("cpu") is None
    assert ta_dtype("cuda", "float32") == torch.float32  # an explicit choice wins


def test_train_step_builds_no_cache_and_autocasts(tiny_causal_lm_dir):
    import torch
    from peft import LoraConfig, get_peft_model

    from engine.finetune.local_lora import _train_step
    from engine.ta.local import load_causal_lm

    model, tok = load_causal_lm(str(tiny_causal_lm_dir))
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    seen: list = []
    layer = model.get_base_model().model.layers[0].self_attn.q_proj
    layer.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    calls: list = []
    forward = model.forward

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return forward(*args, **kwargs)

    model.forward = recording
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    batch = [([5, 6, 7, 8], [9, 10]), ([5, 6], [11])]
    loss32, acc32 = _train_step(model, opt, params, batch, tok.pad_token_id, "cpu")
    loss16, _ = _train_step(model, opt, params, batch, tok.pad_token_id, "cpu", torch.bfloat16)
    assert 0.0 <= acc32 <= 1.0 and acc32 * 3 == round(acc32 * 3)  # 3 answer tokens in the batch
    assert all(c["use_cache"] is False for c in calls) and len(calls) == 2
    assert seen == [torch.float32, torch.bfloat16]  # the second step ran under bf16 autocast
    assert abs(loss32 - loss16) < 0.5  # same data, one small step apart, bf16 rounding


def test_gradient_checkpointing_gives_the_same_losses(tiny_causal_lm_dir, tmp_path):
    plain, checkpointed = backend(tiny_causal_lm_dir, epochs=2), backend(tiny_causal_lm_dir, epochs=2)
    checkpointed.gradient_checkpointing = True
    losses = []
    for i, be in enumerate((plain, checkpointed)):
        job = be.submit(examples(), str(tiny_causal_lm_dir), tmp_path / str(i), epoch=1)
        assert be.wait(job, timeout=600).status == "succeeded"
        losses.append(be.losses(job))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-6)


def test_job_trains_on_the_open_tas_weights_and_gives_them_back(tiny_causal_lm_dir, tmp_path,
                                                               monkeypatch, finished):
    import engine.finetune.local_lora as lora_mod

    import weakref

    import engine.ta.local as local_mod

    ta = LocalTA(str(tiny_causal_lm_dir), max_new_tokens=6)
    monkeypatch.setattr(local_mod, "_LIVE", weakref.WeakSet([ta]))  # only this TA is open
    ta.use_model(finished[4].model)  # the TA answers with last epoch's adapter
    before = ta.propose(prompts.build_messages("Sys.", "Tweets."), n=2, temperature=1.0, seed=4).texts

    def no_second_copy(*_args, **_kwargs):
        raise AssertionError("the job loaded a second copy of the TA")

    monkeypatch.setattr(lora_mod, "load_causal_lm", no_second_copy)
    be = backend(tiny_causal_lm_dir, epochs=1)
    job = be.submit(examples(), str(tiny_causal_lm_dir), tmp_path, epoch=2)
    final = be.wait(job, timeout=600)
    assert final.status == "succeeded", final.message
    assert any("TA's own weights" in e for e in final.events)
    # the loan is over: the old adapter is back, nothing of the job's LoRA is left
    assert not ta.lent and ta.adapter is not None and ta.adapter.name == "epoch-1"
    after = ta.propose(prompts.build_messages("Sys.", "Tweets."), n=2, temperature=1.0, seed=4).texts
    assert after == before
    ta.use_model("")
    assert not any("lora" in name for name, _ in ta.model.named_modules())


def test_success_is_reported_only_after_the_borrowed_weights_are_back(tiny_causal_lm_dir,
                                                                      tmp_path, monkeypatch):
    """The engine loads the new adapter as soon as a poll says "succeeded": at that moment the
    TA must hold its weights again, without the job's LoRA layers (a race that failed the
    adapter load with "no attribute 'peft_config'")."""
    import weakref

    import engine.finetune.local_lora as lora_mod
    import engine.ta.local as local_mod

    ta = LocalTA(str(tiny_causal_lm_dir), max_new_tokens=6)
    monkeypatch.setattr(local_mod, "_LIVE", weakref.WeakSet([ta]))
    at_success = []
    note = lora_mod._Job.note

    def watching_note(job, event, **updates):
        if updates.get("status") == "succeeded":
            at_success.append((ta.lent, any("lora" in n for n, _ in ta.model.named_modules())))
        return note(job, event, **updates)

    monkeypatch.setattr(lora_mod._Job, "note", watching_note)
    be = backend(tiny_causal_lm_dir, epochs=1)
    final = be.wait(be.submit(examples(), str(tiny_causal_lm_dir), tmp_path, epoch=1), timeout=600)
    assert final.status == "succeeded", final.message
    assert at_success == [(False, False)]
    ta.use_model(final.model)  # what the engine does next
    assert ta.adapter is not None and ta.adapter.name == "epoch-1"


def test_cancel_returns_once_the_borrowed_weights_are_back(tiny_causal_lm_dir, tmp_path,
                                                           monkeypatch):
    """After a fine-tune timeout the engine cancels the job and its next epoch asks the TA at
    once: when cancel() returns, the job has ended and the TA holds its weights again, without
    the job's LoRA layers (else the request fails with "lent to a running fine-tune job")."""
    import threading
    import weakref

    import engine.finetune.local_lora as lora_mod
    import engine.ta.local as local_mod

    ta = LocalTA(str(tiny_causal_lm_dir), max_new_tokens=6)
    monkeypatch.setattr(local_mod, "_LIVE", weakref.WeakSet([ta]))
    be = backend(tiny_causal_lm_dir, epochs=1)
    in_step = threading.Event()
    step = lora_mod._train_step

    def step_until_cancelled(*args, **kwargs):  # the cancel arrives while a step runs
        in_step.set()
        (job,) = be._jobs.values()
        with job.cond:
            job.cond.wait_for(lambda: job.cancelled)
        return step(*args, **kwargs)

    monkeypatch.setattr(lora_mod, "_train_step", step_until_cancelled)
    job_id = be.submit(examples(), str(tiny_causal_lm_dir), tmp_path, epoch=1)
    assert in_step.wait(600)
    assert ta.lent
    be.cancel(job_id)
    assert not be._jobs[job_id].thread.is_alive()
    assert be.poll(job_id).status == "cancelled"
    assert not ta.lent and not any("lora" in n for n, _ in ta.model.named_modules())
    assert ta.propose([{"role": "user", "content": "Write a prefix."}], n=1, temperature=0.0,
                      seed=1).texts
