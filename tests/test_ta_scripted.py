"""ScriptedTA: deterministic, description-sensitive, parseable; garbage and outages on demand."""

from __future__ import annotations

import json

import pytest

from engine import prompts
from engine.errors import TAUnavailable
from engine.parsing import clean_prefixes, parse_prefixes
from engine.ta.scripted import ScriptedTA, description_of, description_words

TWEETS = "Tweets about everyday life, labelled with the sentiment of their author."
REVIEWS = "Hotel reviews from travellers, labelled with the guest's satisfaction."


def request(description: str = TWEETS, history: list[tuple[str, float]] | None = None,
            n: int = 4) -> list[dict]:
    return prompts.build_messages("You write prefixes.", prompts.user_prompt(description, history or [], n))


def accepted(texts: list[str]) -> list[str]:
    return clean_prefixes([c for t in texts for c in parse_prefixes(t)])[0]


def test_deterministic_in_seed_messages_and_n():
    a = ScriptedTA(seed=3).propose(request(), n=4, temperature=1.0, seed=7)
    b = ScriptedTA(seed=3).propose(request(), n=4, temperature=0.2, seed=7)
    assert a.texts == b.texts
    assert ScriptedTA(seed=4).propose(request(), n=4, temperature=1.0, seed=7).texts != a.texts
    assert ScriptedTA(seed=3).propose(request(), n=4, temperature=1.0, seed=8).texts != a.texts
    history = request(history=[("Read it.", 0.5)])
    assert ScriptedTA(seed=3).propose(history, n=4, temperature=1.0, seed=7).texts != a.texts


def test_replies_are_n_distinct_parseable_prefixes():
    reply = ScriptedTA().propose(request(n=6), n=6, temperature=1.0, seed=0)
    assert len(reply.texts) == 6
    assert all(len(json.loads(t)["prefixes"]) == 1 for t in reply.texts)
    assert len(accepted(reply.texts)) == 6
    assert reply.model == "scripted"


def test_description_words_show_up_and_change_with_the_description():
    assert description_of(request(REVIEWS)) == REVIEWS
    assert description_of([{"role": "user", "content": "just text"}]) == "just text"
    assert description_words(TWEETS)[:3] == ["tweets", "everyday", "life"]
    ta = ScriptedTA()
    tweets = accepted(ta.propose(request(TWEETS), n=5, temperature=1.0, seed=1).texts)
    reviews = accepted(ta.propose(request(REVIEWS), n=5, temperature=1.0, seed=1).texts)
    tweet_words, review_words = set(description_words(TWEETS)), set(description_words(REVIEWS))
    assert all(set(p.lower().rstrip(".").split()) & tweet_words for p in tweets)
    assert all(set(p.lower().rstrip(".").split()) & review_words for p in reviews)
    assert not set(tweets) & set(reviews)


def test_garbage_every_k_calls_is_unparsable():
    ta = ScriptedTA(garbage_every=3)
    results = [accepted(ta.propose(request(), n=3, temperature=1.0, seed=i).texts) for i in range(6)]
    assert [bool(r) for r in results] == [True, True, False, True, True, False]


def test_fail_after_raises_ta_unavailable():
    ta = ScriptedTA(fail_after=2)
    ta.propose(request(), n=1, temperature=1.0, seed=0)
    ta.propose(request(), n=1, temperature=1.0, seed=1)
    with pytest.raises(TAUnavailable, match="after 2 calls"):
        ta.propose(request(), n=1, temperature=1.0, seed=2)
    with pytest.raises(TAUnavailable):
        ScriptedTA(fail_after=0).propose(request(), n=1, temperature=1.0, seed=0)


def test_use_model_changes_name_and_word_choice():
    ta = ScriptedTA()
    before = ta.propose(request(), n=4, temperature=1.0, seed=2).texts
    ta.use_model("/runs/x/ta-adapters/epoch-1")
    assert ta.model_name == "scripted+epoch-1"
    tuned = ta.propose(request(), n=4, temperature=1.0, seed=2)
    assert tuned.texts != before and tuned.model == "scripted+epoch-1"
    again = ScriptedTA()
    again.use_model("/runs/x/ta-adapters/epoch-1")
    assert again.propose(request(), n=4, temperature=1.0, seed=2).texts == tuned.texts
    ta.use_model("")
    assert ta.model_name == "scripted"
    assert ta.propose(request(), n=4, temperature=1.0, seed=2).texts == before


def test_usage_counts_whitespace_tokens():
    msgs = request()
    reply = ScriptedTA().propose(msgs, n=2, temperature=1.0, seed=0)
    prompt_words = sum(len(m["content"].split()) for m in msgs)
    completion_words = sum(len(t.split()) for t in reply.texts)
    assert reply.usage == {"prompt_tokens": prompt_words, "completion_tokens": completion_words,
                           "total_tokens": prompt_words + completion_words}
