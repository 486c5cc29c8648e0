"""oneDNN-packed weights for the TA's skinny matmuls on the CPU.

A decode step multiplies a handful of rows (the l completions of a request) by every weight
matrix of the model. `nn.Linear` sends that to MKL's sgemm, which on this CPU runs such skinny
products at 4-6 GB/s of weights (8 rows; BENCHMARKS.md, `ta-cpu-r4`). oneDNN's inner product
with the weights reordered once into its blocked layout (`torch.ops.mkldnn._reorder_linear_weight`,
the layout inductor's CPU "freezing" uses) runs Gemma 3 270M's decode-step body 1.7x faster at
5 rows (69 -> 41 CPU ms, same section).

The arithmetic stays the model's own: float32 weights give a float32 product (oneDNN's default
fp32 math mode, no implicit bf16 or tf32), bf16 weights a bf16 one accumulated in float32. Only
the order of the float32 additions differs from MKL's, so results move by float32 rounding
(relative ~1e-6); `bench.ta` states the largest per-token log-likelihood difference this makes
to the sampled texts. The packing is deterministic: the same input gives the same bits on the
same machine, so resumed runs stay exact.

Memory: each packed weight is a second copy, kept while the model is open. For Gemma 3 270M
that is ~0.4 GB for the transformer body; where the float32 vocabulary head runs (a CPU without
native bf16, or a request without top-k) the tied 262k x 640 head adds ~0.67 GB, for a head
product about 4x faster at 5 rows.

`PackedLinears.patched(module)` routes every eligible `nn.Linear` under `module` through its
packed weight while the context is open (inference only: the packed op has no backward), and
restores the modules on exit. Packs are made on first use and reused while the weight tensor is
the same object at the same version; LoRA layers wrapping a base `nn.Linear` keep working (their
base layer is routed, their own small layers too).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator

_OK: bool | None = None


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX-512-BF16 or AMX): a fixed fact of the
    machine, so the choice it drives never changes between two runs on it."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return False
    return any(flag in text.split() for flag in ("avx512_bf16", "amx_bf16"))


def _op() -> Any:
    import torch

    return torch.ops.mkldnn._linear_pointwise


def available() -> bool:
    """Whether this torch has oneDNN's packed linear and it agrees with `F.linear` (checked
    once per process on a small random problem, float32 and, where packed, bf16)."""
    global _OK
    if _OK is None:
        _OK = _self_check()
    return _OK


def _self_check() -> bool:
    try:
        import torch

        if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
            return False
        gen = torch.Generator().manual_seed(7)
        w = torch.randn(96, 80, generator=gen) / 9
        b = torch.randn(96, generator=gen)
        with torch.inference_mode():
            for rows in (1, 5, 33):
                x = torch.randn(rows, 1, 80, generator=gen)
                want = torch.nn.functional.linear(x, w, b)
                got = _op()(x, torch.ops.mkldnn._reorder_linear_weight(w, 5), b, "none", [], "")
                if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-5, atol=1e-5):
                    return False
        return True
    except Exception:  # noqa: BLE001 - any failure means: do not use it
        return False


class PackedLinears:
    """Packed copies of `nn.Linear` weights, made on first use (see the module docstring)."""

    def __init__(self, rows_hint: int = 5) -> None:
        self.rows_hint = int(rows_hint)
        self._packs: dict[int, tuple[Any, int, Any]] = {}  # id(module) -> (weight, version, packed)
        self.refused: set[int] = set()  # id(module) of linears oneDNN failed on (F.linear for them)

    def clear(self) -> None:
        self._packs.clear()
        self.refused.clear()

    def keep_only(self, model: Any) -> None:
        """Forget packs whose weight is not a parameter of `model` (it was replaced)."""
        if model is None:
            self.clear()
            return
        live = {id(p) for p in model.parameters()}
        self._packs = {k: v for k, v in self._packs.items() if id(v[0]) in live}

    @staticmethod
    def eligible(module: Any) -> bool:
        import torch

        if type(module) is not torch.nn.Linear:
            return False
        w = module.weight
        if w.device.type != "cpu" or w.dim() != 2 or w.dtype not in (torch.float32, torch.bfloat16):
            return False
        if w.dtype == torch.bfloat16 and not cpu_has_bf16():  # packed bf16 only where native
            return False
        b = module.bias
        return b is None or (b.dtype == w.dtype and b.device == w.device)

    def packed(self, module: Any) -> Any:
        import torch

        weight = module.weight
        entry = self._packs.get(id(module))
        if entry is not None and entry[0] is weight and entry[1] == weight._version:
            return entry[2]
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), self.rows_hint)
        self._packs[id(module)] = (weight, weight._version, packed)
        return packed

    def forward_for(self, module: Any) -> Any:
        """A forward for `module` that multiplies by its packed weight, packed at the first call
        (F.linear where the input is not the weight's dtype, e.g. under autocast, or where
        autograd needs a backward, which the packed op lacks)."""
        import torch

        op = _op()

        def forward(x: Any) -> Any:
            weight, bias = module.weight, module.bias
            grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                                or (bias is not None and bias.requires_grad))
            if x.dtype != weight.dtype or x.device.type != "cpu" or grad or id(module) in self.refused:
                return torch.nn.functional.linear(x, weight, bias)  # autocast, autograd
            try:
                return op(x.contiguous(), self.packed(module), bias, "none", [], "")
            except RuntimeError:  # a shape or layout this oneDNN will not pack: nn.Linear's way
                self.refused.add(id(module))
                return torch.nn.functional.linear(x, weight, bias)

        return forward

    @contextlib.contextmanager
    def patched(self, module: Any) -> Iterator[int]:
        """Every eligible `nn.Linear` under `module` multiplies by its packed weight inside the
        context; yields how many were routed (0 where packing is unavailable)."""
        routed: list[Any] = []
        try:
            if module is not None and available():
                for sub in module.modules():
                    if self.eligible(sub) and "forward" not in sub.__dict__:
                        sub.forward = self.forward_for(sub)
                        routed.append(sub)
            yield len(routed)
        finally:
            for sub in routed:
                sub.__dict__.pop("forward", None)
