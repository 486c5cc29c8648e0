"""Synthetic engine event sequences for the session tests (no engine, no models).

Imported by the tests_sessions_* modules; it holds no tests itself.
"""

from __future__ import annotations

from engine import events as ev
from engine.config import build_config
from engine.state import RunState

PREFIXES = ["classify the tweet", "decide the mood", "read carefully and label",
            "what is the opinion", "sentiment of this text", "label the feeling"]


def small_config(name: str = "", **over):
    overrides = {"name": name, "data": {"dataset": "twitter-sentiment"},
                 "loop": {"epochs": 2, "k": 4, "l": 2, "window": 2}, **over}
    return build_config("default", overrides=overrides)


class SyntheticRun:
    """Emits a plausible run: training with checkpoints, validation, collection with TA
    calls, windows, a fine-tune job, the next epoch, the end. `stop_after(kind, n)` ends the
    sequence early (as a crash would), so tests can resume from the last checkpoint."""

    def __init__(self, config, steps_per_epoch: int = 6, checkpoint_every: int = 2):
        self.cfg = config
        self.steps = steps_per_epoch
        self.every = checkpoint_every
        self.state = RunState()

    def checkpoint(self):
        st = self.state
        return ev.CheckpointSaved(epoch=st.epoch, phase=st.phase, step=st.step, state=st.to_dict(),
                                  path=f"checkpoints/e{st.epoch}-s{st.step}")

    def events(self, resume: dict | None = None):
        """All events of the run, from the start or from a resume state."""
        st = self.state = RunState.from_dict(resume) if resume else RunState()
        yield ev.RunStarted(name=self.cfg.name, mode=self.cfg.mode, config=self.cfg.to_dict(),
                            resumed=resume is not None, metric="accuracy",
                            label_names=["negative", "neutral", "positive"])
        yield ev.StatusChanged(status="running")
        if st.phase == "setup":
            st.description = "Tweets labelled by sentiment."
            st.training_prefix = PREFIXES[0]
            st.phase = "training"
            yield self.checkpoint()
        while st.epoch <= self.cfg.loop.epochs:
            if st.phase == "training":
                yield ev.PhaseChanged(epoch=st.epoch, phase="training", total=self.steps)
                while st.epoch_step < self.steps:
                    st.step += 1
                    st.epoch_step += 1
                    yield ev.TrainStep(epoch=st.epoch, step=st.step, epoch_step=st.epoch_step,
                                       epoch_steps=self.steps, loss=1.0 / st.step, lr=1e-3)
                    if st.epoch_step % self.every == 0 and st.epoch_step < self.steps:
                        yield self.checkpoint()
                st.phase = "validating"
                yield self.checkpoint()
            if st.phase == "validating":
                score = 0.5 + 0.1 * st.epoch
                yield ev.ValidationResult(epoch=st.epoch, prefix=st.training_prefix,
                                          metrics={"accuracy": score, "macro_f1": score - 0.1},
                                          best_epoch=st.epoch, improved=True)
                st.history = [[st.training_prefix, score]]
                st.phase = "collecting"
                yield self.checkpoint()
            if st.phase == "collecting":
                yield ev.PhaseChanged(epoch=st.epoch, phase="collecting", total=self.cfg.loop.k)
                while len(st.history) < self.cfg.loop.k:
                    st.request_id += 1
                    rid = st.request_id
                    yield ev.TARequest(request_id=rid, epoch=st.epoch, backend="scripted",
                                       model="scripted-ta",
                                       messages=[{"role": "user", "content": f"request {rid}"}],
                                       params={"n": 2}, description_version=st.description_version)
                    new = [f"{PREFIXES[(rid + j) % len(PREFIXES)]} #{rid}.{j}" for j in range(2)]
                    yield ev.TAResponse(request_id=rid, epoch=st.epoch, texts=["\n".join(new)],
                                        prefixes=new, rejected=[], latency_s=0.01,
                                        usage={"prompt_tokens": 10, "completion_tokens": 5,
                                               "total_tokens": 15})
                    st.ta_tokens += 15
                    for j, p in enumerate(new):
                        score = 0.4 + ((rid * 7 + j * 3) % 10) / 20
                        st.history.append([p, score])
                        yield ev.PrefixScored(epoch=st.epoch, prefix=p, score=score,
                                              metrics={"accuracy": score}, reused=False,
                                              request_id=rid)
                    yield ev.HistoryUpdated(epoch=st.epoch, history=sorted(st.history, key=lambda x: x[1]),
                                            training_prefix=st.training_prefix)
                    yield self.checkpoint()
                yield ev.PrefixFindingAccuracy(epoch=st.epoch, accuracy=0.5, generated=4, better=2)
                best = max(st.history, key=lambda x: x[1])
                if not st.best or best[1] > st.best["score"]:
                    st.best = {"epoch": st.epoch, "score": best[1], "prefix": best[0],
                               "metrics": {"accuracy": best[1]}, "path": "checkpoints/best"}
                st.phase = "windows"
                yield self.checkpoint()
            if st.phase == "windows":
                pairs = sorted(st.history, key=lambda x: x[1])
                windows = [{"messages": [{"role": "user", "content": str(pairs[i:i + 2])},
                                         {"role": "assistant", "content": pairs[i + 2][0]}]}
                           for i in range(len(pairs) - 2)]
                yield ev.WindowsBuilt(epoch=st.epoch, windows=windows,
                                      path=f"windows/epoch-{st.epoch}.jsonl")
                st.phase = "finetuning"
                yield self.checkpoint()
            if st.phase == "finetuning":
                job = f"job-{st.epoch}"
                if not st.job:  # like the engine: a resumed run re-attaches to its job
                    yield ev.FinetuneUpdate(epoch=st.epoch, backend="fake", job_id=job,
                                            status="submitted")
                    st.job = {"job_id": job, "epoch": st.epoch}
                    yield self.checkpoint()
                yield ev.FinetuneUpdate(epoch=st.epoch, backend="fake", job_id=job, status="running",
                                        step=1, total_steps=2)
                yield ev.FinetuneUpdate(epoch=st.epoch, backend="fake", job_id=job, status="succeeded",
                                        model=f"tuned-{job}")
                yield ev.TAModelChanged(epoch=st.epoch, model=f"tuned-{job}", reason="job succeeded")
                st.job = None
                st.ta_model = f"tuned-{job}"
                st.phase = "next"
                yield self.checkpoint()
            if st.phase == "next":
                st.training_prefix = st.best["prefix"]
                st.history = []
                st.epoch += 1
                st.epoch_step = 0
                st.phase = "training"
                yield self.checkpoint()
        st.epoch = self.cfg.loop.epochs
        st.phase = "done"
        yield self.checkpoint()
        yield ev.StatusChanged(status="finished")
        yield ev.RunFinished(status="finished", best_epoch=st.best["epoch"],
                             best_prefix=st.best["prefix"], val_metrics=st.best["metrics"],
                             test_metrics={"accuracy": 0.7, "macro_f1": 0.65},
                             test_metrics_no_prefix={"accuracy": 0.6, "macro_f1": 0.55},
                             summary={"steps": st.step})


def feed(handle, events) -> list:
    out = []
    for event in events:
        handle.listener(event)
        out.append(event)
    return out


def kill_hard(child) -> None:
    """SIGKILL a child process started with stdout/stderr pipes, reap it, close the pipes."""
    import signal

    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    child.stderr.close()
