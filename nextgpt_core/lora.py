"""LoRA on the LLM from the composition's ``[lora]`` settings (peft).

Which layers get adapters: ``[lora] target_modules`` when the composition names them; otherwise peft's own
default for the LLM's architecture (``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[config.model_type]``:
``q_proj``/``v_proj`` for Llama, Mistral and Qwen2, ``c_attn`` for GPT-2, ``query_key_value`` for GPT-NeoX, ...);
for an architecture peft has no entry for (Phi-3 in peft 0.21), every linear layer except the LM head, which is
what peft's ``"all-linear"`` and the official NExT-GPT new code (``find_all_linear_names``) choose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .composition import LoRASettings
from .errors import ConfigError

__all__ = ["apply_lora", "check_lora_targets", "default_target_modules", "lora_state_dict", "resolve_lora_targets"]


def _linear_names(llm: Any) -> list[str]:
    """Leaf names of the LLM's linear layers (``nn.Linear``, GPT-2's ``Conv1D``) except the LM head, in order."""
    from torch import nn

    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers always has it
        Conv1D = nn.Linear  # noqa: N806
    head = llm.get_output_embeddings() if hasattr(llm, "get_output_embeddings") else None
    names: list[str] = []
    for name, module in llm.named_modules():
        if isinstance(module, (nn.Linear, Conv1D)) and module is not head and "lora_" not in name:
            leaf = name.rsplit(".", 1)[-1]
            if leaf not in names:
                names.append(leaf)
    return names


def default_target_modules(llm: Any) -> list[str]:
    """peft's default LoRA target modules for ``llm``'s architecture (its ``config.model_type``), or every linear
    layer's name except the LM head when peft has no entry for it."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAPPING

    model_type = getattr(getattr(llm, "config", None), "model_type", None)
    names = MAPPING.get(model_type) if model_type else None
    if names:
        return [names] if isinstance(names, str) else list(names)
    return _linear_names(llm)


def resolve_lora_targets(llm: Any, settings: LoRASettings) -> list[str]:
    """The module names LoRA wraps in ``llm``: ``settings.target_modules``, or :func:`default_target_modules`.

    Raises:
        ConfigError: a named module matches no module of the LLM (the message lists the LLM's linear layers), or
            the LLM has no linear layer to wrap.
    """
    targets = list(settings.target_modules) if settings.target_modules else default_target_modules(llm)
    if not targets:
        raise ConfigError(f"{type(llm).__name__} has no linear layer LoRA could wrap; set lora.target_modules")
    names = {name.rsplit(".", 1)[-1] for name, _ in llm.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        where = "lora.target_modules" if settings.target_modules else "peft's default LoRA targets"
        raise ConfigError(
            f"{where} {missing} match no module of {type(llm).__name__}; its linear layers: "
            f"{', '.join(_linear_names(llm)) or '(none)'}"
        )
    return targets


def apply_lora(llm: Any, settings: LoRASettings) -> Any:
    """Wrap ``llm`` with LoRA adapters on :func:`resolve_lora_targets` (B initialised to zero, so outputs are
    unchanged until trained); the result is in eval mode.

    Raises:
        ConfigError: a target module matches no module of the LLM.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=resolve_lora_targets(llm, settings),
        task_type="CAUSAL_LM",
    )
    wrapped = get_peft_model(llm, config)
    wrapped.eval()
    return wrapped


def check_lora_targets(resolved: Any) -> tuple[list[str] | None, str | None]:
    """The LoRA targets of a resolved composition's LLM, checked on the ``meta`` device (its ``config.json`` or tiny
    settings; no weights read): ``(targets, None)``, or ``(None, why not checked)`` when the LLM folder has no
    ``config.json``. Stage 3 wraps the LLM with these settings even when ``lora.enabled = false``.

    Raises:
        ConfigError: a target matches no module of the LLM.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from .official.layout import llm_config

    settings = resolved.composition.llm
    if settings.tiny is None and not (Path(settings.path or "") / "config.json").is_file():
        return None, f"lora targets not checked: llm.path {settings.path!r} has no config.json"
    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(llm_config(settings))
    return resolve_lora_targets(llm, resolved.composition.lora), None


def lora_state_dict(llm: Any) -> dict[str, Any]:
    """The LoRA tensors of a peft-wrapped LLM, keyed by their module path (empty if not wrapped)."""
    return {k: v for k, v in llm.state_dict().items() if "lora_" in k}
