"""Official key names of the released v0 delta (``pytorch_model.pt``) -> nextgpt checkpoint parts, one to one.

| official name | nextgpt checkpoint |
|---|---|
| ``llama_proj.{weight,bias}`` | ``input_projectors/shared``: ``proj.{weight,bias}`` (the ``linear`` projector) |
| ``gen_text_hidden_fcs.0.*`` | ``output_projectors/image/<its one input>``: the same sub-names (``fc``, ``tfm``, ``model``, ``query_embs``) |
| ``gen_text_hidden_fcs_video.0.*`` | ``output_projectors/video/...`` |
| ``gen_text_hidden_fcs_audio.0.*`` | ``output_projectors/audio/...`` |
| ``llama_model.base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_{A,B}[.default].weight`` | ``lora``: ``base_model.model.model.layers.{i}...lora_{A,B}.default.weight`` (peft names) |
| ``llama_model.base_model.model.model.embed_tokens.weight`` | ``embeddings``: ``embed_tokens`` (the full ``(32038, 4096)`` matrix) |
| ``llama_model.base_model.model.lm_head.weight`` | ``embeddings``: ``lm_head`` |

Stage-1/2 files name the embeddings ``llama_model.model.embed_tokens.weight`` / ``llama_model.lm_head.weight``
(no LoRA wrapper): :func:`stage_one_two_keys` finds them so the converter can say so.
"""

from __future__ import annotations

import re
from typing import Iterable

__all__ = ["OFFICIAL_OUTPUT_PROJECTORS", "Target", "map_key", "stage_one_two_keys"]

#: official output-projector module -> the modality key it belongs to in the ``nextgpt-v0`` composition
OFFICIAL_OUTPUT_PROJECTORS = {
    "gen_text_hidden_fcs": "image",
    "gen_text_hidden_fcs_video": "video",
    "gen_text_hidden_fcs_audio": "audio",
}

_OUT = re.compile(r"^(gen_text_hidden_fcs(?:_video|_audio)?)\.0\.(.+)$")
_LORA = re.compile(r"^llama_model\.base_model\.model\.(model\.layers\.\d+\.self_attn\.[qkvo]_proj\.lora_[AB])(?:\.default)?\.weight$")
_PEFT = "llama_model.base_model.model."

#: ``(part, group, key)``: group is ``"shared"`` for input projectors, the modality for output projectors, ``""``
#: for ``lora`` and ``embeddings``
Target = tuple[str, str, str]


def map_key(name: str, modality_of: dict[str, str] | None = None) -> Target | None:
    """The nextgpt place of one official key, or ``None`` when the name is not part of the v0 delta's layout.

    Args:
        modality_of: official output-projector module -> modality key (default :data:`OFFICIAL_OUTPUT_PROJECTORS`).
    """
    modality_of = modality_of or OFFICIAL_OUTPUT_PROJECTORS
    if name in ("llama_proj.weight", "llama_proj.bias"):
        return ("input_projectors", "shared", "proj." + name.split(".", 1)[1])
    match = _OUT.match(name)
    if match and match.group(1) in modality_of:
        return ("output_projectors", modality_of[match.group(1)], match.group(2))
    match = _LORA.match(name)
    if match:
        return ("lora", "", f"base_model.model.{match.group(1)}.default.weight")
    if name == _PEFT + "model.embed_tokens.weight":
        return ("embeddings", "", "embed_tokens")
    if name == _PEFT + "lm_head.weight":
        return ("embeddings", "", "lm_head")
    return None


def stage_one_two_keys(names: Iterable[str]) -> list[str]:
    """Names only a stage-1/2 run writes (embeddings saved without the LoRA wrapper's prefix)."""
    return [n for n in names if n.startswith("llama_model.model.") or n == "llama_model.lm_head.weight"]
