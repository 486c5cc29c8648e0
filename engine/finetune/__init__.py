"""Fine-tune backends: dialogue gradients in, a tuned TA out (engine.finetune.base)."""

from __future__ import annotations

from engine.config import RunConfig
from engine.errors import ConfigError
from engine.finetune.base import FinetuneBackend, JobStatus, NoFinetune

__all__ = ["FinetuneBackend", "JobStatus", "NoFinetune", "build_finetune"]


def build_finetune(cfg: RunConfig, device: str = "cpu") -> FinetuneBackend:
    ft = cfg.finetune
    backend = cfg.finetune_backend
    if backend == "local" and cfg.ta.backend != "local":
        raise ConfigError(f"finetune.backend 'local' trains a LoRA adapter for a local TA, but "
                          f"ta.backend is {cfg.ta.backend!r}",
                          "use --ta-backend local, or --finetune-backend none/openai")
    if backend == "openai" and cfg.ta.backend != "openai":
        raise ConfigError(f"finetune.backend 'openai' tunes an OpenAI-compatible TA, but "
                          f"ta.backend is {cfg.ta.backend!r}",
                          "use --ta-backend openai, or --finetune-backend none/local")
    if backend == "openai":
        from engine.finetune.openai_ft import OpenAIFinetune

        return OpenAIFinetune(ft, base_url=cfg.ta.base_url, api_key=cfg.ta.api_key,
                              api_key_env=cfg.ta.api_key_env, timeout_s=cfg.ta.timeout_s,
                              retries=cfg.ta.retries)
    if backend == "local":
        from engine.finetune.local_lora import LocalLoRAFinetune

        return LocalLoRAFinetune(ft, device=device, ta_model=cfg.ta.model, seed=cfg.seed)
    return NoFinetune()
