"""Fine-tune backends: dialogue gradients in, a tuned TA out (engine.finetune.base)."""

from __future__ import annotations

from engine.config import RunConfig
from engine.finetune.base import FinetuneBackend, JobStatus, NoFinetune

__all__ = ["FinetuneBackend", "JobStatus", "NoFinetune", "build_finetune"]


def build_finetune(cfg: RunConfig, device: str = "cpu") -> FinetuneBackend:
    ft = cfg.finetune
    if ft.backend == "openai":
        from engine.finetune.openai_ft import OpenAIFinetune

        return OpenAIFinetune(ft, base_url=cfg.ta.base_url, api_key=cfg.ta.api_key,
                              api_key_env=cfg.ta.api_key_env, timeout_s=cfg.ta.timeout_s,
                              retries=cfg.ta.retries)
    if ft.backend == "local":
        from engine.finetune.local_lora import LocalLoRAFinetune

        return LocalLoRAFinetune(ft, device=device, ta_model=cfg.ta.model)
    return NoFinetune()
