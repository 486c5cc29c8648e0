"""Teaching-assistant backends behind one interface (engine.ta.base.TeachingAssistant)."""

from __future__ import annotations

from typing import Callable

from engine.config import RunConfig
from engine.ta.base import TAReply, TeachingAssistant

__all__ = ["TAReply", "TeachingAssistant", "build_ta"]


def build_ta(cfg: RunConfig, device: str = "cpu",
             on_status: Callable[[str], None] | None = None) -> TeachingAssistant:
    """The TA named by cfg.ta.backend: local (transformers), openai (any compatible
    endpoint) or scripted (deterministic, offline; for tests and demos)."""
    ta = cfg.ta
    if ta.backend == "openai":
        from engine.ta.openai_ta import OpenAITA

        return OpenAITA(ta.model, base_url=ta.base_url, api_key=ta.api_key,
                        api_key_env=ta.api_key_env, timeout_s=ta.timeout_s, retries=ta.retries,
                        top_p=ta.top_p)
    if ta.backend == "scripted":
        from engine.ta.scripted import ScriptedTA

        return ScriptedTA(seed=cfg.seed)
    from engine.ta.local import LocalTA

    return LocalTA(ta.model, device=device, max_new_tokens=ta.max_new_tokens, top_p=ta.top_p,
                   dtype=ta.dtype, on_status=on_status)
