"""The local TA's CPU kernels: the in-place KV cache, oneDNN-packed linears and the kept
prefix caches (engine.ta.kvcache, engine.ta.packed, engine.ta.generate.PrefixKV)."""

from __future__ import annotations

import copy

import pytest
import torch

from engine.ta import packed
from engine.ta.kvcache import growing_cache
from engine.ta.local import LocalTA
from tests.test_ta_local import messages


@pytest.fixture(scope="module")
def tiny_gemma():
    """A 3-layer Gemma 3 text model (random weights) whose first two layers use a sliding
    window of 8 tokens: the cache layer kinds of the default TA."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                           sliding_window=8, layer_types=["sliding_attention", "sliding_attention",
                                                          "full_attention"],
                           max_position_embeddings=256)
    return Gemma3ForCausalLM(cfg).eval()


def _run(model, cache, steps):
    """Hidden states of a 20-token prefill in chunks of 7, a repeat to 3 rows, decode steps,
    a row selection and a deepcopy mid-way (what the TA's fast path does to its cache)."""
    torch.manual_seed(1)
    ids = torch.randint(0, 97, (1, 20))
    out = []
    with torch.inference_mode():
        for s in range(0, 20, 7):
            out.append(model.model(input_ids=ids[:, s:s + 7], cache=cache, use_cache=True).last_hidden_state)
        cache.batch_repeat_interleave(3)
        token = torch.randint(0, 97, (3, 1))
        for step in range(steps):
            if step == 5:
                cache.batch_select_indices(torch.tensor([0, 2]))
                token = token[[0, 2]]
            if step == 9:
                cache = copy.deepcopy(cache)
            out.append(model.model(input_ids=token, cache=cache, use_cache=True).last_hidden_state)
            token = (token * 7 + 3) % 97
    return out


def test_growing_cache_computes_what_dynamic_cache_computes(tiny_gemma):
    """Bit for bit, through sliding windows overflowing, batch repeat/select and deepcopy;
    70 decode steps also outgrow the buffers' reserve (a fresh buffer is made)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    grow = growing_cache(tiny_gemma.config)
    kinds = [type(layer).__mro__[1] for layer in grow.layers]
    assert kinds == [DynamicSlidingWindowLayer, DynamicSlidingWindowLayer, DynamicLayer]
    want = _run(tiny_gemma, DynamicCache(config=tiny_gemma.config), 70)
    got = _run(tiny_gemma, grow, 70)
    assert all(torch.equal(a, b) for a, b in zip(want, got))


def test_growing_cache_appends_in_place(tiny_gemma):
    cache = growing_cache(tiny_gemma.config)
    with torch.inference_mode():
        tiny_gemma.model(input_ids=torch.tensor([[1, 2, 3]]), cache=cache, use_cache=True)
        buffer = cache.layers[2]._kbuf
        tiny_gemma.model(input_ids=torch.tensor([[4]]), cache=cache, use_cache=True)
    assert cache.layers[2]._kbuf is buffer  # no new tensor for the next token
    assert cache.layers[2].keys.data_ptr() == buffer.data_ptr()
    assert cache.get_seq_length() == 4


needs_onednn = pytest.mark.skipif(not packed.available(), reason="this torch has no oneDNN packed linear")


@needs_onednn
def test_packed_linears_route_and_restore():
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(40, 64), torch.nn.GELU(), torch.nn.Linear(64, 8, bias=False))
    x = torch.randn(5, 1, 40)
    with torch.inference_mode():
        want = model(x)
        packs = packed.PackedLinears()
        with packs.patched(model) as routed:
            assert routed == 2 and "forward" in model[0].__dict__
            got = model(x)
            again = model(x)
        assert "forward" not in model[0].__dict__ and "forward" not in model[2].__dict__
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)  # float32, another summation order
    assert torch.equal(got, again)  # deterministic


@needs_onednn
def test_packed_weights_follow_the_weight():
    """An in-place weight change (a new version) or a new weight tensor is repacked; under
    autograd the module takes F.linear (the packed op has no backward)."""
    torch.manual_seed(3)
    lin = torch.nn.Linear(16, 24)
    x = torch.randn(3, 16)
    packs = packed.PackedLinears()

    def check():
        torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias),
                                   rtol=1e-5, atol=1e-5)

    with torch.no_grad(), packs.patched(lin):
        check()
        first = packs.packed(lin)
        lin.weight.mul_(2)  # in place: a new version
        check()
        assert packs.packed(lin) is not first
        lin.weight = torch.nn.Parameter(torch.randn(24, 16))  # a new tensor
        check()
    x.requires_grad_(True)
    with packs.patched(lin):
        lin(x).sum().backward()
    assert x.grad is not None and lin.weight.grad is not None
    packs.keep_only(torch.nn.Linear(2, 2))
    assert packs._packs == {}


def test_without_onednn_nothing_is_routed(monkeypatch):
    monkeypatch.setattr(packed, "_OK", False)
    lin = torch.nn.Linear(4, 4)
    with packed.PackedLinears().patched(lin) as routed:
        assert routed == 0 and "forward" not in lin.__dict__


def test_the_stable_prefix_is_kept_when_the_history_changes_early(tiny_causal_lm_dir):
    """Three requests whose sorted histories differ near their start: the third reuses the
    cache kept at the end of the stable part (system message, examples, description), not
    only the boundary shared with the second; a cold TA samples the same texts."""
    warm = LocalTA(str(tiny_causal_lm_dir), max_new_tokens=8, prefill_chunk=16)
    cold = LocalTA(str(tiny_causal_lm_dir), max_new_tokens=8, prefill_chunk=16)
    first = messages(history=[("Read the tweet and say how it feels about things.", 0.41)])
    second = messages(history=[("Read the tweet and say how it feels about things.", 0.41),
                               ("Is it happy?", 0.52)])
    third = messages(history=[("Count the words.", 0.30),
                              ("Read the tweet and say how it feels about things.", 0.41),
                              ("Is it happy?", 0.52)])
    warm.propose(first, n=2, temperature=1.0, seed=1)
    warm.propose(second, n=2, temperature=1.0, seed=2)
    ids = _ids(warm, third)
    deepest = max(warm.generator.prefix.entries, key=len)
    assert tuple(ids[:len(deepest)]) != deepest  # the second prompt's deepest boundary is no use
    stable = (warm._stable_tokens(third, ids) // 16) * 16
    assert stable > 0 and tuple(ids[:stable]) in warm.generator.prefix.entries
    a = warm.propose(third, n=3, temperature=1.0, seed=9)
    assert warm.last_timings["prefilled"] == a.usage["prompt_tokens"] - stable
    b = cold.propose(third, n=3, temperature=1.0, seed=9)
    assert cold.last_timings["prefilled"] == b.usage["prompt_tokens"]
    assert a.texts == b.texts


def _ids(ta, msgs):
    from engine.ta.local import encode_prompt

    return encode_prompt(ta.tokenizer, ta.render(msgs), ta.chat)


def test_a_request_without_top_k_after_one_with_it_samples_the_full_distribution(tiny_causal_lm_dir):
    """The exact-bf16 head is built by the first request with a top-k; a later request with
    top_k = 0 (no top-k warper) must not go through it (it would keep only the tokens near the
    largest logit): it samples what stock generate samples."""
    def ta(top_k, fast=True):
        t = LocalTA(str(tiny_causal_lm_dir), max_new_tokens=8, top_k=top_k)
        t.fast, t.generator.bf16_head = fast, True
        with torch.no_grad():  # a peaked head, so that the margin leaves most tokens out
            t.model.get_output_embeddings().weight.mul_(40)
        return t

    used = ta(50)
    used.propose(messages(), n=3, temperature=1.0, seed=4)
    assert used.generator._head and used.generator._head.used > 0
    used.top_k = 0
    got = used.propose(messages(), n=3, temperature=1.0, seed=5).texts
    assert got == ta(0, fast=False).propose(messages(), n=3, temperature=1.0, seed=5).texts


def test_the_stable_prefix_outlives_histories_that_grow_by_appending():
    """Requests whose histories only grow (each shares a deeper boundary with the one before)
    must not push the stable part's cache out of the kept caches: a later request whose
    history changes early still starts from it. The model is a stand-in whose "cache" is the
    list of ids fed so far (what the prefix logic decides is the same for any model)."""
    from engine.ta.generate import FastGenerator

    class Listing(FastGenerator):
        def _new_cache(self):
            return []

        def _forward(self, module, ids, cache, **extra):
            cache.extend(ids[0].tolist())

        def _logits(self, ids, cache, decoder, k):
            cache.extend(ids[0].tolist())

    gen = Listing(None, None, stops=(), eos_ids=set(), pad_token_id=0, chunk=32)
    stable = list(range(1000, 1300))
    hist = [list(range(2000 + 100 * i, 2040 + 100 * i)) for i in range(8)]
    tail = list(range(5000, 5020))
    for h in (hist[:1], hist[:2], hist[:3], hist[:4], hist[:5], [hist[7]] + hist[:5]):
        ids = stable + sum(h, []) + tail
        cache, _, ran = gen._prefill(ids, None, None, 50, len(stable))
        assert cache == ids  # the kept caches hold exactly the prompt's prefix
    assert ran == len(ids) - (len(stable) // 32) * 32  # the last one started from the stable part


def test_a_loan_that_starts_while_a_request_renders_its_prompt_is_refused(tiny_causal_lm_dir):
    """`lend_base` can take the model between propose's first check and its lock (the prompt
    is rendered in between): the request must then refuse, not run (and patch the linears of)
    the model a fine-tune job is training."""
    from engine.errors import TAUnavailable

    ta = LocalTA(str(tiny_causal_lm_dir), max_new_tokens=4)
    render = ta.render

    def render_then_lend(msgs):
        text = render(msgs)
        ta.lent = True  # what lend_base does under the lock, here at the worst moment
        return text

    ta.render = render_then_lend
    with pytest.raises(TAUnavailable):
        ta.propose(messages(), n=2, temperature=1.0, seed=1)


@needs_onednn
def test_packed_forwards_are_restored_when_the_body_raises():
    from engine.errors import StopRun

    lin = torch.nn.Linear(8, 8)
    with pytest.raises(StopRun), packed.PackedLinears().patched(lin) as routed:
        assert routed == 1 and "forward" in lin.__dict__
        raise StopRun()
    assert "forward" not in lin.__dict__


def test_packed_and_plain_linears_sample_the_same_texts(tiny_causal_lm_dir):
    """The fast path with oneDNN-packed weights and with nn.Linear as is: the same texts for
    the same seeds (float32 both; only the summation order differs)."""
    ta = LocalTA(str(tiny_causal_lm_dir), max_new_tokens=10)
    msgs = messages(history=[("Read the tweet.", 0.41), ("Is it happy?", 0.52)])
    got = {}
    for pack in (True, False):
        ta.generator.pack_weights = pack
        ta.generator.reset()
        got[pack] = [ta.propose(msgs, n=4, temperature=t, seed=s).texts for t, s in ((1.0, 3), (0.7, 4))]
    assert got[True] == got[False]
    assert (len(ta.generator.packs._packs) > 0) == packed.available()


@needs_onednn
def test_a_linear_onednn_refuses_falls_back_to_nn_linear(monkeypatch):
    torch.manual_seed(4)
    lin = torch.nn.Linear(8, 6)
    x = torch.randn(2, 8)
    packs = packed.PackedLinears()

    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported layout")

    monkeypatch.setattr(packs, "packed", refuse)
    with torch.no_grad(), packs.patched(lin):
        out = lin(x)
        assert id(lin) in packs.refused
        again = lin(x)
    want = torch.nn.functional.linear(x, lin.weight, lin.bias)
    assert torch.equal(out, want) and torch.equal(again, want)


@needs_onednn
def test_a_trainable_bias_alone_takes_nn_linear():
    lin = torch.nn.Linear(8, 6)
    lin.weight.requires_grad_(False)
    with packed.PackedLinears().patched(lin):
        lin(torch.randn(2, 8)).sum().backward()
    assert lin.bias.grad is not None
