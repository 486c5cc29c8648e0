"""What TA calls cost: a price table per model, overridable from the config.

Prices are USD per million tokens, (input, output). The built-in table covers a few common
OpenAI chat models and their fine-tuned variants, as published on openai.com/api/pricing
**as of 2025-06-01; check your provider**: prices change, batch/cached tokens are cheaper,
and other OpenAI-compatible providers charge differently. Set `ta.price_input_per_1m` /
`ta.price_output_per_1m` in the config to your real prices: a value > 0 there wins over the
table (each of the two on its own).

Local and scripted TAs cost nothing unless the config says otherwise. An OpenAI model the
table does not know costs 0 here; `describe_price` says so, so the UI can ask for a price.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from engine.config import TAConfig

PRICES_AS_OF = "2025-06-01"

#: model id (or snapshot prefix) -> (USD per 1M input tokens, USD per 1M output tokens)
OPENAI_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-3.5-turbo": (0.50, 1.50),
}

#: inference on a fine-tuned model ("ft:<base>:<org>:<suffix>:<id>"), by base model
OPENAI_FINETUNED_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4.1": (3.00, 12.00),
    "gpt-4.1-mini": (0.80, 3.20),
    "gpt-4.1-nano": (0.20, 0.80),
    "gpt-4o": (3.75, 15.00),
    "gpt-4o-mini": (0.30, 1.20),
    "gpt-3.5-turbo": (3.00, 6.00),
}

FREE_BACKENDS = ("local", "scripted")


@dataclass(frozen=True)
class PriceInfo:
    input_per_1m: float
    output_per_1m: float
    source: str  # "config" | "built-in" | "config + built-in" | "free" | "unknown"

    @property
    def pair(self) -> tuple[float, float]:
        return (self.input_per_1m, self.output_per_1m)


def _table_lookup(model: str, table: Mapping[str, tuple[float, float]]) -> tuple[float, float] | None:
    """The entry for `model`: exact id, else the longest id that `model` extends with a
    dated snapshot or variant suffix ("gpt-4o-mini-2024-07-18" -> "gpt-4o-mini")."""
    model = model.strip().lower()
    if model in table:
        return table[model]
    matches = [name for name in table if model.startswith(name + "-")]
    return table[max(matches, key=len)] if matches else None


def builtin_price(backend: str, model: str) -> tuple[float, float] | None:
    """The built-in price of `model` on `backend`; (0, 0) for local/scripted; None if unknown."""
    if backend in FREE_BACKENDS:
        return (0.0, 0.0)
    if backend != "openai":
        return None
    if model.startswith("ft:"):
        return _table_lookup(model.split(":")[1], OPENAI_FINETUNED_PRICES)
    return _table_lookup(model, OPENAI_PRICES)


def lookup_price(backend: str, model: str, ta: TAConfig) -> PriceInfo:
    """Prices for one TA call and where they came from (config values > 0 win)."""
    table = builtin_price(backend, model)
    cfg_in, cfg_out = float(ta.price_input_per_1m), float(ta.price_output_per_1m)
    if cfg_in > 0 and cfg_out > 0:
        return PriceInfo(cfg_in, cfg_out, "config")
    if table is None:
        if cfg_in > 0 or cfg_out > 0:
            return PriceInfo(max(cfg_in, 0.0), max(cfg_out, 0.0), "config")
        return PriceInfo(0.0, 0.0, "unknown")
    source = "free" if backend in FREE_BACKENDS else "built-in"
    if cfg_in > 0 or cfg_out > 0:
        source = "config + built-in"
    return PriceInfo(cfg_in if cfg_in > 0 else table[0], cfg_out if cfg_out > 0 else table[1], source)


def price_for(backend: str, model: str, ta: TAConfig) -> tuple[float, float]:
    """(USD per 1M input tokens, USD per 1M output tokens) for `model` on `backend`."""
    return lookup_price(backend, model, ta).pair


def describe_price(backend: str, model: str, ta: TAConfig) -> str:
    """One line for the UI: the prices in use and where they came from."""
    info = lookup_price(backend, model, ta)
    if info.source == "unknown":
        return (f"no known price for {backend} model {model!r}: costs count as 0; set "
                "ta.price_input_per_1m and ta.price_output_per_1m")
    if info.source == "free":
        return f"{backend} TA: free"
    where = {"config": "from the config",
             "built-in": f"built-in, as of {PRICES_AS_OF}; check your provider",
             "config + built-in": f"config, rest built-in as of {PRICES_AS_OF}"}[info.source]
    return (f"${info.input_per_1m:g} / ${info.output_per_1m:g} per 1M input / output tokens "
            f"({where})")


def _tokens(usage: Mapping, *names: str) -> int:
    for name in names:
        value = usage.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return int(value)
    return 0


def estimate_cost(usage: Mapping, prices: tuple[float, float]) -> float:
    """Cost in USD of one reply's token `usage` at `prices` (per 1M input, output tokens).

    Reads prompt_tokens / completion_tokens (chat completions) or input_tokens /
    output_tokens (responses API). When a server reports only total_tokens, all of them are
    charged at the higher of the two prices, so a budget is never overrun by guessing low.
    """
    price_in, price_out = prices
    prompt = _tokens(usage, "prompt_tokens", "input_tokens")
    completion = _tokens(usage, "completion_tokens", "output_tokens")
    if not prompt and not completion:
        return _tokens(usage, "total_tokens") * max(price_in, price_out) / 1e6
    return (prompt * price_in + completion * price_out) / 1e6
