"""A real HTTP server on 127.0.0.1 that speaks enough of the OpenAI API for the `openai` client.

Endpoints: POST /v1/chat/completions, POST /v1/files (multipart), POST /v1/fine_tuning/jobs,
GET /v1/fine_tuning/jobs/{id}, GET /v1/fine_tuning/jobs/{id}/events, POST
/v1/fine_tuning/jobs/{id}/cancel, GET /v1/models.

- Every request is recorded (`.requests`): method, path, query, headers without
  `authorization`, the JSON body, multipart files and form fields.
- Requests need `Authorization: Bearer <api_key>`; otherwise 401, with a message that echoes
  the key that was sent (some proxies do), so tests can prove the client never repeats it.
- `.add_fault(...)` queues a fault for the next matching requests: an HTTP status (with
  `retry-after` / `retry-after-ms` headers), a raw body (malformed JSON, missing fields), a
  delay longer than the client's timeout.
- Chat replies come from `.set_chat_replies([...])`, else from a default function that
  returns `{"prefixes": [...]}` JSON, deterministic in the request.
- A fine-tuning job advances validating_files -> queued -> running -> succeeded, one step
  per retrieve after the first; `.set_job_behaviour("fail" | "never")` changes that.

Tests get a started server from the `fake_openai` fixture (tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit


DEFAULT_KEY = "sk-fake-7f3c9a1e5b2d4f60a8c1e9b7d3f5a2c4"
BASE_MODELS = ("gpt-4o-mini-2024-07-18", "gpt-4o-mini", "gpt-4.1-nano")
JOB_BEHAVIOURS = ("succeed", "fail", "never")


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the query string, e.g. "/v1/chat/completions"
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; `authorization` removed
    body: Any = None  # decoded JSON body, if any
    raw: bytes = b""
    files: dict[str, bytes] = field(default_factory=dict)  # multipart field -> bytes
    filenames: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    path: str = ""  # regex searched in the request path; "" matches every path
    method: str = ""  # "" matches every method
    status: int | None = None  # None: answer normally (after delay_s)
    body: bytes | None = None  # raw body; None: an OpenAI error object (status >= 400)
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    times: int = 1

    def matches(self, method: str, path: str) -> bool:
        return (not self.method or self.method.upper() == method) and (
            not self.path or re.search(self.path, path) is not None)


@dataclass
class FakeJob:
    id: str
    n: int
    model: str
    training_file: str
    suffix: str | None
    n_epochs: int
    method: dict | None
    behaviour: str
    fail_message: str
    created_at: int
    status: str = "validating_files"
    events: list[dict] = field(default_factory=list)  # oldest first
    retrieves: int = 0
    step: int = 0
    total_steps: int = 1
    fine_tuned_model: str | None = None
    error: dict | None = None
    finished_at: int | None = None

    def to_json(self) -> dict:
        return {
            "id": self.id, "object": "fine_tuning.job", "model": self.model,
            "created_at": self.created_at, "finished_at": self.finished_at,
            "fine_tuned_model": self.fine_tuned_model, "organization_id": "org-fake",
            "result_files": [], "status": self.status, "validation_file": None,
            "training_file": self.training_file, "seed": 42, "suffix": self.suffix,
            "hyperparameters": {"n_epochs": self.n_epochs, "batch_size": 1,
                                "learning_rate_multiplier": 1.0},
            "method": self.method, "trained_tokens": None if self.status != "succeeded" else 1000,
            "error": self.error,
            "estimated_finish": self.created_at + 600 if self.status == "running" else None,
        }


class OpenAIHTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None,
                 err_type: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.type, self.param = (
            status, message, code, err_type, param)


def default_chat_reply(body: dict, choice: int) -> str:
    """`{"prefixes": [...]}` with as many prefixes as the last user message asks for (else 3)."""
    messages = body.get("messages") or []
    user = next((m.get("content") for m in reversed(messages)
                 if isinstance(m, dict) and m.get("role") == "user"), "") or ""
    if not isinstance(user, str):
        user = json.dumps(user)
    match = re.search(r"\b(\d{1,2})\b[^.\n]{0,40}?prefix", user, flags=re.IGNORECASE)
    count = int(match.group(1)) if match else 3
    digest = hashlib.sha256(json.dumps([messages, choice], sort_keys=True).encode()).hexdigest()
    openers = ["Decide", "Classify", "Judge", "Tell", "Label"]
    objects = ["the sentiment of this tweet", "how the writer feels", "the mood of this post",
               "whether this text is positive, negative or neutral"]
    prefixes = []
    for i in range(count):
        at = 4 * i % 60
        a, b = int(digest[at: at + 2], 16), int(digest[at + 2: at + 4], 16)
        prefixes.append(f"{openers[a % len(openers)]} {objects[b % len(objects)]} "
                        f"(variant {digest[i % 56: i % 56 + 6]}-{i}):")
    return json.dumps({"prefixes": prefixes})


def _error_body(status: int, message: str, code: str | None, err_type: str,
                param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": err_type, "param": param,
                                 "code": code}}).encode()


_DEFAULT_ERRORS = {
    400: ("Bad request.", "invalid_request_error", None),
    401: ("Incorrect API key provided: {key}.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to use this endpoint.", "invalid_request_error", "forbidden"),
    404: ("Not found.", "invalid_request_error", "not_found"),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


class FakeOpenAI:
    """The server plus its scripting and inspection API (see the module docstring)."""

    def __init__(self, api_key: str = DEFAULT_KEY):
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self.files: dict[str, bytes] = {}  # file id -> uploaded bytes
        self.jobs: dict[str, FakeJob] = {}
        self.handler_errors: list[str] = []  # server bugs (not injected faults)
        self.chat_default: Callable[[dict, int], str] = default_chat_reply
        self._faults: list[Fault] = []
        self._chat_replies: deque[str | None] = deque()
        self._job_behaviour = "succeed"
        self._fail_message = ("Fine-tuning failed: the training file caused an internal error. "
                              "Retry the job.")
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------
    def start(self) -> "FakeOpenAI":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name="fake-openai")
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def port(self) -> int:
        assert self._server is not None, "call start() first"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ---- scripting ------------------------------------------------------------------
    def add_fault(self, status: int | None = None, *, path: str = "", method: str = "",
                  retry_after: float | str | None = None, retry_after_ms: float | None = None,
                  body: bytes | str | dict | None = None, content_type: str = "application/json",
                  delay_s: float = 0.0, times: int = 1) -> Fault:
        """Queue a fault for the next `times` requests whose path matches the regex `path`.

        `status` alone gives an OpenAI-style error (e.g. 401, 429, 500, 503); `body` sends
        that body instead (status 200 unless given): malformed JSON, missing fields, ...;
        `delay_s` waits before answering (longer than the client timeout -> a timeout).
        """
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        if status is None and body is not None:
            status = 200
        fault = Fault(path=path, method=method, status=status, body=body,
                      content_type=content_type, headers=headers, delay_s=delay_s, times=times)
        with self._lock:
            self._faults.append(fault)
        return fault

    def set_chat_replies(self, replies: list[str | None]) -> None:
        """Contents for the next chat choices, one per choice; None sends null content."""
        with self._lock:
            self._chat_replies = deque(replies)

    def set_job_behaviour(self, behaviour: str, job_id: str | None = None,
                          message: str | None = None) -> None:
        """"succeed" | "fail" (ends failed with `message`) | "never" (stays running), for
        `job_id`, or for every job created from now on."""
        if behaviour not in JOB_BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {JOB_BEHAVIOURS}")
        with self._lock:
            if job_id is None:
                self._job_behaviour = behaviour
                if message:
                    self._fail_message = message
            else:
                job = self.jobs[job_id]
                job.behaviour = behaviour
                if message:
                    job.fail_message = message

    # ---- inspection -----------------------------------------------------------------
    def requests_to(self, path: str, method: str = "") -> list[RecordedRequest]:
        """Recorded requests whose path matches the regex `path` (and `method`, if given)."""
        with self._lock:
            return [r for r in self.requests if re.search(path, r.path)
                    and (not method or r.method == method.upper())]

    # ---- request handling (called from server threads) -----------------------------
    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _new_id(self, prefix: str) -> tuple[str, int]:
        n = next(self._ids)
        return f"{prefix}-{n:06d}", n

    def handle(self, req: RecordedRequest, auth: str | None) -> tuple[int, dict, bytes, str]:
        """Answer one request: (status, headers, body, content type)."""
        with self._lock:
            self.requests.append(req)
        fault = self._take_fault(req.method, req.path)
        if fault is not None:
            if fault.delay_s and self._closing.wait(fault.delay_s):
                raise ConnectionAbortedError("server closing")
            if fault.status is not None:
                if fault.body is not None:
                    return fault.status, fault.headers, fault.body, fault.content_type
                message, err_type, code = _DEFAULT_ERRORS.get(
                    fault.status, ("Injected error.", "server_error", None))
                message = message.format(key=_bearer(auth))
                return (fault.status, fault.headers,
                        _error_body(fault.status, message, code, err_type), "application/json")
        if auth != f"Bearer {self.api_key}":
            message = _DEFAULT_ERRORS[401][0].format(key=_bearer(auth))
            return 401, {}, _error_body(401, message, "invalid_api_key",
                                        "invalid_request_error"), "application/json"
        try:
            payload = self._route(req)
        except OpenAIHTTPError as err:
            return err.status, {}, _error_body(err.status, err.message, err.code, err.type,
                                               err.param), "application/json"
        return 200, {}, json.dumps(payload).encode(), "application/json"

    def _route(self, req: RecordedRequest) -> dict:
        m, p = req.method, req.path
        if m == "POST" and p == "/v1/chat/completions":
            return self._chat(req.body)
        if m == "POST" and p == "/v1/files":
            return self._upload(req)
        if m == "GET" and p == "/v1/models":
            return self._models()
        if m == "POST" and p == "/v1/fine_tuning/jobs":
            return self._create_job(req.body)
        match = re.fullmatch(r"/v1/fine_tuning/jobs/([^/]+)(/events|/cancel)?", p)
        if match:
            job = self.jobs.get(match.group(1))
            if job is None:
                raise OpenAIHTTPError(404, f"Could not find fine-tune job: {match.group(1)}",
                                      "fine_tune_job_not_found")
            action = match.group(2)
            if m == "GET" and action is None:
                return self._retrieve(job)
            if m == "GET" and action == "/events":
                return self._events(job, req.query)
            if m == "POST" and action == "/cancel":
                return self._cancel(job)
        raise OpenAIHTTPError(404, f"Invalid URL ({m} {p})", "unknown_url")

    def _chat(self, body: Any) -> dict:
        if not isinstance(body, dict) or not body.get("model") or not isinstance(
                body.get("messages"), list) or not body["messages"]:
            raise OpenAIHTTPError(400, "'model' and a non-empty 'messages' list are required",
                                  "invalid_request", param="messages")
        model = body["model"]
        with self._lock:
            known_ft = any(j.fine_tuned_model == model for j in self.jobs.values())
        if model.startswith("ft:") and not known_ft:
            raise OpenAIHTTPError(404, f"The model `{model}` does not exist or you do not "
                                       "have access to it.", "model_not_found")
        n = int(body.get("n") or 1)
        choices = []
        for i in range(n):
            with self._lock:
                scripted = bool(self._chat_replies)
                content = self._chat_replies.popleft() if scripted else None
            if not scripted:
                content = self.chat_default(body, i)
            choices.append({"index": i, "finish_reason": "stop", "logprobs": None,
                            "message": {"role": "assistant", "content": content,
                                        "refusal": None}})
        prompt_chars = sum(len(str(msg.get("content") or "")) for msg in body["messages"])
        completion_chars = sum(len(c["message"]["content"] or "") for c in choices)
        prompt_tokens, completion_tokens = max(1, prompt_chars // 4), completion_chars // 4
        chat_id, _ = self._new_id("chatcmpl")
        return {"id": chat_id, "object": "chat.completion", "created": int(time.time()),
                "model": model, "system_fingerprint": "fp_fake", "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    def _upload(self, req: RecordedRequest) -> dict:
        if "file" not in req.files or req.form.get("purpose") != "fine-tune":
            raise OpenAIHTTPError(400, "a 'file' part and purpose='fine-tune' are required",
                                  "invalid_request", param="file")
        file_id, _ = self._new_id("file")
        data = req.files["file"]
        with self._lock:
            self.files[file_id] = data
        return {"id": file_id, "object": "file", "bytes": len(data),
                "created_at": int(time.time()), "filename": req.filenames.get("file", "upload"),
                "purpose": "fine-tune", "status": "processed", "status_details": None}

    def _models(self) -> dict:
        with self._lock:
            tuned = [j.fine_tuned_model for j in self.jobs.values() if j.fine_tuned_model]
        return {"object": "list", "data": [
            {"id": mid, "object": "model", "created": 1700000000, "owned_by": "fake"}
            for mid in [*BASE_MODELS, *tuned]]}

    def _create_job(self, body: Any) -> dict:
        if not isinstance(body, dict) or not body.get("model") or not body.get("training_file"):
            raise OpenAIHTTPError(400, "'model' and 'training_file' are required",
                                  "invalid_request", param="training_file")
        with self._lock:
            data = self.files.get(body["training_file"])
            if data is None:
                raise OpenAIHTTPError(400, f"File {body['training_file']} not found",
                                      "invalid_file", param="training_file")
            method = body.get("method")
            n_epochs = 1
            if isinstance(method, dict):
                hp = (method.get(method.get("type", ""), {}) or {}).get("hyperparameters", {})
                n_epochs = int(hp.get("n_epochs", 1) or 1)
            job_id, n = self._new_id("ftjob")
            job = FakeJob(id=job_id, n=n, model=body["model"],
                          training_file=body["training_file"], suffix=body.get("suffix"),
                          n_epochs=n_epochs, method=method, behaviour=self._job_behaviour,
                          fail_message=self._fail_message, created_at=int(time.time()),
                          total_steps=max(1, data.count(b"\n")) * n_epochs)
            self._event(job, f"Validating training file: {job.training_file}")
            self.jobs[job_id] = job
            return job.to_json()

    def _event(self, job: FakeJob, message: str, level: str = "info", data: dict | None = None,
               kind: str = "message") -> None:
        event_id, _ = self._new_id("ftevent")
        job.events.append({"id": event_id, "object": "fine_tuning.job.event",
                           "created_at": int(time.time()), "level": level,
                           "message": message, "type": kind, "data": data or {}})

    def _metrics(self, job: FakeJob, step: int) -> None:
        job.step = step
        loss = round(2.0 / (1 + step), 4)
        accuracy = round(step / (step + 1), 4)  # as OpenAI's metrics events: train_mean_token_accuracy
        self._event(job, f"Step {step}/{job.total_steps}: training loss={loss}", kind="metrics",
                    data={"step": step, "total_steps": job.total_steps, "train_loss": loss,
                          "train_mean_token_accuracy": accuracy})

    def _advance(self, job: FakeJob) -> None:
        if job.status == "validating_files":
            job.status = "queued"
            self._event(job, "Files validated, moving job to queued state")
        elif job.status == "queued":
            job.status = "running"
            self._event(job, "Fine-tuning job started")
            self._metrics(job, max(1, job.total_steps // 2))
        elif job.status == "running":
            if job.behaviour == "never":
                self._metrics(job, min(job.step + 1, max(1, job.total_steps - 1)))
            elif job.behaviour == "fail":
                job.status, job.finished_at = "failed", int(time.time())
                job.error = {"code": "server_error", "message": job.fail_message, "param": None}
                self._event(job, job.fail_message, level="error")
            else:
                self._metrics(job, job.total_steps)
                job.status, job.finished_at = "succeeded", int(time.time())
                job.fine_tuned_model = f"ft:{job.model}:{job.suffix or 'fake'}:{job.n}"
                self._event(job, f"New fine-tuned model created: {job.fine_tuned_model}")
                self._event(job, "The job has successfully completed")

    def _retrieve(self, job: FakeJob) -> dict:
        with self._lock:
            if job.retrieves > 0:
                self._advance(job)
            job.retrieves += 1
            return job.to_json()

    def _events(self, job: FakeJob, query: dict[str, str]) -> dict:
        limit = int(query.get("limit", "20"))
        with self._lock:
            newest_first = list(reversed(job.events))
        if "after" in query:
            ids = [e["id"] for e in newest_first]
            if query["after"] not in ids:
                raise OpenAIHTTPError(400, f"unknown event id {query['after']}", "invalid_cursor")
            newest_first = newest_first[ids.index(query["after"]) + 1:]
        page = newest_first[:limit]
        return {"object": "list", "data": page, "has_more": len(newest_first) > limit}

    def _cancel(self, job: FakeJob) -> dict:
        with self._lock:
            if job.status in ("succeeded", "failed", "cancelled"):
                raise OpenAIHTTPError(400, f"Job {job.id} has already {job.status}",
                                      "invalid_job_state")
            job.status, job.finished_at = "cancelled", int(time.time())
            self._event(job, "Fine-tuning job cancelled")
            return job.to_json()


def _bearer(auth: str | None) -> str:
    return (auth or "").removeprefix("Bearer ").strip() or "<none>"


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict, dict, dict]:
    """Split multipart/form-data exactly (no re-encoding): (form fields, files, filenames)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise OpenAIHTTPError(400, "multipart body without a boundary", "invalid_request")
    delimiter = b"--" + match.group(1).encode()
    form, files, filenames = {}, {}, {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        part = part.removeprefix(b"\r\n")
        head, _, content = part.partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        disposition = next((line for line in head.decode("latin-1").split("\r\n")
                            if line.lower().startswith("content-disposition")), "")
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if not name:
            continue
        if filename:
            files[name.group(1)] = content
            filenames[name.group(1)] = filename.group(1)
        else:
            form[name.group(1)] = content.decode("utf-8")
    return form, files, filenames


def _make_handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeOpenAI/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            pass

        def _read_body(self) -> bytes:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("content-length") or 0)
            return self.rfile.read(length) if length else b""

        def _serve(self) -> None:
            try:
                url = urlsplit(self.path)
                raw = self._read_body()
                headers = {k.lower(): v for k, v in self.headers.items()
                           if k.lower() != "authorization"}
                req = RecordedRequest(method=self.command, path=url.path,
                                      query={k: v[-1] for k, v in parse_qs(url.query).items()},
                                      headers=headers, raw=raw)
                ctype = headers.get("content-type", "")
                try:
                    if ctype.startswith("multipart/form-data"):
                        req.form, req.files, req.filenames = _parse_multipart(ctype, raw)
                    elif raw:
                        req.body = json.loads(raw)
                except (OpenAIHTTPError, ValueError):
                    req.body = None
                auth = self.headers.get("authorization")
                status, extra, body, content_type = fake.handle(req, auth)
            except ConnectionAbortedError:
                self.close_connection = True
                return
            except Exception as exc:  # a bug in the fake: report it, answer 500
                fake.handler_errors.append(f"{type(exc).__name__}: {exc}")
                status, extra, content_type = 500, {}, "application/json"
                body = _error_body(500, "fake server bug", None, "server_error")
            try:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.send_header("x-request-id", f"req_{len(fake.requests)}")
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        do_GET = do_POST = do_DELETE = _serve

    return Handler
