"""LocalTA on a tiny random causal LM: transcript and chat-template prompting, seeded batched
sampling, usage, adapters and errors; the transcript renderer; the Gemma cache builder (with
fake chunks, so nothing large is built here)."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path

import pytest

from engine import prompts
from engine.errors import ModelError, UsageError
from engine.ta import local as local_mod
from engine.ta import transcript as tr
from engine.ta.local import (LocalTA, encode_prompt, encode_training_example, resolve_local_model,
                             use_chat_template)

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def messages(description: str = "Tweets labelled positive, negative or neutral.",
             history: list[tuple[str, float]] | None = None, n: int = 4) -> list[dict]:
    system = prompts.system_prompt("classification", "BERT", "[CLS]prefix + context",
                                   ["negative", "neutral", "positive"])
    return prompts.build_messages(system, prompts.user_prompt(description, history or [], n))


@pytest.fixture(scope="module")
def tiny_ta(tiny_causal_lm_dir) -> LocalTA:
    return LocalTA(str(tiny_causal_lm_dir), max_new_tokens=10)


@pytest.fixture(scope="module")
def chat_lm_dir(tiny_causal_lm_dir, tmp_path_factory) -> Path:
    """The tiny LM with a simple chat template on its tokenizer."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tiny-chat-lm") / "model"
    shutil.copytree(tiny_causal_lm_dir, out)
    tok = AutoTokenizer.from_pretrained(str(out))
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(str(out))
    return out


# ---- transcript ---------------------------------------------------------------------------------
def test_generation_prompt_ends_at_the_open_quote():
    msgs = messages(history=[("Read the tweet.", 0.41), ("Is it happy?", 0.52)])
    text = tr.render_transcript(msgs, add_generation_prompt=True)
    assert text.endswith(f"{tr.ANSWER_HEADER}\n{tr.ANSWER_CUE}\n\"")
    assert text.startswith(msgs[0]["content"])
    assert msgs[1]["content"] in text
    # the worked examples sit between the system message and the request
    assert text.index(tr.EXAMPLES[0][1]) < text.index(tr.REQUEST_HEADER + "\n" + msgs[1]["content"][:20])
    plain = tr.render_transcript(msgs, add_generation_prompt=True, examples=False)
    assert tr.EXAMPLES[0][1] not in plain and plain.endswith('"')


def test_assistant_json_is_rendered_as_a_quoted_prefix():
    example = prompts.window_example("System text.", "Tweets.", [("a b", 0.1), ("c d", 0.2)],
                                     "Classify the mood of this tweet.")
    full = tr.render_transcript(example["messages"], add_generation_prompt=False)
    assert full.endswith(f'{tr.ANSWER_CUE}\n"Classify the mood of this tweet."')
    assert '{"prefixes"' not in full.split(tr.REQUEST_HEADER)[-1].split(tr.ANSWER_HEADER)[-1]
    # training prompt + target == the full transcript: generation and training agree
    prompt = tr.render_transcript(example["messages"][:-1], add_generation_prompt=True)
    body = tr.render_answer_body(tr.assistant_prefixes(example["messages"][-1]["content"]))
    assert prompt + body == full


def test_assistant_prefix_variants_and_sanitizing():
    assert tr.assistant_prefixes('{"prefixes": ["One.", "Two."]}') == ["One.", "Two."]
    assert tr.assistant_prefixes('{"prefix": "Solo."}') == ["Solo."]
    assert tr.assistant_prefixes("Plain   text\nanswer") == ["Plain text answer"]
    assert tr.assistant_prefixes('{"prefixes": ["Say \\"hi\\" now"]}') == ["Say 'hi' now"]
    assert tr.render_answer_body(["One.", "Two."]) == 'One."\n"Two."'
    # the lenient shapes beyond the one format (engine.prompts.decode_assistant_message)
    assert tr.assistant_prefixes('{"prefixes": ["One.", 2, null, ""]}') == ["One.", "2"]
    assert tr.assistant_prefixes(prompts.assistant_message(["A  b", " "])) == ["A b"]


def test_cut_at_stop():
    assert tr.cut_at_stop(' Read the tweet." and more') == "Read the tweet."
    assert tr.cut_at_stop("first line\nsecond") == "first line"
    assert tr.cut_at_stop("no stop at all ") == "no stop at all"


# ---- prompting choices --------------------------------------------------------------------------
def test_tiny_lm_without_template_uses_the_transcript(tiny_ta):
    msgs = messages()
    assert tiny_ta.prompt_format == "transcript"
    assert tiny_ta.render(msgs) == tr.render_transcript(msgs, add_generation_prompt=True)


def test_chat_template_path(chat_lm_dir):
    ta = LocalTA(str(chat_lm_dir), max_new_tokens=6)
    msgs = messages()
    assert ta.prompt_format == "chat"
    assert ta.render(msgs) == ta.tokenizer.apply_chat_template(msgs, add_generation_prompt=True,
                                                               tokenize=False)
    assert ta.render(msgs).endswith("<|assistant|> ")
    reply = ta.propose(msgs, n=3, temperature=1.0, seed=5)
    assert len(reply.texts) == 3
    # the training target is the assistant turn of the template, not the transcript form
    example = prompts.window_example("Sys.", "Tweets.", [("a b", 0.1)], "hello world")
    prompt_ids, target_ids = encode_training_example(ta.tokenizer, example["messages"], chat=True)
    assert prompt_ids == encode_prompt(ta.tokenizer, ta.render(example["messages"][:-1]), chat=True)
    assert ta.tokenizer.decode(target_ids).replace(" ", "") == '{"prefixes":["helloworld"]}'
    forced = LocalTA(str(chat_lm_dir), prompt_format="transcript")
    assert forced.prompt_format == "transcript"


def test_default_gemma_never_uses_a_chat_template(chat_lm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(chat_lm_dir))
    assert use_chat_template(tok, "some/chat-model") is True
    assert use_chat_template(tok, "gemma-3-270m") is False  # a base model, template or not
    with pytest.raises(UsageError):
        use_chat_template(tok, "x", prompt_format="jinja")
    tok.chat_template = None
    with pytest.raises(ModelError, match="no chat template"):
        use_chat_template(tok, "x", prompt_format="chat")


# ---- generation ---------------------------------------------------------------------------------
def test_stock_generate_gets_the_engine_settings(tiny_ta, monkeypatch):
    calls = []
    original = tiny_ta.model.generate

    def counting_generate(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_ta.model, "generate", counting_generate)
    monkeypatch.setattr(tiny_ta, "fast", False)
    reply = tiny_ta.propose(messages(), n=5, temperature=0.9, seed=1)
    assert len(reply.texts) == 5
    assert len(calls) == 1
    assert calls[0]["num_return_sequences"] == 5 and calls[0]["do_sample"] is True
    assert calls[0]["temperature"] == 0.9 and calls[0]["top_p"] == 1.0


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_fast_path_samples_what_stock_generate_samples(tiny_causal_lm_dir, temperature):
    """Same seed -> the same texts and usage from the fast path and from model.generate (the
    same warpers and random stream; only float rounding could ever differ)."""
    ta = LocalTA(str(tiny_causal_lm_dir), max_new_tokens=12, top_p=0.9)
    history = [("Read the tweet.", 0.41)]
    for seed, extra in ((3, []), (4, [("Is it happy?", 0.52)]), (5, [("Is it sad?", 0.55)])):
        history = history + extra
        msgs = messages(history=history)
        ta.fast = True
        fast = ta.propose(msgs, n=4, temperature=temperature, seed=seed)
        prefilled = ta.last_timings["prefilled"]
        ta.fast = False
        stock = ta.propose(msgs, n=4, temperature=temperature, seed=seed)
        assert fast.texts == stock.texts
        assert fast.usage == stock.usage
    assert prefilled < fast.usage["prompt_tokens"]  # the shared prefix was reused


def test_prefix_cache_does_not_change_what_is_sampled(tiny_causal_lm_dir):
    """A warm prefix cache (an uninterrupted run) and a cold one (a resumed run) compute the
    same numbers: the prompt is always prefilled in the same fixed chunks."""
    warm = LocalTA(str(tiny_causal_lm_dir), max_new_tokens=10, prefill_chunk=16)
    cold = LocalTA(str(tiny_causal_lm_dir), max_new_tokens=10, prefill_chunk=16)
    first = messages(history=[("Read the tweet.", 0.41)])
    second = messages(history=[("Read the tweet.", 0.41), ("Is it happy?", 0.52)])
    warm.propose(first, n=2, temperature=1.0, seed=1)
    warm.propose(second, n=2, temperature=1.0, seed=1)
    a = warm.propose(second, n=3, temperature=1.0, seed=9)
    assert warm.last_timings["prefilled"] < a.usage["prompt_tokens"]
    b = cold.propose(second, n=3, temperature=1.0, seed=9)
    assert cold.last_timings["prefilled"] == b.usage["prompt_tokens"]
    assert a.texts == b.texts
    warm.use_model("")  # switching the model forgets the cached prefix
    assert warm.generator.prefix.entries == {}


def test_seeded_sampling_is_reproducible(tiny_ta):
    msgs = messages()
    a = tiny_ta.propose(msgs, n=4, temperature=1.0, seed=11)
    b = tiny_ta.propose(msgs, n=4, temperature=1.0, seed=11)
    c = tiny_ta.propose(msgs, n=4, temperature=1.0, seed=12)
    assert a.texts == b.texts
    assert a.texts != c.texts
    assert len(set(a.texts)) > 1  # sampled, not one answer repeated
    assert a.model == tiny_ta.model_name


def test_seeding_leaves_the_global_rng_alone(tiny_ta):
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_ta.propose(messages(), n=2, temperature=1.0, seed=99)
    assert torch.equal(torch.rand(3), expected)


def test_temperature_zero_is_greedy(tiny_ta):
    msgs = messages()
    a = tiny_ta.propose(msgs, n=3, temperature=0.0, seed=1)
    b = tiny_ta.propose(msgs, n=3, temperature=0.0, seed=2)
    assert len(a.texts) == 3 and len(set(a.texts)) == 1
    assert a.texts == b.texts


def test_greedy_usage_counts_the_one_generated_sequence(tiny_ta):
    one = tiny_ta.propose(messages(), n=1, temperature=0.0, seed=0).usage
    three = tiny_ta.propose(messages(), n=3, temperature=0.0, seed=0).usage
    assert one == three


def test_usage_counts_tokens(tiny_ta):
    msgs = messages()
    reply = tiny_ta.propose(msgs, n=3, temperature=1.0, seed=3)
    prompt_len = len(encode_prompt(tiny_ta.tokenizer, tiny_ta.render(msgs), chat=False))
    usage = reply.usage
    assert usage["prompt_tokens"] == prompt_len
    assert 0 < usage["completion_tokens"] <= 3 * tiny_ta.max_new_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert reply.latency_s > 0


def test_stopping_criteria_stops_each_sequence_at_the_quote(tiny_ta):
    import torch

    tok = tiny_ta.tokenizer
    prompt = tok("a prompt", add_special_tokens=False)["input_ids"]
    quoted = tok('hello "', add_special_tokens=False)["input_ids"]
    unquoted = tok("hello world", add_special_tokens=False)["input_ids"]
    assert len(quoted) == len(unquoted) == 2
    stopper = local_mod._stopping_criteria(tok, len(prompt), tr.STOP_STRINGS, {tok.sep_token_id})
    done = stopper(torch.tensor([prompt + quoted, prompt + unquoted]), None)
    assert done.tolist() == [True, False]
    assert stopper.lengths == {0: 2}
    ended = stopper(torch.tensor([prompt + quoted + [0], prompt + unquoted + [tok.sep_token_id]]), None)
    assert ended.tolist() == [True, True]
    assert stopper.lengths == {0: 2, 1: 3}  # a sequence keeps the length it stopped at


def test_bad_n_and_settings(tiny_causal_lm_dir, tiny_ta):
    with pytest.raises(UsageError):
        tiny_ta.propose(messages(), n=0, temperature=1.0, seed=0)
    with pytest.raises(UsageError):
        LocalTA(str(tiny_causal_lm_dir), max_new_tokens=0)
    with pytest.raises(UsageError):
        LocalTA(str(tiny_causal_lm_dir), top_p=0.0)


# ---- adapters -----------------------------------------------------------------------------------
def test_use_model_errors_leave_the_ta_working(tiny_causal_lm_dir, tmp_path):
    ta = LocalTA(str(tiny_causal_lm_dir), max_new_tokens=4)
    with pytest.raises(ModelError, match="does not exist"):
        ta.use_model(str(tmp_path / "missing-adapter"))
    (tmp_path / "not-an-adapter").mkdir()
    with pytest.raises(ModelError, match="adapter_config.json"):
        ta.use_model(str(tmp_path / "not-an-adapter"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": "x"}))
    with pytest.raises(ModelError, match="cannot load LoRA adapter"):
        ta.use_model(str(broken))
    assert ta.model_name == tiny_causal_lm_dir.name
    assert len(ta.propose(messages(), n=2, temperature=1.0, seed=0).texts) == 2
    ta.close()
    with pytest.raises(Exception, match="closed"):
        ta.propose(messages(), n=1, temperature=1.0, seed=0)


# ---- model resolution errors --------------------------------------------------------------------
def test_missing_local_path_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        LocalTA(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="does not exist"):
        resolve_local_model("./definitely/not/here")
    with pytest.raises(ModelError, match="no TA model"):
        resolve_local_model("  ")


def test_file_and_non_model_directories_are_model_errors(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(ModelError, match="is a file"):
        LocalTA(str(tmp_path / "weights.bin"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="cannot load a causal LM"):
        LocalTA(str(tmp_path / "empty"))


def test_unreachable_hub_name_names_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_local_model("gpta-test-org/no-such-model") == "gpta-test-org/no-such-model"
    with pytest.raises(ModelError) as info:
        LocalTA("gpta-test-org/no-such-model")
    text = str(info.value)
    assert "Hugging Face hub" in text and "gemma-3-270m" in text and "huggingface-cli download" in text


# ---- the Gemma cache (fake chunks; the real build is in test_slow_gemma.py) ----------------------
@pytest.fixture()
def fake_chunks(tmp_path, monkeypatch):
    parts = []
    for i, data in enumerate([b"GGUF-part-one|", b"part-two|", b"part-three"]):
        path = tmp_path / "chunks" / f"model.gguf.part{i:02d}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        parts.append(path)
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()
    monkeypatch.setenv("GPTA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(local_mod, "gemma_gguf_chunks", lambda: parts)
    monkeypatch.setattr(local_mod, "_expected_sha256", lambda: digest)
    return parts


def test_assemble_gguf_concatenates_and_verifies(fake_chunks, tmp_path):
    statuses: list[str] = []
    path = local_mod.assemble_gguf(statuses.append)
    assert path == tmp_path / "cache" / local_mod.GGUF_NAME
    assert path.read_bytes() == b"GGUF-part-one|part-two|part-three"
    assert statuses and "assembling" in statuses[0]
    statuses.clear()
    assert local_mod.assemble_gguf(statuses.append) == path and statuses == []  # already there


def test_assemble_gguf_rejects_a_wrong_checksum(fake_chunks, tmp_path, monkeypatch):
    monkeypatch.setattr(local_mod, "_expected_sha256", lambda: "0" * 64)
    with pytest.raises(ModelError, match="sha256"):
        local_mod.assemble_gguf()
    assert list((tmp_path / "cache").iterdir()) == []  # no partial file left behind


def test_default_cache_is_built_once_under_a_lock(fake_chunks, tmp_path, monkeypatch):
    built = []
    gate = threading.Barrier(2)

    def fake_dequantize(gguf: Path, out: Path) -> None:
        built.append(out)
        for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
            (out / name).write_text("{}")

    monkeypatch.setattr(local_mod, "_dequantize", fake_dequantize)
    results: list[Path] = []
    statuses: list[str] = []

    def start() -> None:
        gate.wait()
        results.append(local_mod.default_ta_dir(statuses.append))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    target = tmp_path / "cache" / local_mod.DEFAULT_DIR_NAME
    assert results == [target, target]
    assert len(built) == 1 and built[0] != target  # built in a temporary sibling, then renamed
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors",
                                                         "tokenizer_config.json"]
    assert any("dequantizing Gemma 3 270M" in s for s in statuses)
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert resolve_local_model("gemma-3-270m") == target


def test_a_failed_build_leaves_no_cache_dir(fake_chunks, tmp_path, monkeypatch):
    def broken(gguf: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise ModelError("could not dequantize x", "fix it")

    monkeypatch.setattr(local_mod, "_dequantize", broken)
    with pytest.raises(ModelError, match="dequantize"):
        local_mod.default_ta_dir()
    names = [p.name for p in (tmp_path / "cache").iterdir()]
    assert local_mod.DEFAULT_DIR_NAME not in names
    assert not [n for n in names if n.startswith(f".{local_mod.DEFAULT_DIR_NAME}")]


# ---- interruptible generation -------------------------------------------------------------------
@pytest.mark.parametrize("fast", [True, False])
def test_a_stop_request_ends_generation_between_tokens(tiny_causal_lm_dir, fast):
    from engine.errors import StopRun

    ta = LocalTA(str(tiny_causal_lm_dir), max_new_tokens=40)
    ta.fast = fast
    polls = []

    def should_stop() -> bool:
        polls.append(1)
        return len(polls) > 5

    with pytest.raises(StopRun):
        ta.propose(messages(), n=3, temperature=1.0, seed=1, should_stop=should_stop)
    assert len(polls) == 6  # asked once per token (or prefill chunk), gave up at the first yes
    # the TA stays usable and a replay of the request gives what an undisturbed call gives
    again = ta.propose(messages(), n=3, temperature=1.0, seed=1)
    fresh = LocalTA(str(tiny_causal_lm_dir), max_new_tokens=40)
    fresh.fast = fast
    assert again.texts == fresh.propose(messages(), n=3, temperature=1.0, seed=1).texts


def test_stop_table_marks_eos_and_tokens_holding_a_stop_character(tiny_ta):
    from engine.ta.generate import stop_token_table

    tok = tiny_ta.tokenizer
    table = stop_token_table(tok, len(tok), tr.STOP_STRINGS, {tok.sep_token_id})
    quote = tok.convert_tokens_to_ids('"')
    word = tok.convert_tokens_to_ids("hello")
    assert table[quote] and table[tok.sep_token_id] and not table[word]
    with pytest.raises(ValueError):
        stop_token_table(tok, len(tok), ("###",), set())


def test_exact_bf16_head_keeps_the_float32_top_k():
    """The candidates found in bf16 hold the float32 top-k, with float32 logits."""
    import torch

    from engine.ta.generate import ExactBf16Head

    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(5000, 64, generator=gen) * 0.05
    hidden = torch.randn(4, 64, generator=gen) * 20
    head = ExactBf16Head(weight)
    exact = hidden @ weight.T
    for k in (1, 50):
        got = head(hidden, k)
        want_idx = exact.topk(k, dim=1).indices
        assert torch.equal(got.topk(k, dim=1).indices.sort(1).values, want_idx.sort(1).values)
        # float32 values (same up to summation order) for the kept tokens
        torch.testing.assert_close(got.gather(1, want_idx), exact.gather(1, want_idx), rtol=1e-5, atol=1e-5)
    assert head.used == 2 and head.fallbacks == 0


def test_dequantization_reports_progress_while_it_runs():
    """The ticker reports while the work runs (a tiny interval; the work waits for two
    reports, so no timing decides the outcome) and stops when it ends."""
    import time

    seen: list[str] = []
    two = threading.Event()

    def status(message: str) -> None:
        seen.append(message)
        if len(seen) >= 2:
            two.set()

    with local_mod._ticking(status, "dequantizing", time.perf_counter(), every_s=0.01, typical_s=90):
        assert two.wait(60)
    count = len(seen)
    time.sleep(0.05)
    assert len(seen) == count  # silent once done
    assert all(m.startswith("dequantizing: ") and "left" in m for m in seen[:2])


def test_stop_table_from_the_backend_matches_batch_decode(tiny_ta):
    """The one-call Rust decode finds the same stop tokens as transformers' batch_decode."""
    import torch

    from engine.ta.generate import _decode_each, stop_token_table

    tok = tiny_ta.tokenizer
    assert getattr(tok, "backend_tokenizer", None) is not None  # the fast path is what is tested
    ids = list(range(len(tok)))
    slow = tok.batch_decode([[i] for i in ids], skip_special_tokens=True)
    want = torch.tensor([any(s in p for s in tr.STOP_STRINGS) for p in slow])
    table = stop_token_table(tok, len(tok), tr.STOP_STRINGS, set())
    assert int(want.sum()) > 0 and torch.equal(table, want)
    assert [bool(p) for p in _decode_each(tok, ids)] == [bool(p) for p in slow]


def test_ta_dtype_setting_reaches_the_local_ta(tiny_causal_lm_dir):
    """ta.dtype picks the local TA's weight dtype; float16 (Gemma 3 overflows) is refused."""
    import torch

    from engine.config import RunConfig
    from engine.errors import ConfigError
    from engine.ta import build_ta

    cfg = RunConfig.from_dict({"ta": {"model": str(tiny_causal_lm_dir), "dtype": "bfloat16"}}).validate()
    ta = build_ta(cfg)
    assert next(ta.model.parameters()).dtype == torch.bfloat16
    assert len(ta.propose(messages(), n=2, temperature=1.0, seed=1).texts) == 2
    auto = build_ta(RunConfig.from_dict({"ta": {"model": str(tiny_causal_lm_dir)}}).validate())
    assert next(auto.model.parameters()).dtype == torch.float32  # auto on the CPU
    with pytest.raises(ConfigError, match="ta.dtype"):
        RunConfig.from_dict({"ta": {"dtype": "float16"}}).validate()


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_finished_rows_leaving_the_batch_change_nothing(tiny_causal_lm_dir, temperature, top_p):
    """Rows that ended leave the batch (their cache rows dropped, no body/head/warpers for
    them) but still draw from the random stream: the same rows and the same random state as
    running them on with the pad token (generate's way), bit for bit, and the same tokens as
    stock generate. Every third token ends a row here, so rows end at different steps."""
    import torch

    from engine.ta.generate import FastGenerator

    ta = LocalTA(str(tiny_causal_lm_dir), max_new_tokens=14, top_p=top_p)
    ids = encode_prompt(ta.tokenizer, ta.render(messages(history=[("Read the tweet.", 0.41)])), ta.chat)
    vocab = ta.model.get_output_embeddings().weight.shape[0]
    eos = set(range(0, vocab, 3))
    pad = ta.tokenizer.pad_token_id if ta.tokenizer.pad_token_id is not None else 0
    gen = FastGenerator(ta.model, ta.tokenizer, stops=(), eos_ids=eos, pad_token_id=pad)
    dropped = 0
    for seed in range(4):
        runs = []
        for drop in (True, False):
            gen.drop_finished = drop
            gen.reset()
            torch.manual_seed(seed)
            with torch.inference_mode():
                res = gen.generate(ids, 5, max_new_tokens=14, temperature=temperature,
                                   top_k=ta.top_k, top_p=top_p)
            runs.append((res.rows, torch.rand(3).tolist()))
        assert runs[0] == runs[1]
        lengths = [len(r) for r in runs[0][0]]
        dropped += min(lengths) < max(lengths)
        torch.manual_seed(seed)
        with torch.inference_mode():
            stock = ta.model.generate(torch.tensor([ids]), do_sample=True, num_return_sequences=5,
                                      max_new_tokens=14, temperature=temperature, top_k=ta.top_k,
                                      top_p=top_p, eos_token_id=sorted(eos), pad_token_id=pad)
        for row, want in zip(runs[0][0], stock[:, len(ids):].tolist()):
            assert row == want[:len(row)]
    assert dropped >= 2  # the drop path really ran


@pytest.mark.parametrize("keep", [0.001, 0.02, 0.9])  # top-k-like rows ... dense rows (full path)
def test_sparse_multinomial_draws_what_torch_multinomial_draws(keep):
    """Same tokens and the same generator state afterwards as torch.multinomial(probs, 1),
    over many seeds; exact float comparison (no tolerance)."""
    import torch

    from engine.ta.generate import SparseMultinomial

    assert SparseMultinomial.ok()
    for seed in range(25):
        gen = torch.Generator().manual_seed(seed)
        logits = torch.randn(5, 5000, generator=gen) * 3
        logits[torch.rand(5, 5000, generator=gen) > keep] = float("-inf")
        logits[:, seed] = 0.0  # every row keeps at least one token
        probs = torch.softmax(logits, dim=-1)
        state = gen.get_state()
        want = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        after = torch.rand(4, generator=gen)
        gen.set_state(state)
        assert torch.equal(SparseMultinomial.sample(probs, gen), want)
        assert torch.equal(torch.rand(4, generator=gen), after)


def test_sparse_multinomial_refuses_what_torch_refuses():
    import torch

    from engine.ta.generate import SparseMultinomial

    for bad in (float("nan"), float("inf"), -0.5):
        probs = torch.zeros(2, 1000)
        probs[:, 3] = 1.0
        probs[1, 9] = bad
        with pytest.raises(RuntimeError):
            SparseMultinomial.sample(probs)
    with pytest.raises(RuntimeError):
        SparseMultinomial.sample(torch.full((2, 1000), float("nan")))


def test_exact_bf16_head_recomputes_only_the_margin_and_keeps_the_float32_top_k():
    """Only the tokens inside the bf16 margin are recomputed in float32 (the rest are -inf);
    after the top-k warper the same tokens survive as from the float32 head, with float32
    values. A flat distribution (everything inside the margin) takes the float32 head."""
    import torch

    from engine.ta.generate import ExactBf16Head, logits_warpers

    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(20000, 64, generator=gen) * 0.05
    head = ExactBf16Head(weight)
    shorter = 0
    for scale in (1.0, 5.0, 20.0):
        hidden = torch.randn(5, 64, generator=gen) * scale
        for k in (1, 50):
            warp = logits_warpers(1.0, k, 1.0)[0]
            got = warp(None, head(hidden, k))
            want = warp(None, hidden @ weight.T)
            kept = torch.isfinite(want)
            assert torch.equal(torch.isfinite(got), kept)
            torch.testing.assert_close(got[kept], want[kept], rtol=1e-5, atol=1e-5)
            shorter += int(torch.isfinite(head(hidden, k)).sum()) < hidden.shape[0] * 1000
    assert shorter  # the margin really left most tokens out
    assert head.fallbacks == 0
    flat = head(torch.zeros(2, 64), 50)
    assert head.fallbacks == 1 and torch.equal(flat, torch.zeros(2, 20000))

