"""Fine-tune the TA with OpenAI fine-tuning jobs (supervised, chat format).

Dialogue gradients ({"messages": [system, user, assistant]}) are validated, written to
`workdir/finetune/epoch-<epoch>.jsonl`, uploaded with `purpose="fine-tune"` and trained with
`fine_tuning.jobs.create`. The engine polls at `poll_interval_s`, enforces the overall
timeout and cancels on stop; remote jobs survive our process, so a resumed run re-attaches.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import openai

from engine.config import FinetuneConfig
from engine.errors import GptaError, UsageError
from engine.finetune.base import FinetuneBackend, JobStatus
from engine.fsutil import write_bytes_atomic
from engine.ta.openai_ta import MalformedReply, OpenAIEndpoint, resolve_api_key

log = logging.getLogger("gpta.finetune.openai")

MIN_EXAMPLES = 10  # the fine-tuning API rejects smaller training files
ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = {"role", "content", "name", "weight"}


def validate_examples(examples: list[dict]) -> dict:
    """Check OpenAI chat fine-tuning format; return counts and a rough token estimate.

    Raises UsageError naming the first bad example, or when there are fewer than 10.
    """
    if not isinstance(examples, list):
        raise UsageError("fine-tune examples must be a list of {'messages': [...]} objects",
                         "pass the dialogue-gradient windows as a list")
    chars, longest = 0, 0
    for i, example in enumerate(examples):
        where = f"fine-tune example {i}"
        if not isinstance(example, dict) or not isinstance(example.get("messages"), list):
            raise UsageError(f"{where} has no 'messages' list",
                             "give every example the form "
                             "{'messages': [{'role': ..., 'content': ...}]}")
        messages = example["messages"]
        if not messages:
            raise UsageError(f"{where} has an empty 'messages' list",
                             "give it at least a user and an assistant message")
        size = 0
        for j, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise UsageError(f"{where}: message {j} is not an object",
                                 "write messages as {'role': ..., 'content': ...}")
            role, content = msg.get("role"), msg.get("content")
            if role not in ROLES:
                raise UsageError(f"{where}: message {j} has role {role!r}",
                                 f"use one of the roles {', '.join(ROLES)}")
            if not isinstance(content, str) or not content.strip():
                raise UsageError(f"{where}: message {j} ({role}) has no string content",
                                 "give every message a non-empty string 'content'")
            extra = set(msg) - MESSAGE_KEYS
            if extra:
                raise UsageError(f"{where}: message {j} has unsupported keys {sorted(extra)}",
                                 f"keep only {', '.join(sorted(MESSAGE_KEYS))}")
            size += len(content)
        if messages[-1]["role"] != "assistant":
            raise UsageError(f"{where} does not end with an assistant message",
                             "end every example with the assistant's answer (the next prefix)")
        if not any(m["role"] == "user" for m in messages):
            raise UsageError(f"{where} has no user message",
                             "put the history window in a user message")
        chars += size
        longest = max(longest, size)
    if len(examples) < MIN_EXAMPLES:
        raise UsageError(f"only {len(examples)} dialogue-gradient examples; OpenAI fine-tuning "
                         f"needs at least {MIN_EXAMPLES}",
                         "raise loop.k or lower loop.window so that more windows exist")
    return {"examples": len(examples), "est_tokens": -(-chars // 4),
            "max_example_tokens": -(-longest // 4)}


def write_jsonl_atomic(path: Path, examples: list[dict]) -> bytes:
    """Write one JSON object per line atomically (engine.fsutil); return the bytes."""
    data = "".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in examples).encode("utf-8")
    write_bytes_atomic(path, data)
    return data


def _need(obj: Any, *names: str) -> Any:
    """Raise MalformedReply unless `obj` has every attribute in `names` set."""
    if isinstance(obj, (str, bytes)) or obj is None:
        raise MalformedReply("not a JSON object")
    for name in names:
        if getattr(obj, name, None) in (None, ""):
            raise MalformedReply(f"no {name!r} field")
    return obj


def _check_job(job: Any) -> Any:
    _need(job, "id", "status")
    if job.status == "succeeded" and not getattr(job, "fine_tuned_model", None):
        raise MalformedReply("a succeeded job without 'fine_tuned_model'")
    return job


def _event_text(event: Any) -> str:
    message = " ".join(str(getattr(event, "message", "") or "").split())
    level = getattr(event, "level", "info")
    return message if level in (None, "", "info") else f"[{level}] {message}"


class OpenAIFinetune(FinetuneBackend):
    """Fine-tuning jobs on an OpenAI-compatible `/fine_tuning/jobs` API."""

    name = "openai"

    def __init__(self, cfg: FinetuneConfig, *, base_url: str = "", api_key: str = "",
                 api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60,
                 retries: int = 3, sleep: Callable[[float], None] = time.sleep,
                 on_retry: Callable[[int, float, Exception], None] | None = None):
        env_hint = api_key_env or "OPENAI_API_KEY"
        key = resolve_api_key(api_key, api_key_env, "no API key for OpenAI fine-tuning",
                              f"export {env_hint}=... or pass --finetune-backend local")
        self.cfg = cfg
        self.poll_interval_s = float(cfg.poll_interval_s)
        self.endpoint = OpenAIEndpoint(base_url=base_url, api_key=key, key_hint=f"check {env_hint}",
                                       timeout_s=timeout_s, retries=retries, sleep=sleep,
                                       on_retry=on_retry, what="OpenAI fine-tuning endpoint")
        self._seen: dict[str, set[str]] = {}  # job id -> event ids already returned
        self._metrics: dict[str, dict] = {}  # job id -> latest metrics event data

    def __repr__(self) -> str:
        return f"OpenAIFinetune(base_url={self.endpoint.shown_url!r}, suffix={self.cfg.suffix!r})"

    def submit(self, examples: list[dict], base_model: str, workdir: Path, epoch: int) -> str:
        """Validate, write `finetune/epoch-<epoch>.jsonl`, upload it and start a job."""
        if not base_model:
            raise UsageError("no base model to fine-tune", "set finetune.model or ta.model")
        stats = validate_examples(examples)
        path = Path(workdir) / "finetune" / f"epoch-{epoch}.jsonl"
        data = write_jsonl_atomic(path, examples)
        log.info("fine-tune epoch %d: %d examples, ~%d tokens, file %s", epoch,
                 stats["examples"], stats["est_tokens"], path)
        upload = self.endpoint.call(
            "upload of the training file",
            lambda c: c.files.create(file=(path.name, data, "application/jsonl"),
                                     purpose="fine-tune"),
            lambda r: _need(r, "id"))
        kwargs: dict[str, Any] = {
            "model": base_model, "training_file": upload.id,
            "method": {"type": "supervised",
                       "supervised": {"hyperparameters": {"n_epochs": self.cfg.epochs}}}}
        if self.cfg.suffix:
            kwargs["suffix"] = self.cfg.suffix
        job = self.endpoint.call(
            f"fine-tuning job creation for {base_model}",
            lambda c: c.fine_tuning.jobs.create(**kwargs), lambda r: _need(r, "id", "status"),
            not_found_fix="check finetune.model: it must be a model that supports fine-tuning",
            bad_request_fix="check finetune.model (it must support fine-tuning), finetune.suffix "
                            "and finetune.epochs")
        self._seen.setdefault(job.id, set())
        return str(job.id)

    def _new_events(self, client: openai.OpenAI, job_id: str) -> list[Any]:
        """Events not returned before, oldest first (the API lists newest first)."""
        seen = self._seen.get(job_id, set())
        fresh = []
        try:
            for event in client.fine_tuning.jobs.list_events(job_id, limit=50):
                event_id = getattr(event, "id", None)
                if not event_id:
                    raise MalformedReply("event without an id")
                if event_id in seen:
                    break
                fresh.append(event)
        except (AttributeError, TypeError):  # the client could not build a page from the body
            raise MalformedReply("not a list of events") from None
        return fresh[::-1]

    def poll(self, job_id: str) -> JobStatus:
        """Status, new events, progress from metrics events, and the model once succeeded."""
        job = self.endpoint.call(f"status of job {job_id}",
                                 lambda c: c.fine_tuning.jobs.retrieve(job_id), _check_job,
                                 not_found_fix="resume with the API key (organisation) "
                                               "that started the job")
        events = self.endpoint.call(f"events of job {job_id}",
                                    lambda c: self._new_events(c, job_id))
        seen = self._seen.setdefault(job_id, set())
        seen.update(e.id for e in events)
        for event in events:
            data = getattr(event, "data", None)
            is_metrics = getattr(event, "type", "") == "metrics"
            if is_metrics and isinstance(data, dict) and "step" in data:
                self._metrics[job_id] = data
        metrics = self._metrics.get(job_id, {})
        status = str(job.status)
        error = getattr(job, "error", None)
        message = ""
        if status == "failed":
            message = str(getattr(error, "message", "") or "") or "the fine-tuning job failed"
        finish = getattr(job, "estimated_finish", None)
        eta = None
        if status == "running" and isinstance(finish, (int, float)):
            eta = max(0.0, finish - time.time())
        tuned = str(getattr(job, "fine_tuned_model", "") or "") if status == "succeeded" else ""
        loss = metrics.get("train_loss")
        accuracy = metrics.get("train_mean_token_accuracy")
        return JobStatus(
            job_id=job_id, status=status,
            message=self.endpoint.redact(" ".join(message.split())),
            step=int(metrics.get("step") or 0), total_steps=int(metrics.get("total_steps") or 0),
            loss=float(loss) if isinstance(loss, (int, float)) else None,
            accuracy=float(accuracy) if isinstance(accuracy, (int, float)) else None,
            eta_s=eta, model=tuned,
            events=[self.endpoint.redact(_event_text(e)) for e in events])

    def cancel(self, job_id: str) -> None:
        """Best effort: a failure (e.g. the job already finished) is logged, not raised."""
        try:
            self.endpoint.call(f"cancel of job {job_id}",
                               lambda c: c.fine_tuning.jobs.cancel(job_id))
        except GptaError as err:
            log.warning("could not cancel fine-tuning job %s: %s", job_id, err)

    def can_attach(self, job_id: str) -> bool:
        return True

    def close(self) -> None:
        self.endpoint.close()
