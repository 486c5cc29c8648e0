"""Fast sampling for the local TA: the same distribution as `model.generate`, less work.

`model.generate(num_return_sequences=n)` copies the prompt n times and prefills every copy,
then decodes. For the TA's request shape (a prompt of several hundred tokens, n = 3..5
completions of ~24 tokens) that prefill is most of the time, and most of the prompt (system
message, worked examples, description) is the same in every request of an epoch. Here:

* the prompt is prefilled **once** (batch 1), then its KV cache is repeated for the n rows;
* the prompt is prefilled in chunks whose boundaries are fixed multiples of `chunk` tokens, and
  the KV cache at the deepest chunk boundary shared with the previous prompt is kept, so the
  next request only prefills from there. Because the chunking depends on the prompt alone, a
  request computes bit-identical numbers whether its prefix came from the cache or not: a
  resumed run (cold cache) samples exactly what the uninterrupted run sampled;
* two cut points are kept (`PrefixKV`): the end of the part every request of an epoch shares
  (system message, worked examples, description) and the deepest boundary shared with the
  previous prompt, so a request whose sorted history changes early still skips the stable part;
* the KV cache appends in place (`engine.ta.kvcache`: the same values as transformers'
  concatenating `DynamicCache`, without a copy of the cache per layer per step);
* on a CPU with oneDNN, every `nn.Linear` multiplies by a packed copy of its weight
  (`engine.ta.packed`: float32 stays float32, only the summation order differs from MKL's);
* intermediate chunks run the decoder only (no 262k-way vocabulary head); the head runs once
  per step on the last position, in bf16 with the float32 logits recomputed for the tokens
  that can reach the top-k (`ExactBf16Head`);
* sampling is transformers' own: logits in float32, its temperature / top-k / top-p warpers,
  then `torch.multinomial`'s algorithm with its own random draws (`SparseMultinomial`: the
  exponentials only where the probability is not zero); every row draws each step, finished
  rows too, so the random stream is consumed exactly as `generate` consumes it;
* finished rows leave the batch: their KV cache rows are dropped, and the body, the head and
  the warpers run only on the rows still generating;
* the stop test is one table lookup per step on the device (which tokens contain a stop
  character, which are EOS) and one transfer of the "all finished" flag per step, instead of
  decoding every growing sequence every step;
* `should_stop()` is polled every token; when it says so, generation raises StopRun.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from engine.errors import StopRun
from engine.ta import packed
from engine.ta.packed import cpu_has_bf16
from engine.ta.kvcache import growing_cache

StopCheck = Callable[[], bool]


def stop_token_table(tokenizer: Any, vocab_size: int, stops: Sequence[str],
                     eos_ids: set[int]) -> Any:
    """A bool tensor over the vocabulary: token i ends a sequence (EOS, or it contains a stop).

    Exact for single-character stop strings (the transcript's closing quote and newline): a
    decoded text contains such a character iff one of its tokens' pieces does (UTF-8
    continuation bytes never equal an ASCII character, so byte-fallback pieces cannot combine
    into one).
    """
    import torch

    if any(len(s) != 1 for s in stops):
        raise ValueError(f"token-level stop detection needs one-character stop strings, got {stops!r}")
    table = torch.zeros(vocab_size, dtype=torch.bool)
    if stops:
        ids = list(range(min(vocab_size, len(tokenizer))))
        pieces = _decode_each(tokenizer, ids)
        hits = [i for i, piece in zip(ids, pieces) if any(s in piece for s in stops)]
        table[hits] = True
    for i in eos_ids:
        if 0 <= i < vocab_size:
            table[i] = True
    return table


def _decode_each(tokenizer: Any, ids: list[int]) -> list[str]:
    """Each token decoded on its own, skipping special tokens.

    A fast tokenizer's Rust backend decodes the whole vocabulary in one call (about 3x faster
    than `batch_decode` for Gemma's 262k tokens); `batch_decode` only adds the tokenization-space
    cleanup, which removes spaces and never a stop character. Slow tokenizers use `batch_decode`.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decode_batch = getattr(backend, "decode_batch", None)
    if decode_batch is not None:
        try:
            return list(decode_batch([[i] for i in ids], skip_special_tokens=True))
        except (TypeError, ValueError, OverflowError):  # pragma: no cover - an odd backend
            pass
    return tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=True)


def logits_warpers(temperature: float, top_k: int, top_p: float) -> list:
    """The warpers `generate(do_sample=True, ...)` applies, in its order."""
    from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                        TopPLogitsWarper)

    warpers: list = []
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(float(temperature)))
    if top_k and top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=int(top_k), min_tokens_to_keep=1))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=float(top_p), min_tokens_to_keep=1))
    return warpers


def _cache_keyword(model: Any) -> str:
    """transformers 5.24 renamed `past_key_values` to `cache` (the old name warns)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _decoder(model: Any) -> Any | None:
    """The transformer body without the LM head (LoRA layers included), if the model has one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    getter = getattr(base, "get_decoder", None)
    try:
        decoder = getter() if getter is not None else None
    except (AttributeError, NotImplementedError):
        return None
    return decoder if decoder is not None and decoder is not base else None


class ExactBf16Head:
    """The vocabulary head in bf16, made exact for top-k sampling.

    The bf16 product finds candidates; their logits are then recomputed in float32 from the
    float32 weights, and every other token gets -inf. A token of the true top-k always is a
    candidate. With h^ = bf16(h), w^ = bf16(w), u = 2^-8 and d the hidden size, a logit moves by
    at most ``b_in = |h - h^| max|w| + |h^| max|w - w^| + d 2^-24 |h^| max|w^|`` (rounding the
    inputs, then float32 accumulation) plus ``u (|logit| + b_in)`` (rounding the bf16 output);
    every logit that matters lies below the largest bf16 logit + b_in and above the k-th
    largest - b_in, so one margin b covers them all, and every true top-k token has a bf16
    logit >= (the k-th largest bf16 logit) - 2b. The top-k warper then keeps exactly the tokens
    float32 would keep, with float32 logits: what is sampled is float32 sampling. When more
    than MAX_CANDIDATES tokens fall inside the margin (a very flat distribution), that step
    uses the float32 head.
    """

    MAX_CANDIDATES = 4096  # per row; a step with more inside the margin uses the float32 head

    def __init__(self, weight: Any) -> None:
        import torch

        self.w32 = weight.detach()
        w16 = self.w32.to(torch.bfloat16)
        self.max_norm = float(self.w32.norm(dim=1).max())
        self.max_norm16 = float(w16.float().norm(dim=1).max())
        self.max_rounding = float((self.w32 - w16.float()).norm(dim=1).max())
        self.accumulation = self.w32.shape[1] * 2.0 ** -24
        # the bf16 product: oneDNN's packed inner product where available (same bf16 inputs,
        # float32 accumulation, bf16 output: the bound above holds), else a plain matmul
        self.w16, self.w16_packed = w16, None
        if packed.available():
            try:
                self.w16_packed = torch.ops.mkldnn._reorder_linear_weight(w16, 5)
                self.w16 = None
            except RuntimeError:  # pragma: no cover - a oneDNN without bf16 packing
                pass
        self.used = 0
        self.fallbacks = 0

    def approx(self, h16: Any) -> Any:
        """The bf16 logits (n, V) of bf16 hidden states."""
        if self.w16_packed is not None:
            return packed._op()(h16.contiguous(), self.w16_packed, None, "none", [], "")
        return h16 @ self.w16.T

    def __call__(self, hidden: Any, k: int) -> Any:
        """float32 logits (n, V): exact for the candidates, -inf elsewhere."""
        import torch

        h32 = hidden.float()
        h16 = hidden.to(torch.bfloat16)
        approx = self.approx(h16)
        h16f = h16.float()
        norm16 = h16f.norm(dim=1)
        b_in = ((h32 - h16f).norm(dim=1) * self.max_norm + norm16 * self.max_rounding
                + self.accumulation * norm16 * self.max_norm16)
        u = 2.0 ** -8
        k = max(1, min(int(k), approx.shape[1]))
        values = approx.topk(k, dim=1).values.float()
        size = torch.maximum(values[:, 0].abs(), values[:, k - 1].abs())
        margin = (b_in + u * (size + 2 * b_in)) * 1.01
        # only a token whose bf16 logit is within 2 * margin of the k-th largest can reach
        # the float32 top-k; the rest are below the float32 k-th logit, so the top-k warper
        # removes them anyway. nonzero() lists the candidates row by row in index order.
        rows, cols = (approx >= (values[:, k - 1] - 2 * margin)[:, None]).nonzero(as_tuple=True)
        if int(torch.bincount(rows, minlength=approx.shape[0]).max()) > self.MAX_CANDIDATES:
            self.fallbacks += 1
            return h32 @ self.w32.T
        self.used += 1
        exact = (self.w32[cols] * h32[rows]).sum(dim=1)
        out = torch.full(approx.shape, float("-inf"), dtype=torch.float32, device=approx.device)
        out[rows, cols] = exact
        return out


def exact_head_for(model: Any, top_k: int, enabled: bool | None = None) -> "ExactBf16Head | None":
    """An ExactBf16Head for a float32 model on a bf16-capable CPU with a plain linear head."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    config = getattr(model, "config", None)
    plain = (type(head) is torch.nn.Linear and head.bias is None
             and getattr(config, "final_logit_softcapping", None) is None
             and head.weight.dtype == torch.float32 and head.weight.device.type == "cpu")
    if not plain or top_k <= 0:
        return None
    if enabled is None:
        enabled = cpu_has_bf16()
    return ExactBf16Head(head.weight) if enabled else None


class SparseMultinomial:
    """`torch.multinomial(probs, 1)` for float32 rows that are mostly zero, drawing the same
    random numbers and returning the same tokens, without the per-token transcendental work.

    For one sample, torch (CPU) draws ``q = empty_like(probs).exponential_()`` (one 64-bit
    draw per element, in memory order: ``q = float(-log1p(-u))`` with ``u`` the low 53 bits
    times 2^-53) and returns ``argmax(probs / q)`` per row (first index on ties; NaN counts as
    the largest). Here the same 64-bit draws come from ``random_()`` on an int64 tensor (the
    same generator calls, no logarithm), and ``q`` is computed only where ``probs > 0``: every
    other quotient is 0, so the argmax is among those, in index order. A draw with ``u = 0``
    elsewhere would make a 0/0 = NaN that torch's argmax picks: such rows take the full path.
    `ok` is a self-check against torch.multinomial (tokens and the generator's state after)
    run once per process; where it fails (another torch), torch.multinomial is used.
    """

    MASK = (1 << 53) - 1
    _checked: bool | None = None

    @classmethod
    def ok(cls) -> bool:
        if cls._checked is None:
            import torch

            gen = torch.Generator().manual_seed(12345)
            probs = torch.rand(4, 3000, generator=gen)
            probs[probs < 0.97] = 0
            probs[1, :] = 0
            probs[1, 7] = probs[1, 2999] = 0.5  # a row with two equal candidates
            probs = probs / probs.sum(1, keepdim=True)
            state = gen.get_state()
            want = torch.multinomial(probs, 1, generator=gen).squeeze(1)
            after = torch.rand(3, generator=gen)
            gen.set_state(state)
            got = cls.sample(probs, gen)
            cls._checked = bool(torch.equal(want, got) and torch.equal(after, torch.rand(3, generator=gen)))
        return cls._checked

    @classmethod
    def sample(cls, probs: Any, generator: Any = None) -> Any:
        """(rows,) tokens; probs: (rows, V) float32 on the CPU, rows summing to > 0."""
        import torch

        rows, vocab = probs.shape
        draws = torch.empty(rows * vocab, dtype=torch.int64).random_(generator=generator)
        nz = probs.nonzero()  # (m, 2), row-major: index order within each row
        if nz.shape[0] * 4 > probs.numel():  # not sparse: nothing to gain
            return cls._full(probs, draws)
        row, col = nz[:, 0], nz[:, 1]
        values = probs[row, col]
        if not bool((torch.isfinite(values) & (values > 0)).all()):  # torch's own error
            return torch.multinomial(probs, 1).squeeze(1)
        u = (draws[row * vocab + col] & cls.MASK).double() * 2.0 ** -53
        ratio = values / (-torch.log1p(-u)).float()
        counts = torch.bincount(row, minlength=rows)
        starts = torch.cumsum(counts, 0) - counts
        dense = torch.full((rows, int(counts.max())), float("-inf"), dtype=ratio.dtype)
        dense[row, torch.arange(row.numel()) - starts[row]] = ratio
        token = col[starts + dense.argmax(dim=1)]
        zero = (draws.view(rows, vocab) & cls.MASK) == 0  # u = 0 somewhere: the rare full path
        if bool(zero.any()):
            return cls._full(probs, draws)
        return token

    @classmethod
    def _full(cls, probs: Any, draws: Any) -> Any:
        import torch

        if not bool((torch.isfinite(probs) & (probs >= 0)).all()):  # torch's own error
            return torch.multinomial(probs, 1).squeeze(1)
        u = (draws.view(probs.shape) & cls.MASK).double() * 2.0 ** -53
        return torch.argmax(probs / (-torch.log1p(-u)).float(), dim=1)


@dataclass
class GenerationResult:
    rows: list[list[int]]  # generated ids per row (up to and including the stop token)
    prompt_tokens: int
    prefilled: int  # prompt tokens actually run through the model (the rest came from the cache)
    timings: dict = field(default_factory=dict)  # seconds: prefill, decode


class PrefixKV:
    """KV caches at chunk boundaries of earlier prompts, for the next requests.

    Two kinds are kept: the one at the end of the part every request of an epoch shares
    (system message, worked examples, description; `stable`), and the deepest boundary the
    last prompt shared with the one before it. A request whose sorted history changes early
    then still starts from the stable part instead of from nothing. At most `SIZE` entries,
    the least recently used dropped first, except the last stable one (`pinned`): otherwise
    a few requests whose histories grow by appending leave only deeper boundaries behind.
    """

    SIZE = 3

    def __init__(self) -> None:
        self.entries: dict[tuple[int, ...], Any] = {}  # prompt ids up to a boundary -> cache
        self.previous: tuple[int, ...] = ()
        self.pinned: tuple[int, ...] = ()  # the entry at the end of the stable part

    def clear(self) -> None:
        self.entries, self.previous, self.pinned = {}, (), ()

    def deepest(self, ids: Sequence[int]) -> tuple[int, Any]:
        """(length, cache) of the deepest entry that is a proper prefix of `ids`, or (0, None)."""
        best: tuple[int, ...] = ()
        for key in self.entries:
            if len(best) < len(key) < len(ids) and tuple(ids[:len(key)]) == key:
                best = key
        if not best:
            return 0, None
        self.entries[best] = self.entries.pop(best)  # most recently used last
        return len(best), self.entries[best]

    def keep(self, ids: tuple[int, ...], cache: Any, stable: bool = False) -> None:
        self.entries.pop(ids, None)
        self.entries[ids] = copy.deepcopy(cache)
        if stable:
            self.pinned = ids
        while len(self.entries) > self.SIZE:
            self.entries.pop(next(key for key in self.entries if key != self.pinned))


def _shared(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class FastGenerator:
    """Samples n completions of one prompt (see the module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, *, stops: Sequence[str], eos_ids: set[int],
                 pad_token_id: int, chunk: int = 32, bf16_head: bool | None = None) -> None:
        if chunk < 1:
            raise ValueError("chunk must be positive")
        self.model = model
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.eos_ids = set(eos_ids)
        self.pad_token_id = int(pad_token_id)
        self.chunk = int(chunk)
        self.prefix = PrefixKV()
        self._table: Any = None
        self._kw: str | None = None
        self.bf16_head = bf16_head  # None: where the CPU has native bf16 (see ExactBf16Head)
        self._head: Any = False  # False: not decided yet for this model
        # finished rows leave the batch (cache rows dropped); False runs them on with the pad
        # token as generate does (what is sampled is the same either way; tests compare both)
        self.drop_finished = True
        # multinomial over the top-k survivors only, same draws and tokens (SparseMultinomial)
        self.sparse_sampling = True
        # CPU matmuls through oneDNN-packed weights (engine.ta.packed); False: nn.Linear as is
        self.pack_weights = True
        self.packs = packed.PackedLinears()

    def _forward(self, module: Any, ids: Any, cache: Any, **extra: Any) -> Any:
        if self._kw is None:
            self._kw = _cache_keyword(self.model)
        return module(input_ids=ids, use_cache=True, **{self._kw: cache}, **extra)

    def reset(self, model: Any | None = None) -> None:
        """Forget the cached prefix (the model or its adapter changed)."""
        if model is not None:
            self.model = model
            self._kw = None
            self._head = False
            self.packs.keep_only(model)  # a LoRA switch keeps the base weights' packs
        self.prefix.clear()

    def release(self) -> None:
        """Drop the model and everything made from it (the TA was closed)."""
        self.reset()
        self.model, self._head = None, False
        self.packs.clear()

    def _stop_table(self, vocab_size: int, device: Any) -> Any:
        if self._table is None or self._table.shape[0] != vocab_size:
            self._table = stop_token_table(self.tokenizer, vocab_size, self.stops, self.eos_ids)
        return self._table.to(device)

    def _new_cache(self) -> Any:
        return growing_cache(getattr(self.model, "config", None))

    def head(self, top_k: int) -> "ExactBf16Head | None":
        if self._head is False:
            self._head = exact_head_for(self.model, top_k, self.bf16_head)
        return self._head

    def _logits(self, ids: Any, cache: Any, decoder: Any, k: int) -> Any:
        """float32 next-token logits of the last position after feeding `ids`."""
        # the head keeps only the tokens that can reach the top-k: none without a top-k
        head = self._head if decoder is not None and k > 0 else None
        if head:
            hidden = self._forward(decoder, ids, cache).last_hidden_state[:, -1, :]
            return head(hidden, k)
        return self._forward(self.model, ids, cache, logits_to_keep=1).logits[:, -1, :].float()

    def _prefill(self, ids: list[int], device: Any, should_stop: StopCheck | None,
                 k: int, stable: int = 0) -> tuple[Any, Any, int]:
        """(cache, last-position logits, tokens run) for the prompt, reusing the shared prefix."""
        import torch

        total = len(ids)
        kept = self.prefix
        start, cache = kept.deepest(ids)
        cache = copy.deepcopy(cache) if cache is not None else self._new_cache()
        # boundaries to keep for the next requests: the end of the part the caller says is
        # stable, and the deepest chunk boundary this prompt shares with the previous one;
        # always short of the last token, which needs logits
        last = total - 1
        stable_at = (min(stable, last) // self.chunk) * self.chunk
        keep_at = {stable_at, (min(_shared(ids, kept.previous), last) // self.chunk) * self.chunk}
        keep_at = {b for b in keep_at if b > start}
        decoder = _decoder(self.model)
        pos, logits = start, None
        while pos < total:
            if should_stop is not None and should_stop():
                raise StopRun()
            end = min(total, (pos // self.chunk + 1) * self.chunk)
            piece = torch.tensor([ids[pos:end]], device=device)
            if end < total and decoder is not None:
                self._forward(decoder, piece, cache)
            else:
                logits = self._logits(piece, cache, decoder, k)
            pos = end
            if pos in keep_at:
                kept.keep(tuple(ids[:pos]), cache, stable=pos == stable_at)
        kept.previous = tuple(ids)
        return cache, logits, total - start

    def generate(self, prompt_ids: list[int], n: int, *, max_new_tokens: int, temperature: float,
                 top_k: int, top_p: float, should_stop: StopCheck | None = None,
                 stable: int = 0) -> GenerationResult:
        """n sampled completions (temperature > 0) or one greedy completion (temperature 0).

        The caller seeds torch's RNG (as for `generate`). `stable`: how many leading prompt
        tokens the caller expects the next requests to share (only where the prefix cache is
        cut; what is computed never depends on it).
        """
        with self.packs.patched(self.model if self.pack_weights else None):
            return self._generate(prompt_ids, n, max_new_tokens=max_new_tokens, temperature=temperature,
                                  top_k=top_k, top_p=top_p, should_stop=should_stop, stable=stable)

    def _generate(self, prompt_ids: list[int], n: int, *, max_new_tokens: int, temperature: float,
                  top_k: int, top_p: float, should_stop: StopCheck | None, stable: int) -> GenerationResult:
        import time

        import torch

        if not prompt_ids:
            raise ValueError("empty prompt")
        device = next(self.model.parameters()).device
        t0 = time.perf_counter()
        sample = temperature > 0
        k = int(top_k) if sample else 1
        if k > 0:
            self.head(k)
        decoder = _decoder(self.model)
        cache, logits, prefilled = self._prefill(list(prompt_ids), device, should_stop, k, stable)
        t1 = time.perf_counter()
        rows = n if sample else 1
        warpers = logits_warpers(temperature, top_k, top_p) if sample else []
        table = self._stop_table(logits.shape[-1], logits.device)
        if rows > 1:
            cache.batch_repeat_interleave(rows)
        logits = logits.float().expand(rows, -1)
        unfinished = torch.ones(rows, dtype=torch.bool, device=device)
        lengths = torch.full((rows,), max_new_tokens, dtype=torch.long, device=device)
        out = torch.empty((rows, max_new_tokens), dtype=torch.long, device=device)
        pad = torch.tensor(self.pad_token_id, device=device)
        # rows still generating, in order: the model (body, head, warpers, softmax) runs on
        # these only; the cache keeps only their rows
        live = torch.arange(rows, device=device)
        step = 0
        while True:
            scores = logits
            for warp in warpers:
                scores = warp(out[live, :step], scores)
            if sample:
                probs = torch.nn.functional.softmax(scores, dim=-1)
                if live.numel() < rows:
                    # finished rows still draw (a sure pad), so the random stream advances
                    # exactly as generate's multinomial over all rows makes it advance
                    full = torch.zeros((rows, probs.shape[1]), dtype=probs.dtype, device=device)
                    full[:, self.pad_token_id % probs.shape[1]] = 1.0
                    full[live] = probs
                    probs = full
                if self.sparse_sampling and probs.device.type == "cpu" and SparseMultinomial.ok():
                    token = SparseMultinomial.sample(probs)
                else:
                    token = torch.multinomial(probs, num_samples=1).squeeze(1)
            else:
                token = torch.full((rows,), self.pad_token_id, dtype=torch.long, device=device)
                token[live] = torch.argmax(scores, dim=-1)
            token = torch.where(unfinished, token, pad)
            out[:, step] = token
            ended = unfinished & table[token]
            lengths = torch.where(ended, step + 1, lengths)
            unfinished = unfinished & ~ended
            step += 1
            if step >= max_new_tokens:
                break
            alive = unfinished[live]
            count = int(alive.sum())  # one transfer per step
            if count == 0:
                break
            if count < live.numel() and self.drop_finished:
                keep = alive.nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                live = live[keep]
            if should_stop is not None and should_stop():
                raise StopRun()
            logits = self._logits(token[live][:, None], cache, decoder, k)
        lengths = lengths.clamp(max=step).tolist()
        generated = out[:, :step].tolist()
        t2 = time.perf_counter()
        return GenerationResult(rows=[g[:k] for g, k in zip(generated, lengths)],
                                prompt_tokens=len(prompt_ids), prefilled=prefilled,
                                timings={"prefill": t1 - t0, "decode": t2 - t1, "steps": step})
