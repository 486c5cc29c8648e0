"""The new-session form's model: field values (strings) <-> a validated RunConfig.

Pure Python, no Textual. Every value is validated through `engine.config.build_config`, and a
`ConfigError` is mapped back to the field it names so the screen can show it in place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from engine.config import FINETUNE_BACKENDS, MODES, PRESETS, TA_BACKENDS, RunConfig, build_config
from engine.errors import ConfigError
from engine.paths import SESSION_NAME_RE
from engine.resources import looks_like_path

NAME_RE = SESSION_NAME_RE  # the store's rule, defined once in engine/paths.py


@dataclass(frozen=True)
class Field:
    id: str
    label: str
    key: str        # dotted config key ("" for non-config fields)
    kind: str       # text | int | choice | multiline
    help: str = ""
    choices: tuple[str, ...] = ()


FIELDS: tuple[Field, ...] = (
    Field("name", "Session name", "name", "text", "letters, digits, . _ -"),
    Field("preset", "Preset", "", "choice", "smoke: minutes on CPU · default · paper: the paper's sizes",
          tuple(PRESETS)),
    Field("mode", "Mode", "mode", "choice", "baseline: no TA · gpta · gpta-data: TA also sees exemplars",
          MODES),
    Field("dataset", "Dataset", "data.dataset", "text",
          "twitter-sentiment (built-in, offline), a Hugging Face dataset name, or a CSV/TSV/JSON/"
          "JSONL/Parquet file with a text column (text, sentence, review, tweet...) and a label column"),
    Field("description", "Dataset description", "data.description", "multiline",
          "what the TA is told about the task; empty: the dataset's own description"),
    Field("student", "Student model", "student.model", "text", "hub name or local path"),
    Field("ta_backend", "TA backend", "ta.backend", "choice", "local · openai · scripted (offline, fixed)",
          TA_BACKENDS),
    Field("ta_model", "TA model", "ta.model", "text", "local: causal LM name/path · openai: model id"),
    Field("ta_base_url", "TA base URL", "ta.base_url", "text",
          "OpenAI-compatible endpoint; key from $OPENAI_API_KEY, never stored"),
    Field("finetune_backend", "Fine-tune backend", "finetune.backend", "choice",
          "auto: LoRA for a local TA, else none · none: frozen TA · local: LoRA · openai: jobs",
          FINETUNE_BACKENDS),
    Field("train_size", "Train size", "data.train_size", "int"),
    Field("epochs", "Epochs", "loop.epochs", "int"),
    Field("k", "k (history)", "loop.k", "int"),
    Field("l", "l (per request)", "loop.l", "int"),
    Field("window", "w (window)", "loop.window", "int"),
    Field("seed", "Seed", "seed", "int"),
)
FIELD_BY_ID = {f.id: f for f in FIELDS}
NUMBER_FIELDS = tuple(f.id for f in FIELDS if f.kind == "int")
PRESET_FIELDS = ("train_size", "epochs", "k", "l", "window")


def _get(cfg: RunConfig, key: str):
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def values_from_config(cfg: RunConfig, preset: str) -> dict[str, str]:
    """Form values (strings) showing `cfg`."""
    values = {f.id: str(_get(cfg, f.key)) for f in FIELDS if f.key}
    values["preset"] = preset
    return values


def values_from_dict(config: dict, preset: str) -> dict[str, str]:
    """Form values showing a stored run's config (a clone); unknown or bad keys keep the
    preset's value."""
    values = default_values(preset)
    for f in FIELDS:
        if not f.key:
            continue
        node: object = config
        for part in f.key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, (str, int, float)) and not isinstance(node, bool):
            values[f.id] = str(node)
    return values


def default_values(preset: str = "smoke", name: str = "") -> dict[str, str]:
    """The offline defaults for `preset`: they run with nothing but the installed packages."""
    values = values_from_config(build_config(preset), preset)
    values["name"] = name
    return values


def preset_numbers(preset: str) -> dict[str, str]:
    """The numeric fields a preset sets, to refill the form when the preset changes."""
    cfg = build_config(preset)
    return {fid: str(_get(cfg, FIELD_BY_ID[fid].key)) for fid in PRESET_FIELDS}


def suggest_name(dataset: str, taken: set[str]) -> str:
    base = Path(dataset).stem if looks_like_path(dataset) else dataset.split("/")[-1].split(":")[0]
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._") or "run"
    for i in range(1, 10_000):
        name = f"{base[:56]}-{i}"
        if name not in taken:
            return name
    return base


def _key_pattern(key: str) -> str:
    return rf"(?<![\w.]){re.escape(key)}(?![\w])"


def fields_for_error(message: str) -> list[str]:
    """The form fields a ConfigError message names, in the order it names them."""
    hits = sorted((m.start(), f.id) for f in FIELDS if f.key
                  for m in [re.search(_key_pattern(f.key), message)] if m)
    return [fid for _, fid in hits]


def field_for_error(message: str) -> str:
    """The form field a ConfigError message is about first ('' if none matches)."""
    fields = fields_for_error(message)
    return fields[0] if fields else ""


def in_form_words(message: str) -> str:
    """A config error in the form's words: each config key ("loop.window") becomes the label
    of its field ("w (window)")."""
    for f in sorted(FIELDS, key=lambda f: -len(f.key)):
        if f.key:
            message = re.sub(_key_pattern(f.key), lambda _m, f=f: f'"{f.label}"', message)
    return message


def validate(values: dict[str, str],
             taken: set[str] = frozenset()) -> tuple[RunConfig | None, dict[str, str]]:
    """(config, {}) when the form is valid; (None, {field id: message}) otherwise."""
    errors: dict[str, str] = {}
    name = values.get("name", "").strip()
    if not name:
        errors["name"] = "give the session a name"
    elif not NAME_RE.match(name):
        errors["name"] = "use letters, digits, '.', '_' or '-' (at most 64, starting with a letter or digit)"
    elif name in taken:
        errors["name"] = f"a session named {name!r} exists; pick another name"

    overrides: dict = {}
    for f in FIELDS:
        if not f.key or f.id == "name":
            continue
        raw = values.get(f.id, "")
        if f.kind == "int":
            text = raw.strip()
            if not re.fullmatch(r"-?\d+", text):
                errors[f.id] = "enter a whole number"
                continue
            value: object = int(text)
        elif f.kind == "multiline":
            value = raw.strip()
        else:
            value = raw.strip()
        if f.kind == "text" and f.id in ("dataset", "student") and not value:
            errors[f.id] = "required"
            continue
        section, _, key = f.key.rpartition(".")
        (overrides.setdefault(section, {}) if section else overrides)[key] = value
    overrides["name"] = name
    dataset = values.get("dataset", "").strip()
    if dataset and looks_like_path(dataset) and not Path(dataset).expanduser().exists():
        errors["dataset"] = f"no file at {dataset!r}; give an existing path or a dataset name"
    # Check the fields that parsed against the config's own rules too, so the user sees every
    # problem at once (build_config reports the first one it meets).
    preset = values.get("preset") or "default"
    try:
        cfg = build_config(preset, None, overrides)
    except ConfigError as exc:
        # On every field it names: a window too large for k may be a k too small.
        message = in_form_words(str(exc))
        for fid in fields_for_error(str(exc)) or ["form"]:
            errors.setdefault(fid, message)
        return None, errors
    return (None, errors) if errors else (cfg, {})
