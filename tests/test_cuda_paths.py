"""The CUDA paths, checked on the CPU (issue 21): capability checks are monkeypatched, an
out-of-memory error is a real torch.OutOfMemoryError raised from a patched step, models are
the tiny random ones of conftest.py. `make gpu-check` runs the same paths on a real GPU."""

from __future__ import annotations

import contextlib
import gc
import json
import weakref

import pytest
import torch

from engine import device as dev
from engine import events as ev
from engine.config import StudentConfig, build_config
from engine.errors import ConfigError, ModelError
from engine.oom import OutOfMemory, describe, find_oom
from engine.student.classification import ClassificationStudent
from test_engine import FakeJobs, Recorder, _fingerprint, run_engine, tiny_config
from test_student import make_data, make_student


def fake_cuda(monkeypatch, *, native_bf16: bool, emulated_bf16: bool = True) -> list[dict]:
    """A CUDA device whose bf16 support is native or only emulated; returns the calls made."""
    calls: list[dict] = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        calls.append({"including_emulation": including_emulation})
        return native_bf16 or (including_emulation and emulated_bf16)

    monkeypatch.setattr(dev.torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(dev.torch.cuda, "device", lambda _d: contextlib.nullcontext())
    return calls


# ---- 1. bf16 only where it is native ---------------------------------------------------
def test_older_gpu_with_emulated_bf16_gets_fp16(monkeypatch):
    calls = fake_cuda(monkeypatch, native_bf16=False, emulated_bf16=True)  # T4 / V100
    assert dev.amp_dtype("cuda:1") == torch.float16
    assert calls == [{"including_emulation": False}]


def test_gpu_with_native_bf16_gets_bf16(monkeypatch):
    fake_cuda(monkeypatch, native_bf16=True)  # A100 / H100
    assert dev.amp_dtype("cuda") == torch.bfloat16
    assert dev.amp_dtype("cuda", enabled=False) is None
    assert dev.amp_dtype("cpu") is None and dev.amp_dtype("mps") is None


# ---- 2. resume across precisions -------------------------------------------------------
def test_fp16_run_resumes_a_checkpoint_written_without_a_scaler(tiny_bert_dir, tmp_path,
                                                                monkeypatch):
    """A checkpoint from the CPU (or a bf16 GPU, or amp off) has no scaler.pt; an fp16 run
    resumes it with a fresh scaler. The scaler stands in for CUDA's with torch's CPU one."""
    data = make_data(90)
    plain = make_student(tiny_bert_dir, data)
    steps = plain.train_epoch("p:", 1)
    next(steps)
    plain.save(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt" / "scaler.pt").exists()

    monkeypatch.setattr(ClassificationStudent, "_new_scaler",
                        lambda self: torch.amp.GradScaler("cpu"))
    scaled = make_student(tiny_bert_dir, data)
    scaled.scaler.scale(torch.ones(()))
    scaled.scaler.update(new_scale=8.0)  # a scaler state the checkpoint must not inherit
    scaled.load(tmp_path / "ckpt")
    assert scaled.scaler.get_scale() == 65536.0  # fresh
    losses = [r.loss for r in scaled.train_epoch("p:", 1, start_step=1)]  # the scaled path
    assert len(losses) == scaled.steps_per_epoch() - 1 and all(map(torch.isfinite, map(torch.tensor, losses)))
    scaled.save(tmp_path / "scaled")
    assert (tmp_path / "scaled" / "scaler.pt").is_file()

    monkeypatch.undo()
    unscaled = make_student(tiny_bert_dir, data)  # back on a run without fp16: file ignored
    unscaled.load(tmp_path / "scaled")
    assert unscaled.scaler is None
    (tmp_path / "scaled" / "optimizer.pt").unlink()
    with pytest.raises(ModelError, match="lacks optimizer.pt"):
        unscaled.load(tmp_path / "scaled")


# ---- 4. scoring batch size -------------------------------------------------------------
def test_eval_batch_size_auto_is_larger_on_cuda(tiny_bert_dir):
    assert dev.eval_batch_size(0, "cuda:1") == 256 and dev.eval_batch_size(0, "cuda") == 256
    assert dev.eval_batch_size(0, "cpu") == 64 and dev.eval_batch_size(0, "mps") == 64
    assert dev.eval_batch_size(32, "cuda") == 32
    assert StudentConfig().eval_batch_size == 0
    student = make_student(tiny_bert_dir, make_data(60), eval_batch_size=0)
    assert student.cfg.eval_batch_size == 64
    with pytest.raises(ConfigError, match="student.eval_batch_size"):
        build_config(overrides={"student": {"eval_batch_size": -1}})


# ---- 9. a GPU the torch build cannot use -----------------------------------------------
@pytest.mark.parametrize("cuda_build, says", [(None, "CPU-only build"), ("12.8", "driver")])
def test_nvidia_smi_without_cuda_says_so(monkeypatch, cuda_build, says):
    monkeypatch.setattr(dev.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(dev.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev.torch.version, "cuda", cuda_build)
    reason = dev.cuda_unavailable_reason()
    assert reason is not None and says in reason and "\n" not in reason
    assert "running on the CPU" in reason and "Fix:" in reason
    monkeypatch.setattr(dev.shutil, "which", lambda name: None)
    assert dev.cuda_unavailable_reason() is None


def test_engine_warns_at_start_and_names_its_device(tiny_bert_dir, sentiment_csv, tmp_path,
                                                    monkeypatch):
    monkeypatch.setattr(dev.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(dev.torch.cuda, "is_available", lambda: False)
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, mode="baseline", device="auto",
                      loop={"epochs": 1, "k": 6, "l": 3, "window": 2})
    engine, rec = run_engine(cfg, tmp_path)
    assert engine.run().status == "finished"
    warnings = [e.message for e in rec.of(ev.Notice) if "nvidia-smi" in e.message]
    assert len(warnings) == 1 and rec.of(ev.RunStarted)[0].device == "cpu"


def test_device_label_names_gpu_and_precision(monkeypatch):
    fake_cuda(monkeypatch, native_bf16=False)
    monkeypatch.setattr(dev.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dev.torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(dev.torch.cuda, "get_device_name", lambda i: f"Tesla T4 #{i}")
    assert dev.device_label("cuda", amp=True) == "cuda:0 (Tesla T4 #0, float16 autocast)"
    assert dev.device_label("cuda:1", amp=False) == "cuda:1 (Tesla T4 #1, fp32)"
    assert dev.device_label("cpu", amp=True) == "cpu"


# ---- 6. out of GPU memory --------------------------------------------------------------
def oom() -> BaseException:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; "
                                  "79.10 GiB total capacity)")


def raise_at_step(monkeypatch, step: int, seen: list | None = None) -> None:
    """Make the student's optimizer step `step` (1-based, over the run) run out of memory."""
    original = ClassificationStudent._optimizer_step
    count = {"n": 0}

    def step_or_oom(self, loss):
        count["n"] += 1
        if count["n"] == step:
            if seen is not None:
                seen.append(weakref.ref(self.model))
            raise oom()
        return original(self, loss)

    monkeypatch.setattr(ClassificationStudent, "_optimizer_step", step_or_oom)


def test_oom_in_training_is_one_line_naming_batch_size_and_resumes(tiny_bert_dir, sentiment_csv,
                                                                   tmp_path, monkeypatch):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, name="big")
    straight, want = run_engine(cfg, tmp_path / "a", jobs=FakeJobs(polls=1))
    straight.run()

    raise_at_step(monkeypatch, 5)  # checkpoint_every 2: the last checkpoint holds step 4
    first, part1 = run_engine(cfg, tmp_path / "b", jobs=FakeJobs(polls=1))
    with pytest.raises(OutOfMemory) as info:
        first.run()
    error = info.value
    text = str(error)
    assert "\n" not in text and "student.batch_size (now 8)" in text
    assert text.startswith("out of host memory on cpu while training the student")
    assert "gpta resume big" in text
    assert error.__context__ is None and error.__cause__ is None  # no frames kept alive
    finished = part1.of(ev.RunFinished)[-1]
    assert finished.status == "failed" and finished.reason == text
    state = part1.of(ev.CheckpointSaved)[-1].state
    assert state["step"] == 4 and (tmp_path / "b" / state["checkpoint"]).is_dir()

    monkeypatch.undo()
    second, part2 = run_engine(cfg, tmp_path / "b", resume=json.loads(json.dumps(state)),
                               jobs=FakeJobs(polls=1))
    assert second.run().status == "finished"
    merged = Recorder()
    merged.events = part1.events + part2.events
    got, expected = _fingerprint(merged), _fingerprint(want)
    assert got["losses"] == expected["losses"] and got["test"] == expected["test"]


def test_oom_while_scoring_names_eval_batch_size(tiny_bert_dir, sentiment_csv, tmp_path,
                                                 monkeypatch):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, name="wide")

    def scoring_oom(self, prefixes, split="validation"):
        raise oom()

    monkeypatch.setattr(ClassificationStudent, "score_prefixes", scoring_oom)
    engine, rec = run_engine(cfg, tmp_path)
    with pytest.raises(OutOfMemory, match=r"scoring prefixes \(32 rows per batch\).*"
                                          r"gpta resume wide --eval-batch-size 8"):
        engine.run()


def test_oom_in_teaching_assistant_code_names_a_smaller_ta(tiny_bert_dir, sentiment_csv):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv)
    namespace: dict = {"torch": torch}
    exec(compile("def generate():\n    raise torch.OutOfMemoryError('CUDA out of memory')\n",
                 "/site/engine/ta/local.py", "exec"), namespace)
    try:
        try:
            namespace["generate"]()
        except torch.OutOfMemoryError:
            raise ModelError("cannot load TA model 'x'", "check it") from None  # wrapped
    except ModelError as wrapped:
        found = find_oom(wrapped)
        assert isinstance(found, torch.OutOfMemoryError)
        error = describe(found, "collecting", cfg, "cuda:1")
    assert str(error).startswith("out of GPU memory on cuda:1 while running the teaching assistant")
    assert "smaller TA (ta.model)" in str(error) and "finetune.batch_size" in str(error)
    assert find_oom(ValueError("no")) is None


def test_gpta_run_prints_one_line_and_the_session_resumes(tiny_bert_dir, sentiment_csv, tmp_path,
                                                          monkeypatch, capsys):
    from gpta_tui.cli import main
    from sessions.store import SessionStore

    toml = tmp_path / "run.toml"
    toml.write_text(f'''seed = 3
device = "cpu"
[data]
dataset = "{sentiment_csv}"
train_size = 48
val_size = 24
test_size = 24
[student]
model = "{tiny_bert_dir}"
max_length = 32
batch_size = 8
checkpoint_every = 2
[ta]
backend = "scripted"
[loop]
epochs = 1
k = 6
l = 3
window = 2
''')
    home = tmp_path / "home"
    raise_at_step(monkeypatch, 3)
    code = main(["--home", str(home), "run", "--config", str(toml), "--name", "oom"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("gpta:")]
    assert code == 1 and lines == [f"gpta: error: {lines[0][len('gpta: error: '):]}"]
    assert "out of host memory" in lines[0] and "Traceback" not in err
    assert [(s.name, s.status) for s in SessionStore(home).list()] == [("oom", "failed")]

    monkeypatch.undo()
    assert main(["--home", str(home), "resume", "oom", "--eval-batch-size", "16"]) == 0
    handle = SessionStore(home).open("oom")
    try:
        assert handle.config.student.eval_batch_size == 16 and handle.status == "finished"
    finally:
        handle.close()


def test_tui_controller_keeps_no_frames_of_an_oom(tiny_bert_dir, sentiment_csv, tmp_path,
                                                  monkeypatch):
    """After the failure nothing holds the student's model: the next run has the memory."""
    from gpta_tui.run_control import RunController

    cfg = tiny_config(tiny_bert_dir, sentiment_csv, name="leak")
    seen: list = []
    raise_at_step(monkeypatch, 3, seen)
    controller = RunController(tmp_path / "home", name="leak", config=cfg)
    controller.start()
    assert controller.join(timeout=300)
    assert isinstance(controller.error, OutOfMemory) and controller.error.__traceback__ is None
    controller.drain()
    assert controller.engine is None and controller.state.status == "failed"
    gc.collect()
    assert seen and seen[0]() is None


# ---- 8. adapters on the run's device ---------------------------------------------------
def test_adapter_loads_on_the_run_device_not_peft_default(tiny_causal_lm_dir, tmp_path,
                                                          monkeypatch):
    """peft stages an adapter on its own guess (cuda:0 on a GPU box) unless told the device.
    Here its guess is a device this machine lacks: the adapter must still load on the CPU."""
    import peft.peft_model
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from engine.ta.local import LocalTA

    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_causal_lm_dir),
                          LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(tmp_path / "adapter")
    monkeypatch.setattr(peft.peft_model, "infer_device", lambda: "cuda:1")
    ta = LocalTA(str(tiny_causal_lm_dir), device="cpu", max_new_tokens=4)
    try:
        ta.use_model(str(tmp_path / "adapter"))
        assert ta.adapter == tmp_path / "adapter"
        assert {p.device.type for p in ta.model.parameters()} == {"cpu"}
    finally:
        ta.close()
