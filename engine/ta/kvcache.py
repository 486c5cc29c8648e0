"""A KV cache for the TA's decode loop that appends in place.

transformers' `DynamicCache` concatenates every layer's keys and values with the new token's on
every step: a copy of the whole cache per layer per step. At the TA's request shape (5 rows, a
prompt of ~600 tokens, Gemma 3 270M's 18 layers) that copy is a few percent of a decode step
on the CPU (body 73.4 -> 69.4 CPU ms per step without it; BENCHMARKS.md, `ta-cpu-r4`). Here
each layer keeps a buffer with room to spare and writes the new states after the valid region;
the tensors handed to attention are views of the buffer holding exactly the values (in the
same order) the concatenation would return, so attention computes the same numbers. Sliding-window layers keep the last
`sliding_window - 1` tokens, as `DynamicSlidingWindowLayer` does, by moving the view's start.
"""

from __future__ import annotations

import functools
from typing import Any

RESERVE = 64  # tokens of room a fresh buffer gets beyond what it holds


def _append(layer: Any, new_k: Any, new_v: Any, reserve: int = RESERVE) -> tuple[Any, Any]:
    """(keys, values) of `layer` followed by the new states, as views of preallocated buffers.

    The same values `torch.cat([layer.keys, new], -2)` returns, without copying the cache on
    every step: only when the room runs out (or the cache was replaced, e.g. by a batch repeat,
    a row selection or a deepcopy) is the valid region copied into a new buffer.
    """
    keys, values = layer.keys, layer.values
    have = keys.shape[-2] if keys is not None and keys.dim() == 4 else 0
    total = have + new_k.shape[-2]
    kbuf, vbuf, start = getattr(layer, "_kbuf", None), getattr(layer, "_vbuf", None), getattr(layer, "_start", 0)
    fits = (kbuf is not None and have > 0 and start + total <= kbuf.shape[-2]
            and kbuf.shape[:2] == new_k.shape[:2] and kbuf.shape[-1] == new_k.shape[-1]
            and vbuf.shape[:2] == new_v.shape[:2] and vbuf.shape[-1] == new_v.shape[-1]
            and kbuf.dtype == new_k.dtype and vbuf.dtype == new_v.dtype and kbuf.device == new_k.device
            and keys.stride() == kbuf.stride() and values.stride() == vbuf.stride()
            and keys.data_ptr() == kbuf[:, :, start].data_ptr()
            and values.data_ptr() == vbuf[:, :, start].data_ptr())
    if not fits:  # a fresh buffer
        b, h, _, d = new_k.shape
        kbuf = new_k.new_empty((b, h, total + reserve, d))
        vbuf = new_v.new_empty((b, h, total + reserve, new_v.shape[-1]))
        if have:
            kbuf[:, :, :have].copy_(keys)
            vbuf[:, :, :have].copy_(values)
        start = 0
    kbuf[:, :, start + have:start + total].copy_(new_k)
    vbuf[:, :, start + have:start + total].copy_(new_v)
    layer._kbuf, layer._vbuf, layer._start = kbuf, vbuf, start
    return kbuf[:, :, start:start + total], vbuf[:, :, start:start + total]


@functools.lru_cache(maxsize=None)
def _growing_layers() -> tuple[type, type]:
    """transformers' dynamic cache layers, with `_append` instead of a concatenation per step."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    class GrowingLayer(DynamicLayer):
        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            self.keys, self.values = _append(self, key_states, value_states)
            return self.keys, self.values

    class GrowingSlidingLayer(DynamicSlidingWindowLayer):
        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if self.record_past:  # pragma: no cover - assisted decoding only
                return super().update(key_states, value_states, *args, **kwargs)
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            self.cumulative_length += key_states.shape[-2]
            full_k, full_v = _append(self, key_states, value_states)
            # keep the last `sliding_window - 1` tokens, as DynamicSlidingWindowLayer does
            drop = max(0, full_k.shape[-2] - (self.sliding_window - 1))
            self.keys, self.values = full_k[:, :, drop:], full_v[:, :, drop:]
            self._start += drop
            return full_k, full_v

    return GrowingLayer, GrowingSlidingLayer


def growing_cache(config: Any) -> Any:
    """A `DynamicCache` for `config` whose plain and sliding-window layers append in place;
    layer kinds it does not know are kept as transformers builds them."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    try:
        cache = DynamicCache(config=config)
    except TypeError:  # pragma: no cover - older transformers
        return DynamicCache()
    if config is None or not getattr(cache, "layers", None):
        return cache
    growing, sliding = _growing_layers()
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            cache.layers[i] = growing()
        elif type(layer) is DynamicSlidingWindowLayer:
            cache.layers[i] = sliding(sliding_window=layer.sliding_window)
    return cache
