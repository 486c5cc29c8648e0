"""Every prompt the teaching assistant (TA) sees, in one place.

The layout follows the GPTA paper (Liu & Zhang 2024, Table 4):

* a **system prompt** naming the task and the student, and how the prefix is placed
  ("The model is based on BERT, so the prefix will be added as [CLS]prefix + context");
* a **user prompt** with the dataset description d, optional exemplars E (GPTA-Data mode
  only), the history H of (prefix, score) pairs in ascending order of score, and a request
  for n new prefixes returned as JSON ``{"prefixes": [...]}``.

A *dialogue gradient* (`window_example`) is the same conversation with a window of w history
pairs in the user message and the prefix that came next as the assistant's answer, in the
OpenAI chat fine-tuning format.

The TA never sees training data except the few exemplars of GPTA-Data mode.

The wording above is ours. A user can replace it with their own (for instance the paper's
Table 4 wording, which this project does not ship) through ``ta.system_template``,
``ta.user_template`` and ``ta.history_item_template`` (`PromptTemplate`): plain text with
named placeholders, checked when the config is read and filled in one pass, so text put
into a placeholder (a description, a prefix) is never expanded again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from engine.errors import ConfigError

#: task id (``data.task``) -> how the task is named to the TA
TASK_NAMES: dict[str, str] = {
    "classification": "text classification",
    "pair_classification": "sentence pair classification",
    "nli": "natural language inference",
    "extractive_qa": "extractive question answering",
    "qa": "extractive question answering",
    "multiple_choice": "multiple-choice reading comprehension",
    "summarization": "abstractive summarization",
    "ner": "named entity recognition",
}

#: metric id (``student.metric``) -> how the metric is named to the TA
METRIC_NAMES: dict[str, str] = {
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "f1": "F1",
    "exact_match": "exact match",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "neg_loss": "negative loss (higher is better)",
}

#: longest exemplar text shown to the TA, in characters (longer texts are cut with "...")
MAX_EXEMPLAR_CHARS = 400

SYSTEM_TEMPLATE = (
    "You are a helpful teaching assistant that writes prefixes for a {task_name} model. "
    "The model is based on {family}, so the prefix will be added as {placement}. "
    "A good prefix is one short natural-language sentence that helps the model solve the "
    "task on texts it has never seen.{labels}"
)

SYSTEM_LABELS_TEMPLATE = " The possible labels are: {labels}."

DESCRIPTION_TEMPLATE = "Dataset description: {description}"

EXEMPLARS_HEADER = "Examples from the training data:"
EXEMPLAR_TEMPLATE = "Text: {text}\nLabel: {label}"

HISTORY_HEADER = (
    "Prefixes tried so far with their validation {metric}, in ascending order of {metric} "
    "(the last one is the best):"
)
HISTORY_ITEM_TEMPLATE = "Prefix: {prefix}\nScore: {score:.4f}"
HISTORY_EMPTY = "No prefixes have been tried yet."

REQUEST_TEMPLATE = (
    "Write {count} that {differ} and should get a {level} validation {metric}. "
    "Each prefix is one short sentence. "
    'Answer with JSON only, in the form {{"prefixes": [{slots}]}}.'
)


#: Placeholders each custom template may use (`PromptTemplate`), and those it must use.
SYSTEM_FIELDS = ("task", "family", "placement", "labels", "metric")
USER_FIELDS = ("description", "exemplars", "history", "n", "metric", "task", "labels")
USER_REQUIRED = ("description", "history")
HISTORY_ITEM_FIELDS = ("prefix", "score")
HISTORY_ITEM_REQUIRED = ("prefix", "score")
#: Longest custom template, in characters (every TA request and dialogue gradient carries it).
MAX_TEMPLATE_CHARS = 8000
#: Shortest template sentence that joins the copy check, in words. A short generic instruction
#: ("Classify the sentiment.") is what a good prefix says too: at 3 words, "Classify the
#: sentiment of tweets." (0.81 similar) was rejected as a copy.
MIN_COPY_WORDS = 6
#: A custom history with no pairs yet.
CUSTOM_HISTORY_EMPTY = "(none yet)"

# "{{" and "}}" are literal braces; "{name}" is a placeholder; any other brace is an error.
_TEMPLATE_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def template_fields(key: str, template: str, allowed: tuple[str, ...],
                    required: tuple[str, ...] = ()) -> list[str]:
    """The placeholders of a custom template, in order; ConfigError (one line, naming `key`)
    for a stray brace, an unknown placeholder, a missing required one or an oversized text."""
    fix_fields = ", ".join("{" + f + "}" for f in allowed)
    if len(template) > MAX_TEMPLATE_CHARS:
        raise ConfigError(f"{key} is {len(template):,} characters long",
                          f"shorten it to at most {MAX_TEMPLATE_CHARS:,} characters")
    found = []
    for match in _TEMPLATE_TOKEN.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        name = match.group(1)
        if name is None:
            raise ConfigError(f"{key} has a lone {token!r} at character {match.start() + 1}",
                              "write {{ or }} for a literal brace")
        if name not in allowed:
            raise ConfigError(f"{key} has an unknown placeholder {{{name}}}",
                              f"use only {fix_fields}; write {{{{ and }}}} for literal braces")
        found.append(name)
    missing = [f for f in required if f not in found]
    if missing:
        raise ConfigError(f"{key} lacks the placeholder(s) {', '.join('{' + f + '}' for f in missing)}",
                          "add them: the TA must see " + " and ".join(missing))
    return found


def fill_template(template: str, values: dict[str, str]) -> str:
    """`template` with each placeholder replaced, in one pass (values are never re-read as
    templates). The template must have passed `template_fields`."""
    def replace(match: re.Match) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return values[match.group(1)]
    return _TEMPLATE_TOKEN.sub(replace, template)


@dataclass(frozen=True)
class PromptTemplate:
    """The user's own TA wording (empty fields keep the built-in wording).

    * ``system``: {task} {family} {placement} {labels} {metric};
    * ``user``: {description} and {history} (required), {exemplars} {n} {metric} {task} {labels};
    * ``history_item``: how one (prefix, score) pair of {history} reads, {prefix} and {score}
      (4 decimals); by default "Prefix: ...\nScore: ...". Pairs are in ascending order of score.

    The TA is still asked, by the built-in parser's standards, for prefixes it can find in its
    reply (JSON ``{"prefixes": [...]}`` is read best), and dialogue gradients answer in that
    JSON shape.
    """

    system: str = ""
    user: str = ""
    history_item: str = ""

    @classmethod
    def from_config(cls, ta: object) -> "PromptTemplate":
        """The template of a TAConfig-like object, checked (ConfigError on a bad one)."""
        template = cls(system=str(getattr(ta, "system_template", "") or ""),
                       user=str(getattr(ta, "user_template", "") or ""),
                       history_item=str(getattr(ta, "history_item_template", "") or ""))
        template.check()
        return template

    def check(self) -> None:
        template_fields("ta.system_template", self.system, SYSTEM_FIELDS)
        if self.user:
            template_fields("ta.user_template", self.user, USER_FIELDS, USER_REQUIRED)
        if self.history_item:
            template_fields("ta.history_item_template", self.history_item, HISTORY_ITEM_FIELDS,
                            HISTORY_ITEM_REQUIRED)

    def check_shows_exemplars(self) -> None:
        """GPTA-Data mode: a custom user message must show the exemplars, else the arm would
        silently run as plain GPTA (ConfigError)."""
        if self.user and "exemplars" not in template_fields("ta.user_template", self.user,
                                                            USER_FIELDS, USER_REQUIRED):
            raise ConfigError("ta.user_template has no {exemplars}, so mode gpta-data would send "
                              "the TA none of its data.exemplars training rows",
                              "add {exemplars} to ta.user_template, or set data.exemplars = 0")

    def sentences(self) -> list[str]:
        """The fixed text of the custom templates, cut into sentences of MIN_COPY_WORDS words or
        more: a TA reply that is a near copy of one of them is copied from the prompt, not
        written. Shorter pieces (generic instructions, text cut by a placeholder) do not count."""
        out: list[str] = []
        for text in (self.system, self.user):
            plain = _TEMPLATE_TOKEN.sub("\n", text)
            for piece in re.split(r"(?<=[.!?:;])\s+|\n+", plain):
                piece = " ".join(piece.split())
                if len(piece.split()) >= MIN_COPY_WORDS and piece not in out:
                    out.append(piece)
        return out


DEFAULT_TEMPLATE = PromptTemplate()


def task_name(task: str) -> str:
    """Human name of a task id; unknown ids are shown as words ("token_tagging" -> "token tagging")."""
    return TASK_NAMES.get(task, task.replace("_", " ").replace("-", " ").strip() or "text")


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric.replace("_", " "))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _labels(label_names: list[str] | None) -> str:
    return ", ".join(_one_line(n) for n in label_names or [])


def system_prompt(task: str, family: str, placement: str, label_names: list[str] | None = None, *,
                  template: PromptTemplate = DEFAULT_TEMPLATE, metric: str = "accuracy") -> str:
    """The system message: task, student family and prefix placement, label names if known."""
    if template.system:
        return fill_template(template.system, {
            "task": task_name(task), "family": family, "placement": placement,
            "labels": _labels(label_names), "metric": metric_name(metric)})
    labels = ""
    if label_names:
        labels = SYSTEM_LABELS_TEMPLATE.format(labels=_labels(label_names))
    return SYSTEM_TEMPLATE.format(task_name=task_name(task), family=family, placement=placement,
                                  labels=labels)


def _label_text(label: object, label_names: list[str] | None) -> str:
    if label_names and isinstance(label, int) and not isinstance(label, bool) \
            and 0 <= label < len(label_names):
        return _one_line(label_names[label])
    return _one_line(str(label))


def _exemplar_text(text: str) -> str:
    text = _one_line(text)
    if len(text) > MAX_EXEMPLAR_CHARS:
        text = text[: MAX_EXEMPLAR_CHARS - 3].rstrip() + "..."
    return text


def _render_exemplars(exemplars: list[dict], label_names: list[str] | None,
                      task: str = "classification") -> str:
    from engine.tasks import format_exemplar

    items = []
    for row in exemplars:
        if task == "classification":
            text, label = row.get("text", ""), _label_text(row.get("label", ""), label_names)
        else:
            text, label = format_exemplar(task, row, label_names)
        items.append(EXEMPLAR_TEMPLATE.format(text=_exemplar_text(text), label=label))
    return EXEMPLARS_HEADER + "\n" + "\n\n".join(items)


def _history_items(history: list[tuple[str, float]], template: PromptTemplate) -> list[str]:
    if template.history_item:
        return [fill_template(template.history_item, {"prefix": _one_line(p), "score": f"{float(s):.4f}"})
                for p, s in history]
    return [HISTORY_ITEM_TEMPLATE.format(prefix=_one_line(p), score=float(s)) for p, s in history]


def _render_history(history: list[tuple[str, float]], metric: str,
                    template: PromptTemplate = DEFAULT_TEMPLATE) -> str:
    if not history:
        return HISTORY_EMPTY
    items = _history_items(history, template)
    return HISTORY_HEADER.format(metric=metric_name(metric)) + "\n" + "\n\n".join(items)


def _render_request(n: int, has_history: bool, metric: str) -> str:
    count = "1 new prefix" if n == 1 else f"{n} new prefixes"
    if has_history:
        differ = "differs from the prefixes above" if n == 1 else \
            "differ from the prefixes above and from each other"
    else:
        differ = "fits the task" if n == 1 else "differ from each other"
    slots = '"..."' if n == 1 else '"...", "..."'
    return REQUEST_TEMPLATE.format(count=count, differ=differ, level="higher" if has_history else "high",
                                   metric=metric_name(metric), slots=slots)


def user_prompt(description: str, history: list[tuple[str, float]], n: int, *,
                exemplars: list[dict] | None = None, label_names: list[str] | None = None,
                metric: str = "accuracy", task: str = "classification",
                template: PromptTemplate = DEFAULT_TEMPLATE) -> str:
    """The user message: description d, exemplars E (if given), history H and the request.

    `history` must already be sorted ascending by score (`History.sorted()`); it is shown
    in the order given. `exemplars` rows are ``{"text": str, "label": int}``; labels are shown
    by name when `label_names` covers them. A custom `template.user` replaces the layout.
    """
    if template.user:
        items = _history_items(history, template)
        return fill_template(template.user, {
            "description": " ".join(description.split()) or "(none)",
            "exemplars": _render_exemplars(exemplars, label_names, task) if exemplars else "",
            # one-line items one per line; multi-line items (the default's) with a blank line between
            "history": ("\n\n" if "\n" in (template.history_item or HISTORY_ITEM_TEMPLATE) else "\n")
            .join(items) if items else CUSTOM_HISTORY_EMPTY,
            "n": str(max(1, int(n))), "metric": metric_name(metric), "task": task_name(task),
            "labels": _labels(label_names)})
    parts = [DESCRIPTION_TEMPLATE.format(description=" ".join(description.split()) or "(none)")]
    if exemplars:
        parts.append(_render_exemplars(exemplars, label_names, task))
    parts.append(_render_history(history, metric, template))
    parts.append(_render_request(max(1, int(n)), bool(history), metric))
    return "\n\n".join(parts)


def build_messages(system: str, user: str) -> list[dict]:
    """OpenAI-style chat messages for one TA request."""
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def assistant_message(prefixes: list[str]) -> str:
    """What a perfect TA answers: the JSON object the request asks for."""
    return json.dumps({"prefixes": list(prefixes)}, ensure_ascii=False)


def decode_assistant_message(content: object) -> list[str] | None:
    """The prefixes of a reply in exactly the format `assistant_message` writes
    (``{"prefixes": ["...", ...]}``, strings only), else None: the one decoder of that format.
    Replies in any other shape go through engine.parsing's lenient parser."""
    if not isinstance(content, str):
        return None
    try:
        value = json.loads(content)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    items = value.get("prefixes")
    if isinstance(items, list) and all(isinstance(p, str) for p in items):
        return list(items)
    return None


def window_example(system: str, description: str, window: list[tuple[str, float]], next_prefix: str, *,
                   exemplars: list[dict] | None = None, label_names: list[str] | None = None,
                   metric: str = "accuracy", task: str = "classification",
                   template: PromptTemplate = DEFAULT_TEMPLATE) -> dict:
    """One dialogue gradient in OpenAI chat fine-tuning format.

    The user message shows the w pairs of `window` (ascending) and asks for ONE prefix; the
    assistant answers with `next_prefix`, the prefix that scored just above the window.
    """
    user = user_prompt(description, window, 1, exemplars=exemplars, label_names=label_names,
                       metric=metric, task=task, template=template)
    return {"messages": [*build_messages(system, user),
                         {"role": "assistant", "content": assistant_message([next_prefix])}]}
