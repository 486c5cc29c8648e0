"""The TA price table: built-in OpenAI prices, free local TAs, config overrides, cost estimates."""

from __future__ import annotations

import pytest

from engine.config import TAConfig
from engine.pricing import (OPENAI_FINETUNED_PRICES, OPENAI_PRICES, PRICES_AS_OF, describe_price,
                            estimate_cost, lookup_price, price_for)


def test_builtin_openai_prices_and_snapshots():
    ta = TAConfig(backend="openai")
    assert price_for("openai", "gpt-4o-mini", ta) == OPENAI_PRICES["gpt-4o-mini"]
    # a dated snapshot uses its model's price; the longest matching id wins
    assert price_for("openai", "gpt-4o-mini-2024-07-18", ta) == OPENAI_PRICES["gpt-4o-mini"]
    assert price_for("openai", "gpt-4o-2024-08-06", ta) == OPENAI_PRICES["gpt-4o"]
    assert price_for("openai", "gpt-4.1-nano", ta) == OPENAI_PRICES["gpt-4.1-nano"]
    assert price_for("openai", "GPT-4.1-mini", ta) == OPENAI_PRICES["gpt-4.1-mini"]
    assert OPENAI_PRICES["gpt-4o-mini"] != OPENAI_PRICES["gpt-4o"]


def test_finetuned_models_use_the_finetuned_price_of_their_base():
    ta = TAConfig(backend="openai")
    model = "ft:gpt-4o-mini-2024-07-18:my-org:gpta:AbC123"
    assert price_for("openai", model, ta) == OPENAI_FINETUNED_PRICES["gpt-4o-mini"]
    assert price_for("openai", model, ta) != OPENAI_PRICES["gpt-4o-mini"]


def test_local_and_scripted_are_free_and_unknown_models_cost_zero():
    ta = TAConfig()
    assert price_for("local", "gemma-3-270m", ta) == (0.0, 0.0)
    assert price_for("scripted", "scripted", ta) == (0.0, 0.0)
    assert lookup_price("openai", "my-llama", ta).source == "unknown"
    assert price_for("openai", "my-llama", ta) == (0.0, 0.0)
    assert "ta.price_input_per_1m" in describe_price("openai", "my-llama", ta)
    assert describe_price("local", "gemma-3-270m", ta) == "local TA: free"


def test_config_prices_win_each_on_its_own():
    both = TAConfig(backend="openai", price_input_per_1m=1.0, price_output_per_1m=2.0)
    assert price_for("openai", "gpt-4o-mini", both) == (1.0, 2.0)
    assert lookup_price("openai", "gpt-4o-mini", both).source == "config"
    assert price_for("local", "gemma", both) == (1.0, 2.0)
    assert price_for("openai", "unknown-model", both) == (1.0, 2.0)
    only_in = TAConfig(backend="openai", price_input_per_1m=1.0)
    assert price_for("openai", "gpt-4o-mini", only_in) == (1.0, OPENAI_PRICES["gpt-4o-mini"][1])
    assert lookup_price("openai", "gpt-4o-mini", only_in).source == "config + built-in"
    only_out = TAConfig(backend="openai", price_output_per_1m=3.0)
    assert price_for("openai", "my-llama", only_out) == (0.0, 3.0)


def test_describe_builtin_price_names_its_date():
    line = describe_price("openai", "gpt-4o-mini", TAConfig(backend="openai"))
    assert PRICES_AS_OF in line and "check your provider" in line
    assert "$0.15" in line and "$0.6" in line


@pytest.mark.parametrize("usage, prices, cost", [
    ({"prompt_tokens": 1_000_000, "completion_tokens": 0}, (0.15, 0.60), 0.15),
    ({"prompt_tokens": 2000, "completion_tokens": 500, "total_tokens": 2500}, (0.15, 0.60),
     (2000 * 0.15 + 500 * 0.60) / 1e6),
    ({"input_tokens": 1000, "output_tokens": 1000}, (1.0, 4.0), 5000 / 1e6),
    # only a total: charged at the higher price, never underestimated
    ({"total_tokens": 1000}, (1.0, 4.0), 4000 / 1e6),
    ({}, (1.0, 4.0), 0.0),
    ({"prompt_tokens": None, "completion_tokens": "12"}, (1.0, 4.0), 0.0),
    ({"prompt_tokens": 100, "completion_tokens": 100}, (0.0, 0.0), 0.0),
])
def test_estimate_cost(usage, prices, cost):
    assert estimate_cost(usage, prices) == pytest.approx(cost)
