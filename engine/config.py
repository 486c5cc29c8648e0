"""Run configuration: typed dataclasses, presets, TOML loading with strict validation.

Layering: dataclass defaults  <-  preset  <-  TOML file  <-  command-line overrides.
`RunConfig.to_dict()` is what sessions persist; it never contains secrets.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from engine.errors import ConfigError
from engine.tasks import METRICS, TUNINGS, check_metric, default_metric

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODES = ("baseline", "gpta", "gpta-data", "frozen-ta", "random-prefix", "static-prefix")
#: What each mode isolates (README "Control arms"):
#:   frozen-ta      GPTA with the TA never fine-tuned (no dialogue gradients; OPRO-style)
#:   random-prefix  GPTA's scoring and selection budget spent on prefixes of random words
#:   static-prefix  one fixed instruction built from the label names; no TA, no best-of-k
MODES_WITH_TA = ("gpta", "gpta-data", "frozen-ta")
MODES_TUNING_TA = ("gpta", "gpta-data")
TA_BACKENDS = ("local", "openai", "scripted")
#: the local TA's weight dtype; "auto": bf16 on a GPU with native bf16, float32 elsewhere.
#: No float16: Gemma 3 overflows in it.
TA_DTYPES = ("auto", "float32", "bfloat16")
FINETUNE_BACKENDS = ("auto", "none", "local", "openai")
LT_OBJECTIVES = ("softmax", "binary")
LT_MAPS = ("pooled", "token")
#: student.lr when no layer (preset, TOML, flag) sets it: full fine-tuning moves pretrained
#: weights a little; the frozen-encoder tunings train new maps from scratch and need far larger
#: steps. The prefix maps (lt-prefix, prefix) end in per-layer keys and values that no LayerNorm
#: rescales, and Adam moves each of the 384 weights feeding an output by about lr per step, so
#: they take 10x less than the prompt maps (whose output passes the embedding LayerNorm):
#: lt-prefix at 1e-2 diverged on MiniLM (docs/LTUNING_RESULTS.md). The resolved value is what
#: the config records.
DEFAULT_LR = {"full": 2e-5, "lt-prefix": 1e-3, "lt-prompt": 1e-2, "prefix": 1e-3, "prompt": 3e-2}
SECRET_FIELDS = {"api_key"}


@dataclass
class DataConfig:
    dataset: str = "twitter-sentiment"
    task: str = "classification"
    text_column: str = ""
    label_column: str = ""
    label_names: list[str] = field(default_factory=list)
    train_split: str = ""
    eval_split: str = ""
    train_size: int = 2000
    val_size: int = 100
    test_size: int = 1000
    # Rows that choose the checkpoint and the prefix sent to test, disjoint from validation
    # (which ranks the TA's prefixes) and from test. 0 = choose on validation.
    selection_size: int = 100
    description: str = ""
    exemplars: int = 3


@dataclass
class StudentConfig:
    model: str = "all-MiniLM-L6-v2"
    tuning: str = "full"
    lr: float = 2e-5
    weight_decay: float = 0.01
    batch_size: int = 16
    eval_batch_size: int = 0    # rows per scoring pass; 0 = auto: 256 on CUDA, 64 elsewhere
    max_length: int = 96
    warmup_ratio: float = 0.0
    grad_clip: float = 1.0
    metric: str = "accuracy"  # build_config/from_dict use the task's default when unset
    amp: bool = True
    checkpoint_every: int = 50
    # L-Tuning (tuning = lt-prefix | lt-prompt): how a label name becomes the text the frozen
    # model encodes; the objective (softmax: cross-entropy over all K label-match scores;
    # binary: the paper's (text, label) framing, `negatives` sampled wrong labels per example,
    # positives and negatives balanced per label); the label map (pooled: attention pooling
    # into a fixed number of slots + MLP; token: the paper's linear map of every label token,
    # prefix length = label length)
    verbalizer: str = "The text has {label} sentiment."
    negatives: int = 1
    lt_objective: str = "softmax"
    lt_map: str = "pooled"
    num_beams: int = 4          # summarization: beam search width
    gen_max_length: int = 64    # summarization: longest generated / reference summary (tokens)
    doc_stride: int = 128       # extractive QA: context tokens shared by consecutive windows


@dataclass
class TAConfig:
    backend: str = "local"
    model: str = "gemma-3-270m"
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    api_key: str = field(default="", repr=False)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 48
    # local TA weights: "auto" (bf16 on a GPU with native bf16, float32 elsewhere), "float32"
    # or "bfloat16" (half the weight memory, not the float32 distribution, and on a CPU no
    # faster than the float32 fast path: BENCHMARKS.md, section ta-cpu-bf16)
    dtype: str = "auto"
    max_prefix_words: int = 40
    max_prefix_chars: int = 240
    # A prefix this similar (0..1, normalised) to a worked example of the TA's own prompt is
    # rejected as a copy; 1.0 rejects exact copies only.
    copy_similarity: float = 0.8
    # Your own TA wording (engine.prompts.PromptTemplate; empty keeps the built-in one), e.g.
    # the paper's Table 4 wording, which is not shipped: README "Your own TA wording".
    system_template: str = ""
    user_template: str = ""
    history_item_template: str = ""
    retries: int = 3
    timeout_s: float = 60.0
    max_tokens_budget: int = 0      # 0 = unlimited
    max_cost: float = 0.0           # 0 = unlimited, in the currency of the prices below
    price_input_per_1m: float = 0.0   # price per million prompt tokens
    price_output_per_1m: float = 0.0  # price per million completion tokens


@dataclass
class FinetuneConfig:
    backend: str = "auto"  # auto: local LoRA for a local TA, none otherwise (paid jobs are opt-in)
    model: str = ""
    max_windows: int = 50
    epochs: int = 2
    lr: float = 2e-4
    batch_size: int = 4
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    suffix: str = "gpta"
    timeout_s: float = 3600.0
    poll_interval_s: float = 5.0


@dataclass
class LoopConfig:
    epochs: int = 3
    k: int = 20
    l: int = 5
    window: int = 5
    max_requests_per_epoch: int = 0  # 0 = automatic: 3 * ceil(k / l) + 2
    # How many of an epoch's best validation prefixes are re-scored on the selection split
    # (with "no prefix") to choose the checkpoint and the prefix sent to test.
    selection_top: int = 3
    # Prefix transfer (paper 5.3): prefixes found on another dataset. The first is the initial
    # training prefix (no s0 TA call), the rest are the first history candidates; with
    # fixed_prefix every epoch trains with the first one and the TA is never used.
    seed_prefixes: list[str] = field(default_factory=list)
    fixed_prefix: bool = False


@dataclass
class RunConfig:
    name: str = ""
    mode: str = "gpta"
    seed: int = 42
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    ta: TAConfig = field(default_factory=TAConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)

    # ---- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data for persistence and export. Secrets are never included."""
        out = dataclasses.asdict(self)
        for section in out.values():
            if isinstance(section, dict):
                for key in SECRET_FIELDS:
                    section.pop(key, None)
        out["ta"]["base_url"] = strip_url_credentials(out["ta"].get("base_url", ""))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "RunConfig":
        cfg = cls()
        apply_mapping(cfg, data, source)
        _default_metric_unless_given(cfg, data)
        _default_lr_unless_given(cfg, data)
        cfg.validate()
        return cfg

    def copy(self) -> "RunConfig":
        return copy.deepcopy(self)

    # ---- validation ----------------------------------------------------------------
    def validate(self) -> "RunConfig":
        def bad(key: str, value: Any, fix: str) -> ConfigError:
            return ConfigError(f"invalid value {value!r} for {key}", fix)

        if self.mode not in MODES:
            raise bad("mode", self.mode, f"use one of {', '.join(MODES)}")
        if self.ta.backend not in TA_BACKENDS:
            raise bad("ta.backend", self.ta.backend, f"use one of {', '.join(TA_BACKENDS)}")
        if self.ta.dtype not in TA_DTYPES:
            raise bad("ta.dtype", self.ta.dtype, f"use one of {', '.join(TA_DTYPES)}")
        if self.finetune.backend not in FINETUNE_BACKENDS:
            raise bad("finetune.backend", self.finetune.backend,
                      f"use one of {', '.join(FINETUNE_BACKENDS)}")
        if self.student.tuning not in TUNINGS:
            raise bad("student.tuning", self.student.tuning, f"use one of {', '.join(TUNINGS)}")
        if self.student.lt_objective not in LT_OBJECTIVES:
            raise bad("student.lt_objective", self.student.lt_objective,
                      f"use one of {', '.join(LT_OBJECTIVES)}")
        if self.student.lt_map not in LT_MAPS:
            raise bad("student.lt_map", self.student.lt_map, f"use one of {', '.join(LT_MAPS)}")
        if self.student.metric not in METRICS:
            raise bad("student.metric", self.student.metric, f"use one of {', '.join(METRICS)}")
        check_metric(self.data.task, self.student.metric)  # also rejects an unknown data.task
        positives = {
            "data.train_size": self.data.train_size, "data.val_size": self.data.val_size,
            "data.test_size": self.data.test_size, "loop.epochs": self.loop.epochs,
            "loop.k": self.loop.k, "loop.l": self.loop.l, "loop.window": self.loop.window,
            "student.batch_size": self.student.batch_size,
            "student.max_length": self.student.max_length,
            "student.checkpoint_every": self.student.checkpoint_every,
            "student.negatives": self.student.negatives,
            "ta.max_new_tokens": self.ta.max_new_tokens,
            "ta.max_prefix_words": self.ta.max_prefix_words,
            "ta.max_prefix_chars": self.ta.max_prefix_chars,
            "finetune.max_windows": self.finetune.max_windows,
            "finetune.epochs": self.finetune.epochs, "finetune.batch_size": self.finetune.batch_size,
            "finetune.lora_r": self.finetune.lora_r,
            "student.num_beams": self.student.num_beams,
            "loop.selection_top": self.loop.selection_top,
            "student.gen_max_length": self.student.gen_max_length,
        }
        for key, value in positives.items():
            if value <= 0:
                raise bad(key, value, "use a number greater than 0")
        if self.loop.window >= self.loop.k:
            raise bad("loop.window", self.loop.window,
                      f"use a window smaller than loop.k ({self.loop.k}) so that windows exist")
        if any(not p.strip() for p in self.loop.seed_prefixes):
            raise bad("loop.seed_prefixes", self.loop.seed_prefixes,
                      "remove the empty prefixes from the list")
        if self.loop.fixed_prefix and not self.loop.seed_prefixes:
            raise bad("loop.fixed_prefix", True,
                      "give the prefix to train with in loop.seed_prefixes (gpta run --seed-prefixes FILE)")
        if not 0 <= self.ta.temperature <= 2:
            raise bad("ta.temperature", self.ta.temperature, "use a value between 0 and 2")
        if self.student.lr <= 0:
            raise bad("student.lr", self.student.lr, "use a positive learning rate such as 2e-5")
        if self.ta.retries < 0:
            raise bad("ta.retries", self.ta.retries, "use 0 or more")
        if self.student.eval_batch_size < 0:
            raise bad("student.eval_batch_size", self.student.eval_batch_size,
                      "use 0 (auto: 256 on CUDA, 64 elsewhere) or a positive number of rows")
        if self.student.doc_stride < 0:
            raise bad("student.doc_stride", self.student.doc_stride, "use 0 or more")
        if self.data.selection_size < 0:
            raise bad("data.selection_size", self.data.selection_size,
                      "use 0 (choose on validation) or more rows")
        if not 0 < self.ta.copy_similarity <= 1:
            raise bad("ta.copy_similarity", self.ta.copy_similarity, "use a value in (0, 1]")
        from engine.prompts import PromptTemplate

        template = PromptTemplate.from_config(self.ta)  # ConfigError naming the template and the fix
        if self.data.exemplars < 0:
            raise bad("data.exemplars", self.data.exemplars, "use 0 or more")
        if self.mode == "gpta-data" and self.data.exemplars:
            template.check_shows_exemplars()
        if self.device not in ("auto", "cpu", "mps") and not self.device.startswith("cuda"):
            raise bad("device", self.device, "use auto, cpu, cuda, cuda:N or mps")
        return self

    @property
    def uses_ta(self) -> bool:
        """Whether a teaching assistant writes this run's prefixes."""
        return self.mode in MODES_WITH_TA and not self.loop.fixed_prefix

    @property
    def collects(self) -> bool:
        """Whether each epoch collects a scored history of k prefixes (TA or random words)."""
        return self.uses_ta or (self.mode == "random-prefix" and not self.loop.fixed_prefix)

    @property
    def finetune_backend(self) -> str:
        """finetune.backend with "auto" resolved: a local TA is tuned with local LoRA; an
        OpenAI TA only when asked explicitly (jobs cost money); the scripted TA never.
        Arms that never tune a TA (baseline, frozen-ta and the other controls) get "none"."""
        if self.mode not in MODES_TUNING_TA or not self.uses_ta:
            return "none"
        if self.finetune.backend != "auto":
            return self.finetune.backend
        return "local" if self.ta.backend == "local" else "none"

    @property
    def max_requests_per_epoch(self) -> int:
        if self.loop.max_requests_per_epoch > 0:
            return self.loop.max_requests_per_epoch
        return 3 * -(-self.loop.k // self.loop.l) + 2


PRESETS: dict[str, dict[str, Any]] = {
    # The whole loop on the real offline defaults in a few minutes on 2 CPU cores.
    "smoke": {
        "data": {"train_size": 192, "val_size": 48, "test_size": 96, "selection_size": 48},
        "student": {"max_length": 64, "batch_size": 16, "checkpoint_every": 4},
        "ta": {"max_new_tokens": 24},
        "loop": {"epochs": 2, "k": 6, "l": 3, "window": 2, "max_requests_per_epoch": 3},
        "finetune": {"epochs": 1, "batch_size": 2},
    },
    # CPU-friendly but meaningful: the dataclass defaults.
    "default": {},
    # The paper's sizes (Liu & Zhang 2024, section 4: low-resource 10k train, 100 validation,
    # 1,000 test, k=50, w=5, 5 epochs) with the offline default models.
    "paper-sizes": {
        "data": {"train_size": 10000, "val_size": 100, "test_size": 1000},
        "student": {"max_length": 128, "batch_size": 16},
        "loop": {"epochs": 5, "k": 50, "l": 5, "window": 5},
    },
}
# The paper's setting, models included: a BERT-base student (BART-base for summarization; see
# build_config) and an OpenAI TA tuned by OpenAI fine-tuning jobs. Needs the Hub and a key:
# `paper_preset_problem` says in one line what is missing.
PRESETS["paper"] = copy.deepcopy(PRESETS["paper-sizes"])
PRESETS["paper"]["student"]["model"] = "bert-base-uncased"
PRESETS["paper"]["ta"] = {"backend": "openai", "model": "gpt-4o-mini-2024-07-18"}
PRESETS["paper"]["finetune"] = {"backend": "openai"}
PAPER_SEQ2SEQ_STUDENT = "facebook/bart-base"


def strip_url_credentials(url: str) -> str:
    """`url` without a user:password@ part (kept in memory for the client, never stored)."""
    if not isinstance(url, str) or "@" not in url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _section_types(obj: Any) -> dict[str, Any]:
    return typing.get_type_hints(type(obj))


def _coerce(key: str, value: Any, typ: Any, source: str) -> Any:
    origin = typing.get_origin(typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{source}: {key} must be a finite number, got {value!r}",
                                  f"give {key} an ordinary number (not nan or inf)")
            return float(value)
    elif typ is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        typ_name = "a list of strings"
        raise ConfigError(f"{source}: {key} must be {typ_name}, got {value!r}",
                          f"write {key} = [\"a\", \"b\"]")
    name = getattr(typ, "__name__", str(typ))
    raise ConfigError(f"{source}: {key} must be of type {name}, got {type(value).__name__} {value!r}",
                      f"give {key} a {name} value")


def apply_mapping(cfg: RunConfig, data: dict[str, Any], source: str = "config") -> RunConfig:
    """Apply a nested mapping (TOML-shaped) onto cfg, rejecting unknown keys and wrong types."""
    top_types = _section_types(cfg)
    for key, value in data.items():
        if key == "preset":
            continue
        if key not in top_types:
            known = ", ".join(sorted([*top_types, "preset"]))
            raise ConfigError(f"{source}: unknown key {key!r}", f"use one of: {known}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {key} must be a table",
                                  f"write it as a [{key}] section")
            types = _section_types(current)
            for sub, subval in value.items():
                if sub not in types:
                    known = ", ".join(sorted(types))
                    raise ConfigError(f"{source}: unknown key {key}.{sub!r}",
                                      f"use one of: {known}")
                setattr(current, sub, _coerce(f"{key}.{sub}", subval, types[sub], source))
        else:
            setattr(cfg, key, _coerce(key, value, top_types[key], source))
    return cfg


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist", "pass the path of a TOML file")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML ({exc})",
                          "fix the syntax at the position shown") from None


def build_config(preset: str | None = None, file: str | Path | None = None,
                 overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults <- preset <- TOML file <- overrides (a nested mapping, e.g. from CLI flags)."""
    file_data = load_toml(file) if file else {}
    chosen = preset or file_data.get("preset") or "default"
    if not isinstance(chosen, str) or chosen not in PRESETS:
        raise ConfigError(f"unknown preset {chosen!r}", f"use one of {', '.join(PRESETS)}")
    cfg = RunConfig()
    apply_mapping(cfg, PRESETS[chosen], f"preset {chosen}")
    if file_data:
        apply_mapping(cfg, file_data, str(file))
    if overrides:
        apply_mapping(cfg, overrides, "command line")
    layers = (PRESETS[chosen], file_data, overrides or {})
    _default_metric_unless_given(cfg, *layers)
    _default_lr_unless_given(cfg, *layers)
    if chosen == "paper" and cfg.data.task == "summarization" and not _given(
            "model", (file_data, overrides or {})):
        cfg.student.model = PAPER_SEQ2SEQ_STUDENT
    return cfg.validate()


def _given(key: str, layers: tuple[dict[str, Any], ...]) -> bool:
    """Whether any layer sets student.<key>."""
    return any(isinstance(layer.get("student"), dict) and key in layer["student"]
               for layer in layers)


def paper_preset_problem(cfg: RunConfig) -> str | None:
    """One line on what the `paper` preset's models need and this machine lacks, or None."""
    import os

    from engine.resources import looks_like_path

    missing = []
    if cfg.ta.backend == "openai" and not (cfg.ta.api_key or os.environ.get(cfg.ta.api_key_env)):
        missing.append(f"an OpenAI API key (${cfg.ta.api_key_env}) for the TA "
                       f"{cfg.ta.model} and its fine-tuning jobs")
    if not looks_like_path(cfg.student.model):
        from engine.data import hub_offline, hub_reachable

        if hub_offline() or not hub_reachable():
            missing.append(f"the Hugging Face Hub for the student {cfg.student.model}")
    if not missing:
        return None
    return ("preset paper needs " + " and ".join(missing) + "; offline, --preset paper-sizes "
            "runs the paper's sizes with the offline default models")


def _default_metric_unless_given(cfg: RunConfig, *layers: dict[str, Any]) -> None:
    """Rank by the task's default metric (engine.tasks) unless a layer sets student.metric."""
    if not _given("metric", layers):
        cfg.student.metric = default_metric(cfg.data.task)


def _default_lr_unless_given(cfg: RunConfig, *layers: dict[str, Any]) -> None:
    """Train with the tuning's own learning rate (DEFAULT_LR) unless a layer sets student.lr.
    The resolved value is stored in the config, so sessions, exports and resume keep it."""
    if not _given("lr", layers):
        cfg.student.lr = DEFAULT_LR.get(cfg.student.tuning, cfg.student.lr)
