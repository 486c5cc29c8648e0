"""Render TA chat messages as a plain-text transcript for base (non-chat) causal LMs.

A base model such as Gemma 3 270M has no chat template and was never taught to answer in
JSON, but it continues documents well. The transcript turns the same [system, user,
(assistant)] messages into a document that ends exactly where the next prefix is written:

    <system message>

    ### Example request
    Dataset description: Recipes, each labelled with the cuisine they come from: ...

    ### Example answer
    A new prefix for this dataset, written as one full instruction sentence:
    "Read the recipe and name the cuisine it comes from: Italian, Mexican or Thai."

    ... (two more examples) ...

    ### Request
    <user message>

    ### Answer
    A new prefix for this dataset, written as one full instruction sentence:
    "

The model then writes one prefix and closes the quote; generation stops at the closing quote
(or a newline). An assistant message ``{"prefixes": ["X"]}`` renders as the answer cue followed
by ``"X"``, so a dialogue-gradient training example is the generation prompt plus ``X"``:
training and generation see the same text.

The fixed examples (other datasets, never the user's data) show a 270M base model what a
prefix looks like; without them, and with an empty history, it mostly writes text that looks
like the dataset (a tweet) instead of an instruction.
"""

from __future__ import annotations

import json

from engine.prompts import decode_assistant_message

#: The line before every prefix; the quote that follows opens the prefix.
ANSWER_CUE = "A new prefix for this dataset, written as one full instruction sentence:"
OPEN_QUOTE = '"'
CLOSE_QUOTE = '"'
#: Generation of one prefix ends at the first of these.
STOP_STRINGS = (CLOSE_QUOTE, "\n")

#: Worked examples on other datasets: (dataset description, prefix). They teach a base model
#: the *shape* of a prefix (one instruction sentence that names the labels) with domain words
#: that fit no common NLP dataset, so a copied example is useless elsewhere; the engine also
#: rejects any generated prefix that is a near copy of one of them (ta.copy_similarity).
EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Recipes, each labelled with the cuisine they come from: Italian, Mexican or Thai.",
     "Read the recipe and name the cuisine it comes from: Italian, Mexican or Thai."),
    ("Chess game commentaries, each labelled with the result: white wins, black wins or draw.",
     "From this commentary, decide how the game ended: white wins, black wins or draw."),
    ("Weather station logs, each labelled with the season they were recorded in.",
     "Which season of the year does this weather log describe?"),
)

REQUEST_HEADER = "### Request"
ANSWER_HEADER = "### Answer"
EXAMPLE_REQUEST_HEADER = "### Example request"
EXAMPLE_ANSWER_HEADER = "### Example answer"


def sanitize_prefix(prefix: str) -> str:
    """One line with no double quotes, so the quoted rendering is unambiguous."""
    return " ".join(str(prefix).replace(CLOSE_QUOTE, "'").split())


def assistant_prefixes(content: str) -> list[str]:
    """The prefixes in an assistant message: ``{"prefixes": [...]}`` JSON, else the whole text."""
    items = decode_assistant_message(content)  # the format assistant_message writes
    if items is None:
        items = _other_shapes(content)
    return [p for p in (sanitize_prefix(i) for i in items) if p]


def _other_shapes(content: str) -> list[str]:
    """An assistant message in another shape, read leniently: numbers among the prefixes,
    ``{"prefix": "..."}``, or plain text (the whole text is the prefix)."""
    try:
        value = json.loads(content)
    except (TypeError, ValueError):
        value = None
    if isinstance(value, dict) and isinstance(value.get("prefixes"), list):
        return [str(p) for p in value["prefixes"] if isinstance(p, (str, int, float))]
    if isinstance(value, dict) and isinstance(value.get("prefix"), str):
        return [value["prefix"]]
    return [str(content)]


def render_answer_body(prefixes: list[str]) -> str:
    """What follows the opening quote: ``X"`` for one prefix, ``X"\\n"Y"`` for several."""
    body = f"{CLOSE_QUOTE}\n{OPEN_QUOTE}".join(sanitize_prefix(p) for p in prefixes)
    return body + CLOSE_QUOTE


def _answer(prefixes: list[str], header: str) -> str:
    return f"{header}\n{ANSWER_CUE}\n{OPEN_QUOTE}{render_answer_body(prefixes)}"


def _examples_block() -> str:
    parts = []
    for description, prefix in EXAMPLES:
        parts.append(f"{EXAMPLE_REQUEST_HEADER}\nDataset description: {description}")
        parts.append(_answer([prefix], EXAMPLE_ANSWER_HEADER))
    return "\n\n".join(parts)


def render_transcript(messages: list[dict], add_generation_prompt: bool, *,
                      examples: bool = True) -> str:
    """The transcript of `messages`; with `add_generation_prompt` it ends at the open quote.

    System messages come first (in order), then the worked examples, then each user turn as a
    request and each assistant turn as an answer.
    """
    system = [str(m.get("content", "")).strip() for m in messages if m.get("role") == "system"]
    parts = [s for s in system if s]
    if examples:
        parts.append(_examples_block())
    for message in messages:
        role, content = message.get("role"), str(message.get("content", ""))
        if role == "user":
            parts.append(f"{REQUEST_HEADER}\n{content.strip()}")
        elif role == "assistant":
            parts.append(_answer(assistant_prefixes(content), ANSWER_HEADER))
    text = "\n\n".join(parts)
    if add_generation_prompt:
        text += f"\n\n{ANSWER_HEADER}\n{ANSWER_CUE}\n{OPEN_QUOTE}"
    return text


def cut_at_stop(text: str) -> str:
    """The generated prefix: everything before the first stop string, stripped."""
    end = len(text)
    for stop in STOP_STRINGS:
        pos = text.find(stop)
        if pos != -1:
            end = min(end, pos)
    return text[:end].strip()
