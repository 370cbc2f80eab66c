"""LoRA on the LLM from the composition's ``[lora]`` settings (peft)."""

from __future__ import annotations

from typing import Any

from .composition import LoRASettings
from .errors import ConfigError

__all__ = ["apply_lora", "lora_state_dict"]


def apply_lora(llm: Any, settings: LoRASettings) -> Any:
    """Wrap ``llm`` with LoRA adapters (B initialised to zero, so outputs are unchanged until trained).

    Raises:
        ConfigError: a ``target_modules`` name matches no module of the LLM.
    """
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in llm.named_modules()}
    missing = [t for t in settings.target_modules if t not in names]
    if missing:
        raise ConfigError(f"lora.target_modules {missing} match no module of {type(llm).__name__}")
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )
    wrapped = get_peft_model(llm, config)
    wrapped.eval()
    return wrapped


def lora_state_dict(llm: Any) -> dict[str, Any]:
    """The LoRA tensors of a peft-wrapped LLM, keyed by their module path (empty if not wrapped)."""
    return {k: v for k, v in llm.state_dict().items() if "lora_" in k}
