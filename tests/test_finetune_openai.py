"""OpenAIFinetune against a real local HTTP server speaking the OpenAI fine-tuning protocol."""

from __future__ import annotations

import json
import logging

import openai
import pytest

from engine.config import FinetuneConfig
from engine.errors import TAError, TAUnavailable, UsageError
from engine.finetune.openai_ft import OpenAIFinetune, validate_examples
from engine.ta.openai_ta import OpenAITA

SYSTEM = "You propose instructions (prefixes) for a sentiment classifier of tweets."
RETRIEVE = r"/fine_tuning/jobs/[^/]+$"


def examples(n: int) -> list[dict]:
    """Dialogue gradients: a window of scored prefixes, then the next prefix."""
    out = []
    for i in range(n):
        history = "\n".join(f"{0.4 + 0.01 * (i + j):.2f} Prefix {i + j}: décidez 😀" for j in range(3))
        out.append({"messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"History (worst first):\n{history}\nPropose 1 new prefix."},
            {"role": "assistant", "content": f"Prefix {i + 3}: classify the mood"},
        ]})
    return out


def backend(fake, sleeps: list | None = None, retries: int = 3, **cfg) -> OpenAIFinetune:
    cfg.setdefault("poll_interval_s", 0.25)
    return OpenAIFinetune(FinetuneConfig(backend="openai", **cfg), base_url=fake.base_url,
                          api_key=fake.api_key, retries=retries,
                          sleep=(sleeps.append if sleeps is not None else _no_sleep))


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected retry sleep of {seconds}s")


def poll_until_done(ft: OpenAIFinetune, job_id: str, limit: int = 20) -> list:
    statuses = []
    for _ in range(limit):
        statuses.append(ft.poll(job_id))
        if statuses[-1].done:
            return statuses
    raise AssertionError(f"job {job_id} not done after {limit} polls: {statuses[-1]}")


# ---- validation ----------------------------------------------------------------------

def test_validate_accepts_dialogue_gradients_and_estimates_tokens():
    exs = examples(12)
    stats = validate_examples(exs)
    chars = sum(len(m["content"]) for ex in exs for m in ex["messages"])
    assert stats["examples"] == 12
    assert stats["est_tokens"] == -(-chars // 4)
    assert 0 < stats["max_example_tokens"] <= stats["est_tokens"]


def test_too_few_examples_names_the_fix():
    with pytest.raises(UsageError) as info:
        validate_examples(examples(9))
    msg = str(info.value)
    assert "only 9 dialogue-gradient examples" in msg and "at least 10" in msg
    assert "Fix: raise loop.k or lower loop.window" in msg


@pytest.mark.parametrize("mutate, words", [
    (lambda ex: ex["messages"][1].update(role="bot"), "role 'bot'"),
    (lambda ex: ex["messages"][2].update(content=None), "no string content"),
    (lambda ex: ex["messages"][2].update(content=["a"]), "no string content"),
    (lambda ex: ex["messages"].pop(), "does not end with an assistant message"),
    (lambda ex: ex.pop("messages"), "no 'messages' list"),
    (lambda ex: ex["messages"].clear(), "empty 'messages' list"),
    (lambda ex: ex["messages"][0].update(tool_calls=[]), "unsupported keys"),
    (lambda ex: ex["messages"].pop(1), "no user message"),
])
def test_bad_examples_are_rejected(mutate, words):
    exs = examples(12)
    mutate(exs[5])
    with pytest.raises(UsageError) as info:
        validate_examples(exs)
    assert "fine-tune example 5" in str(info.value) and words in str(info.value)
    assert "Fix:" in str(info.value)


def test_invalid_examples_send_nothing_and_write_nothing(fake_openai, tmp_path):
    with pytest.raises(UsageError):
        backend(fake_openai).submit(examples(3), "gpt-4o-mini", tmp_path, epoch=0)
    assert fake_openai.requests == []
    assert not (tmp_path / "finetune").exists()


def test_missing_key_is_a_usage_error(monkeypatch, fake_openai):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UsageError, match="no API key for OpenAI fine-tuning. Fix: export OPENAI_API_KEY="):
        OpenAIFinetune(FinetuneConfig(backend="openai"), base_url=fake_openai.base_url)


# ---- submit --------------------------------------------------------------------------

def test_submit_uploads_exactly_the_jsonl_and_creates_the_job(fake_openai, tmp_path):
    ft = backend(fake_openai, epochs=3, suffix="gpta-run")
    exs = examples(11)
    job_id = ft.submit(exs, "gpt-4o-mini", tmp_path, epoch=2)

    path = tmp_path / "finetune" / "epoch-2.jsonl"
    on_disk = path.read_bytes()
    assert [json.loads(line) for line in on_disk.decode("utf-8").splitlines()] == exs
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temp files left

    [upload] = fake_openai.requests_to(r"/files$", "POST")
    assert upload.form == {"purpose": "fine-tune"}
    assert upload.files["file"] == on_disk
    assert upload.filenames["file"] == "epoch-2.jsonl"
    [(file_id, stored)] = fake_openai.files.items()
    assert stored == on_disk

    [create] = fake_openai.requests_to(r"/fine_tuning/jobs$", "POST")
    assert create.body == {
        "model": "gpt-4o-mini", "training_file": file_id, "suffix": "gpta-run",
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}}}
    assert job_id in fake_openai.jobs
    assert ft.poll_interval_s == 0.25 and ft.can_attach(job_id)


def test_submit_rejected_key_fails_at_once(fake_openai, tmp_path):
    ft = OpenAIFinetune(FinetuneConfig(backend="openai"), base_url=fake_openai.base_url,
                        api_key="sk-wrong-0123456789abcdef", sleep=_no_sleep)
    with pytest.raises(TAUnavailable) as info:
        ft.submit(examples(10), "gpt-4o-mini", tmp_path, epoch=0)
    assert str(info.value) == (f"OpenAI fine-tuning endpoint {fake_openai.base_url} rejected the API "
                               "key (401). Fix: check OPENAI_API_KEY")
    assert "sk-wrong" not in repr(info.value)
    assert len(fake_openai.requests) == 1 and not fake_openai.jobs


def test_upload_retried_with_the_same_bytes(fake_openai, tmp_path):
    sleeps = []
    fake_openai.add_fault(503, path=r"/files$")
    ft = backend(fake_openai, sleeps)
    job_id = ft.submit(examples(10), "gpt-4o-mini", tmp_path, epoch=0)
    first, second = fake_openai.requests_to(r"/files$", "POST")
    assert first.files["file"] == second.files["file"] == (tmp_path / "finetune" / "epoch-0.jsonl").read_bytes()
    assert len(sleeps) == 1 and job_id in fake_openai.jobs


# ---- poll ----------------------------------------------------------------------------

def test_poll_walks_statuses_surfaces_events_once_and_returns_the_model(fake_openai, tmp_path):
    ft = backend(fake_openai, suffix="gpta", epochs=1)  # the fake trains 1 step per line per epoch
    job_id = ft.submit(examples(10), "gpt-4o-mini", tmp_path, epoch=0)
    polls = poll_until_done(ft, job_id)

    assert [p.status for p in polls] == ["validating_files", "queued", "running", "succeeded"]
    job = fake_openai.jobs[job_id]
    all_events = [e for p in polls for e in p.events]
    assert all_events == [e["message"] for e in job.events]  # each once, oldest first
    assert len(all_events) == len(set(all_events)) >= 6
    assert polls[0].events == [f"Validating training file: {job.training_file}"]
    assert all(not p.model for p in polls[:-1])
    final = polls[-1]
    assert final.done and final.model == f"ft:gpt-4o-mini:gpta:{job.n}"
    assert final.step == final.total_steps == 10 and final.loss == pytest.approx(2 / 11, abs=1e-3)
    assert final.accuracy == pytest.approx(10 / 11, abs=1e-3)  # the job's own token accuracy
    assert polls[2].step == 5 and polls[2].eta_s is not None
    assert ft.poll(job_id).events == []  # nothing new

    ta = OpenAITA("gpt-4o-mini", base_url=fake_openai.base_url, api_key=fake_openai.api_key)
    ta.use_model(final.model)
    reply = ta.propose([{"role": "user", "content": "Propose 2 new prefixes."}], 2, 1.0, 0)
    assert reply.model == final.model and len(json.loads(reply.texts[0])["prefixes"]) == 2


def test_failed_job_reports_the_error(fake_openai, tmp_path):
    fake_openai.set_job_behaviour("fail", message="Training diverged: loss became NaN")
    ft = backend(fake_openai)
    job_id = ft.submit(examples(10), "gpt-4o-mini", tmp_path, epoch=1)
    final = poll_until_done(ft, job_id)[-1]
    assert final.status == "failed" and final.done and final.model == ""
    assert final.message == "Training diverged: loss became NaN"
    assert "[error] Training diverged: loss became NaN" in final.events


def test_server_text_never_carries_the_key(fake_openai, tmp_path):
    fake_openai.set_job_behaviour("fail", message=f"quota for key {fake_openai.api_key} exceeded")
    ft = backend(fake_openai)
    final = poll_until_done(ft, ft.submit(examples(10), "gpt-4o-mini", tmp_path, epoch=0))[-1]
    assert final.message == "quota for key *** exceeded"
    assert not [e for e in final.events if fake_openai.api_key in e] and final.events
    assert fake_openai.api_key not in repr(ft) + repr(ft.endpoint)


def test_succeeded_without_a_model_is_malformed(fake_openai, tmp_path):
    ft = backend(fake_openai, [], retries=1)
    job_id = ft.submit(examples(10), "gpt-4o-mini", tmp_path, epoch=0)
    fake_openai.add_fault(body={"id": job_id, "object": "fine_tuning.job", "status": "succeeded",
                                "fine_tuned_model": None}, path=RETRIEVE, times=2)
    with pytest.raises(TAError, match="malformed reply .*fine_tuned_model.*after 1 retry"):
        ft.poll(job_id)


def test_never_finishing_job_stays_running(fake_openai, tmp_path):
    fake_openai.set_job_behaviour("never")
    ft = backend(fake_openai)
    job_id = ft.submit(examples(10), "gpt-4o-mini", tmp_path, epoch=0)
    polls = [ft.poll(job_id) for _ in range(10)]
    assert [p.status for p in polls[2:]] == ["running"] * 8
    assert not any(p.done for p in polls)
    steps = [p.step for p in polls[2:]]
    assert steps == sorted(steps) and steps[-1] < polls[-1].total_steps
    assert all(len(p.events) == 1 for p in polls[3:])  # one new metrics event per poll


def test_cancel(fake_openai, tmp_path, caplog):
    fake_openai.set_job_behaviour("never")
    ft = backend(fake_openai)
    job_id = ft.submit(examples(10), "gpt-4o-mini", tmp_path, epoch=0)
    ft.poll(job_id)
    ft.cancel(job_id)
    status = ft.poll(job_id)
    assert status.status == "cancelled" and status.done
    assert "Fine-tuning job cancelled" in status.events
    assert len(fake_openai.requests_to(r"/cancel$", "POST")) == 1

    with caplog.at_level(logging.WARNING, logger="gpta.finetune.openai"):
        ft.cancel(job_id)  # already cancelled: best effort, logged, not raised
    assert "could not cancel" in caplog.text and "already cancelled" in caplog.text


@pytest.mark.parametrize("path", [RETRIEVE, r"/events$"])
def test_poll_retries_429_and_500(fake_openai, tmp_path, path):
    sleeps = []
    ft = backend(fake_openai, sleeps)
    job_id = ft.submit(examples(10), "gpt-4o-mini", tmp_path, epoch=0)
    fake_openai.add_fault(429, path=path, method="GET", retry_after=4)
    fake_openai.add_fault(500, path=path, method="GET")
    first = ft.poll(job_id)
    assert sleeps[0] == 4 and len(sleeps) == 2
    statuses = [first] + poll_until_done(ft, job_id)
    # a retried retrieve is still one step of the job's life; events are not duplicated
    events = [e for p in statuses for e in p.events]
    assert len(events) == len(set(events))
    assert statuses[-1].status == "succeeded"


def test_poll_gives_up_on_persistent_5xx(fake_openai, tmp_path):
    ft = backend(fake_openai, [], retries=2)
    job_id = ft.submit(examples(10), "gpt-4o-mini", tmp_path, epoch=0)
    fake_openai.add_fault(502, path=RETRIEVE, times=100)
    with pytest.raises(TAUnavailable, match=r"kept failing status of job .* \(502.*after 2 retries"):
        ft.poll(job_id)


@pytest.mark.parametrize("body, content_type", [
    ("oops", "text/plain"), ("{bad", "application/json"),
    ('{"object": "list", "data": [{"message": "no id"}]}', "application/json"),
])
def test_malformed_events_are_retried_then_a_ta_error(fake_openai, tmp_path, body, content_type):
    sleeps = []
    ft = backend(fake_openai, sleeps, retries=1)
    job_id = ft.submit(examples(10), "gpt-4o-mini", tmp_path, epoch=0)
    fake_openai.add_fault(body=body, content_type=content_type, path=r"/events$", times=2)
    with pytest.raises(TAError, match=r"malformed reply to events of job .* after 1 retry"):
        ft.poll(job_id)
    assert len(sleeps) == 1
    assert [p.status for p in poll_until_done(ft, job_id)][-1] == "succeeded"  # recovers


def test_rejected_job_creation_names_finetune_settings(fake_openai, tmp_path):
    fake_openai.add_fault(400, path=r"/fine_tuning/jobs$", body={"error": {
        "message": "Model gpt-4.1-nano is not available for fine-tuning", "code": "invalid_model"}})
    with pytest.raises(TAError) as info:
        backend(fake_openai).submit(examples(10), "gpt-4.1-nano", tmp_path, epoch=0)
    assert not isinstance(info.value, TAUnavailable)
    assert "(400: Model gpt-4.1-nano is not available for fine-tuning)" in str(info.value)
    assert "Fix: check finetune.model" in str(info.value)


def test_unknown_job_is_unavailable(fake_openai):
    with pytest.raises(TAUnavailable, match=r"404.*Fix: resume with the API key"):
        backend(fake_openai).poll("ftjob-missing")


def test_many_new_events_are_paged_in_order(fake_openai, tmp_path):
    """More new events than one page (50): all returned once, oldest first."""
    fake_openai.set_job_behaviour("never")
    ft = backend(fake_openai)
    job_id = ft.submit(examples(10), "gpt-4o-mini", tmp_path, epoch=0)
    assert len(ft.poll(job_id).events) == 1
    raw = openai.OpenAI(base_url=fake_openai.base_url, api_key=fake_openai.api_key, max_retries=0)
    for _ in range(70):  # another client advancing the job: one metrics event per retrieve
        raw.fine_tuning.jobs.retrieve(job_id)
    status = ft.poll(job_id)
    expected = [e["message"] for e in fake_openai.jobs[job_id].events[1:]]
    assert len(expected) > 50 and status.events == expected
    assert len(fake_openai.requests_to(r"/events$")) >= 3  # first poll + two pages
    assert ft.poll(job_id).events == [fake_openai.jobs[job_id].events[-1]["message"]]


def test_a_new_process_can_attach_to_a_running_job(fake_openai, tmp_path):
    job_id = backend(fake_openai).submit(examples(10), "gpt-4o-mini", tmp_path, epoch=0)
    later = backend(fake_openai)  # e.g. after a resume
    assert later.can_attach(job_id)
    assert poll_until_done(later, job_id)[-1].status == "succeeded"
