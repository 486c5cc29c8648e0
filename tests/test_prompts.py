"""TA prompt templates and dialogue-gradient examples."""

from __future__ import annotations

import json

from engine import prompts
from engine.history import History, build_windows
from engine.parsing import parse_prefixes
from engine.prompts import (assistant_message, build_messages, system_prompt, user_prompt,
                            window_example)

DESC = "Tweets about everyday life, each labelled with the sentiment of its author."
LABELS = ["negative", "neutral", "positive"]
HISTORY = [("Read the tweet.", 0.4125), ("What is the mood?", 0.55), ("Classify the sentiment.", 0.71)]
EXEMPLARS = [{"text": "I love   this\nso much", "label": 2}, {"text": "worst day ever", "label": 0},
             {"text": "the train is at noon", "label": 1}]


def test_task_names():
    assert prompts.TASK_NAMES["classification"] == "text classification"
    assert prompts.task_name("extractive_qa") == "extractive question answering"
    assert prompts.task_name("token_tagging") == "token tagging"


def test_system_prompt_names_task_student_placement_and_labels():
    text = system_prompt("classification", "BERT", "[CLS]prefix + context", LABELS)
    assert "text classification" in text
    assert "The model is based on BERT, so the prefix will be added as [CLS]prefix + context" in text
    assert "negative, neutral, positive" in text
    assert "labels" not in system_prompt("classification", "BERT", "[CLS]prefix + context")


def test_user_prompt_contains_description_history_ascending_and_request():
    text = user_prompt(DESC, HISTORY, 5)
    assert DESC in text
    positions = [text.index(f"Prefix: {p}\nScore: {s:.4f}") for p, s in HISTORY]
    assert positions == sorted(positions)
    assert "0.4125" in text and "0.5500" in text and "0.7100" in text
    assert "ascending" in text
    assert "5 new prefixes" in text
    assert '{"prefixes": [' in text and "JSON" in text
    assert "higher validation accuracy" in text
    assert "Examples" not in text and "Label:" not in text  # no exemplars in plain GPTA mode


def test_user_prompt_shows_history_in_the_order_given():
    text = user_prompt(DESC, History([("b", 0.9), ("a", 0.1)]).sorted(), 2)
    assert text.index("Prefix: a") < text.index("Prefix: b")


def test_user_prompt_empty_history():
    text = user_prompt(DESC, [], 3)
    assert prompts.HISTORY_EMPTY in text
    assert "Score:" not in text
    assert "3 new prefixes" in text and "high validation accuracy" in text


def test_user_prompt_exemplars_with_label_names():
    text = user_prompt(DESC, HISTORY, 5, exemplars=EXEMPLARS, label_names=LABELS)
    assert "Text: I love this so much\nLabel: positive" in text
    assert "Text: worst day ever\nLabel: negative" in text
    assert "Label: neutral" in text
    # exemplars come after the description and before the history
    assert text.index(DESC) < text.index("Text: I love") < text.index("Prefix: Read the tweet.")


def test_user_prompt_exemplar_labels_without_names_and_long_texts():
    rows = [{"text": "word " * 500, "label": 7}]
    text = user_prompt(DESC, [], 1, exemplars=rows, label_names=LABELS)
    assert "Label: 7" in text
    shown = text.split("Text: ")[1].split("\n")[0]
    assert len(shown) <= prompts.MAX_EXEMPLAR_CHARS and shown.endswith("...")


def test_user_prompt_metric_and_singular_request():
    text = user_prompt(DESC, HISTORY, 1, metric="macro_f1")
    assert "macro F1" in text
    assert "1 new prefix " in text and "prefixes above" in text


def test_messages_and_assistant_message():
    msgs = build_messages("sys", "usr")
    assert msgs == [{"role": "system", "content": "sys"}, {"role": "user", "content": "usr"}]
    content = assistant_message(["Décidez l'humeur.", 'He said "hi"'])
    assert json.loads(content) == {"prefixes": ["Décidez l'humeur.", 'He said "hi"']}
    assert "Décidez" in content  # not \u-escaped


def _assert_chat_finetune_format(example: dict) -> None:
    """The OpenAI chat fine-tuning format: {"messages": [...]} with string contents, ending on
    an assistant turn; JSON-serialisable as one line."""
    assert set(example) == {"messages"}
    roles = [m["role"] for m in example["messages"]]
    assert roles == ["system", "user", "assistant"]
    for m in example["messages"]:
        assert set(m) == {"role", "content"}
        assert isinstance(m["content"], str) and m["content"].strip()
    line = json.dumps(example, ensure_ascii=False)
    assert "\n" not in line and json.loads(line) == example


def test_window_example_format_and_target():
    pairs = History([("p low", 0.2), ("p high", 0.8), ("p mid", 0.5), ("p top", 0.9)]).sorted()
    system = system_prompt("classification", "BERT", "[CLS]prefix + context", LABELS)
    windows = build_windows(pairs, 2)
    examples = [window_example(system, DESC, w, target, label_names=LABELS) for w, target in windows]
    assert len(examples) == 2
    for ex, (window, target) in zip(examples, windows):
        _assert_chat_finetune_format(ex)
        system_msg, user_msg, assistant_msg = ex["messages"]
        assert system_msg["content"] == system
        assert DESC in user_msg["content"]
        assert "1 new prefix " in user_msg["content"]
        for p, s in window:
            assert f"Prefix: {p}\nScore: {s:.4f}" in user_msg["content"]
        assert f"Prefix: {target}\n" not in user_msg["content"]
        assert parse_prefixes(assistant_msg["content"]) == [target]
    first_user = examples[0]["messages"][1]["content"]
    assert first_user.index("p low") < first_user.index("p mid")


def test_window_example_with_exemplars():
    ex = window_example("sys", DESC, [("a b", 0.1)], 'quote " and ünïcode', exemplars=EXEMPLARS[:1],
                        label_names=LABELS, metric="macro_f1")
    _assert_chat_finetune_format(ex)
    assert "Label: positive" in ex["messages"][1]["content"]
    assert "macro F1" in ex["messages"][1]["content"]
    assert parse_prefixes(ex["messages"][2]["content"]) == ['quote " and ünïcode']


def test_exemplars_of_other_tasks_are_rendered_with_their_fields():
    row = {"id": "1", "question": "Who wrote Hamlet?", "context": "Hamlet is by Shakespeare.",
           "answers": {"text": ["Shakespeare"], "answer_start": [13]}}
    text = user_prompt("Questions about plays.", [], 2, exemplars=[row], task="extractive_qa")
    assert "Who wrote Hamlet?" in text and "Hamlet is by Shakespeare." in text
    assert "Shakespeare" in text.split("Hamlet is by Shakespeare.")[1]


def test_the_reply_format_has_one_decoder_beside_its_encoder():
    from engine.parsing import parse_prefixes
    from engine.prompts import assistant_message, decode_assistant_message
    from gpta_tui.dashboard import target_prefixes

    prefixes = ["Classify the tweet's mood:", 'Say "positive" or "negative":', "Ünïcode"]
    encoded = assistant_message(prefixes)
    assert decode_assistant_message(encoded) == prefixes
    assert parse_prefixes(encoded) == prefixes and target_prefixes(encoded) == prefixes
    for other in ('{"prefixes": [1, "a"]}', '{"prefix": "a"}', '["a"]', "a line", "{", None):
        assert decode_assistant_message(other) is None
    assert parse_prefixes('{"prefixes": [1, "a"]}') == ["a"]  # the lenient parser still reads it
    assert target_prefixes("plain text") == ["plain text"] and target_prefixes("  ") == []
