"""Pick the torch device a run uses: "auto" prefers CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import shutil

import torch

from engine.errors import UsageError

_FIX = "set device to auto, cpu, cuda, cuda:N or mps (one that exists on this machine)"


def resolve_device(name: str) -> str:
    """Turn a configured device name into one torch can use, checking that it exists.

    "auto" -> "cuda" if a CUDA GPU is visible, else "mps" if available, else "cpu".
    "cuda" / "cuda:N" / "mps" / "cpu" are returned as given after checking availability.
    """
    value = (name or "auto").strip().lower()
    if value == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu"
    if value == "cpu":
        return "cpu"
    if value == "mps":
        if not _mps_available():
            raise UsageError("device 'mps' is not available on this machine", _FIX)
        return "mps"
    if value == "cuda" or value.startswith("cuda:"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"device {name!r} requested but no CUDA GPU is visible to torch", _FIX)
        if value == "cuda":
            return "cuda"
        index_text = value.split(":", 1)[1]
        if not (index_text.isascii() and index_text.isdigit()):  # int("²") fails
            raise UsageError(f"device {name!r} is not a valid CUDA device name", _FIX)
        index = int(index_text)
        if index >= count:
            raise UsageError(
                f"device {name!r} does not exist: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}", _FIX)
        return f"cuda:{index}"
    raise UsageError(f"unknown device {name!r}", _FIX)


def device_label(device: str, amp: bool | None = None) -> str:
    """A human-readable name for a resolved device, e.g. "cuda:0 (NVIDIA H200, bf16 autocast)"
    or "cpu". `amp`: the run's student.amp setting, to name the precision (None: not named)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        parts = [torch.cuda.get_device_name(index)]
        if amp is not None:
            dtype = amp_dtype(device, amp)
            parts.append(f"{str(dtype).replace('torch.', '')} autocast" if dtype else "fp32")
        return f"cuda:{index} ({', '.join(parts)})"
    return device


def amp_dtype(device: str, enabled: bool = True) -> torch.dtype | None:
    """The autocast dtype for mixed precision on `device`, or None for full fp32.

    Only CUDA gets mixed precision: bf16 where the GPU computes it natively (compute
    capability 8.0+: A100, H100, RTX 30xx...), else fp16 (which needs a GradScaler when
    training). torch counts emulated bf16 as supported by default, which would give T4/V100
    slow emulated bf16 and never the fp16 path: emulation is excluded here.
    """
    if not enabled or not device.startswith("cuda"):
        return None
    with torch.cuda.device(torch.device(device)):
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if native else torch.float16


#: student.eval_batch_size = 0 ("auto") scores this many rows per forward pass
AUTO_EVAL_BATCH = {"cuda": 256, "default": 64}


def eval_batch_size(configured: int, device: str) -> int:
    """The scoring batch a student uses: the configured size, or for 0 ("auto") a device
    default: 256 rows on CUDA (small encoders are launch-bound there), 64 elsewhere."""
    if configured > 0:
        return configured
    return AUTO_EVAL_BATCH["cuda" if device.startswith("cuda") else "default"]


def cuda_unavailable_reason() -> str | None:
    """Why a machine with an NVIDIA driver runs on the CPU, or None when that is not the case.

    `nvidia-smi` on PATH means a GPU and a driver are installed; if torch still sees no CUDA
    device, the torch wheel is a CPU build or is newer than the driver supports, and a run
    would silently train on the CPU."""
    if shutil.which("nvidia-smi") is None or torch.cuda.is_available():
        return None
    build = torch.version.cuda
    if build is None:
        why = f"this torch {torch.__version__} is a CPU-only build"
        fix = ('install a CUDA build, e.g. make setup TORCH_SPEC="torch==2.13.0 --index-url '
               'https://download.pytorch.org/whl/cu128"')
    else:
        why = f"torch {torch.__version__} (CUDA {build}) cannot use the installed NVIDIA driver"
        fix = "update the NVIDIA driver, or install a torch build for an older CUDA with TORCH_SPEC"
    return f"nvidia-smi is present but torch sees no CUDA device: {why}; running on the CPU. Fix: {fix}"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
