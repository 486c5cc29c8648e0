"""Custom TA wording (ta.system_template / ta.user_template / ta.history_item_template):
checked when the config is read, filled in one pass, used for requests and dialogue gradients,
and its own sentences count as prompt text a TA must not copy."""

from __future__ import annotations

import json

import pytest

from engine import events as ev
from engine import prompts
from engine.config import build_config
from engine.errors import ConfigError
from engine.parsing import COPIED
from engine.prompts import PromptTemplate
from engine.ta.base import TAReply, TeachingAssistant

from test_engine import FakeJobs, run_engine, tiny_config

SYSTEM = "You help a {family} model for {task}. Labels: {labels}. Prefixes go in as {placement}."
USER = ("Data: {description}\n"
        "Earlier prefixes, from the worst to the best:\n{history}\n"
        "Please write exactly {n} better prefixes for {metric} as JSON.")
ITEM = "<{prefix}> = {score}"


def _config_error(**ta) -> str:
    with pytest.raises(ConfigError) as info:
        build_config("default", overrides={"ta": ta})
    message = str(info.value)
    assert "\n" not in message and "Fix:" in message
    return message


def test_a_bad_template_is_refused_in_one_line_naming_it_and_the_fix():
    assert "unknown placeholder {histroy}" in _config_error(user_template="{description} {histroy}")
    assert "lacks the placeholder(s) {history}" in _config_error(user_template="{description}")
    assert "lone '{'" in _config_error(system_template="a { b")
    assert "lone '}'" in _config_error(history_item_template="{prefix} {score} }")
    assert "unknown placeholder {history}" in _config_error(system_template="{history}")
    assert "characters long" in _config_error(
        user_template="{description}{history}" + "x" * prompts.MAX_TEMPLATE_CHARS)
    # literal braces are fine
    cfg = build_config("default", overrides={"ta": {"user_template": '{description} {history} {{"a": 1}}'}})
    assert cfg.ta.user_template.endswith('{{"a": 1}}')


def test_placeholders_are_filled_once_so_text_from_users_and_tas_is_never_expanded():
    template = PromptTemplate(user=USER, history_item=ITEM)
    template.check()
    user = prompts.user_prompt("tweets {history} {{x}}", [("say {n} things", 0.25), ("ok", 0.5)], 3,
                               metric="accuracy", template=template)
    assert user == ("Data: tweets {history} {{x}}\n"
                    "Earlier prefixes, from the worst to the best:\n"
                    "<say {n} things> = 0.2500\n<ok> = 0.5000\n"
                    "Please write exactly 3 better prefixes for accuracy as JSON.")
    empty = prompts.user_prompt("d", [], 2, template=template)
    assert prompts.CUSTOM_HISTORY_EMPTY in empty
    literal = PromptTemplate(user='{description} {history} answer {{"prefixes": []}}')
    literal.check()
    assert prompts.user_prompt("d", [], 1, template=literal).endswith('answer {"prefixes": []}')
    # the built-in wording is unchanged when no template is set
    assert prompts.user_prompt("d", [("p", 0.1)], 2) == prompts.user_prompt(
        "d", [("p", 0.1)], 2, template=PromptTemplate())


def test_template_sentences_are_the_fixed_text_only():
    sentences = PromptTemplate(system=SYSTEM, user=USER).sentences()
    assert "Please write exactly better prefixes for as JSON." not in sentences
    assert "Earlier prefixes, from the worst to the best:" in sentences
    assert all("{" not in s for s in sentences)
    # pieces of fewer than MIN_COPY_WORDS words do not count (cut at a placeholder, or short)
    assert sentences == ["Earlier prefixes, from the worst to the best:"]


def test_a_prefix_that_says_a_short_template_instruction_is_not_a_copy():
    """A short generic instruction of the template is what a good prefix says too."""
    from engine.parsing import clean_prefixes

    template = PromptTemplate(system="Classify the sentiment. Prefixes are instructions placed "
                                     "before every input text of the student model.")
    examples = template.sentences()
    assert examples == ["Prefixes are instructions placed before every input text of the "
                        "student model."]
    accepted, rejected = clean_prefixes(
        ["Classify the sentiment of tweets.", "prefixes are instructions placed before every "
         "input text of the student model"], prompt_examples=examples)
    assert accepted == ["Classify the sentiment of tweets."]
    assert rejected == [("prefixes are instructions placed before every input text of the "
                         "student model", COPIED)]


class RecordingTA(TeachingAssistant):
    """Records each request's messages; the first prefix of each reply copies a template sentence."""

    backend = "scripted"

    def __init__(self, copy: str):
        self.copy, self.messages = copy, []

    @property
    def model_name(self) -> str:
        return "recorder"

    def propose(self, messages, n, temperature, seed, should_stop=None):
        self.messages.append(messages)
        k = len(self.messages)
        prefixes = [self.copy] + [f"Label the sentiment of this tweet, variant {k}.{i}" for i in range(n - 1)]
        return TAReply(texts=[prompts.assistant_message(prefixes)], usage={})

    def use_model(self, model_ref):
        pass


def test_the_engine_asks_and_trains_the_ta_in_the_users_wording(tiny_bert_dir, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, loop={"epochs": 1, "k": 6, "l": 3, "window": 2},
                      ta={"backend": "scripted", "system_template": SYSTEM, "user_template": USER,
                          "history_item_template": ITEM})
    copied = "Earlier prefixes, from the worst to the best:"
    ta = RecordingTA(copy=copied)
    engine, rec = run_engine(cfg, tmp_path, ta=ta, jobs=FakeJobs(polls=1))
    finished = engine.run()
    assert finished.status == "finished"
    system, user = ta.messages[-1][0]["content"], ta.messages[-1][1]["content"]
    assert system.startswith("You help a BERT model for text classification. Labels: ")
    assert user.startswith("Data: " + engine.state.description.split()[0])
    shown = [line for line in user.splitlines() if line.startswith("<")]
    assert shown, "the history is shown in the item format"
    scores = [float(line.rsplit("= ", 1)[1]) for line in shown]
    assert scores == sorted(scores)
    assert any("exactly 3 better prefixes" in m[1]["content"] for m in ta.messages)  # n = l
    # a TA reply that copies the template's own text is rejected as copied from the prompt
    assert copied not in [e.prefix for e in rec.of(ev.PrefixScored)]
    assert finished.summary["copied_from_prompt"] >= 1
    assert any(COPIED in [why for _, why in r.rejected] for r in rec.of(ev.TAResponse))
    # the dialogue gradients use the same wording, asking for one prefix
    window_path = tmp_path / rec.of(ev.WindowsBuilt)[0].path
    first = json.loads(window_path.read_text().splitlines()[0])["messages"]
    assert first[0]["content"] == system
    assert first[1]["content"].startswith("Data: ") and "exactly 1 better prefixes" in first[1]["content"]
    assert json.loads(first[2]["content"])["prefixes"]


def test_mode_gpta_data_needs_the_exemplars_in_a_custom_user_message():
    """Without {exemplars} the GPTA-Data arm would send no training rows and run as GPTA."""
    ta = {"user_template": "Data: {description}\n{history}"}
    with pytest.raises(ConfigError) as err:
        build_config("smoke", overrides={"mode": "gpta-data", "ta": ta})
    assert "{exemplars}" in str(err.value) and "Fix: add {exemplars}" in str(err.value)
    assert "\n" not in str(err.value)
    build_config("smoke", overrides={"mode": "gpta", "ta": ta})  # other arms show none
    build_config("smoke", overrides={"mode": "gpta-data", "data": {"exemplars": 0}, "ta": ta})
    cfg = build_config("smoke", overrides={"mode": "gpta-data", "ta": {
        "user_template": "Data: {description}\n{exemplars}\n{history}"}})
    user = prompts.user_prompt("d", [], 1, exemplars=[{"text": "so good", "label": 2}],
                               label_names=["negative", "neutral", "positive"],
                               template=PromptTemplate.from_config(cfg.ta))
    assert "so good" in user


def test_a_comparison_refuses_the_template_before_its_first_run():
    """gpta compare with a gpta-data arm checks every run's config when it plans, so a user
    template without {exemplars} is refused before the gpta arm runs, not after it."""
    from engine.experiments import CompareSpec

    cfg = build_config("smoke", overrides={"ta": {"user_template": "D: {description}\n{history}"}})
    with pytest.raises(ConfigError, match="exemplars"):
        CompareSpec.create("cmp", cfg, arms=["gpta", "gpta-data"], seeds=[1])
    assert CompareSpec.create("cmp", cfg, arms=["gpta", "baseline"], seeds=[1]).arms
