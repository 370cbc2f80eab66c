"""What the trained parts of a composition look like (checkpoint groups, tensor names and shapes), built on the
``meta`` device: no weights are read and nothing is allocated, so the full-size ``nextgpt-v0`` takes seconds.

The converter checks an official file against this layout before writing anything, and ``nextgpt params`` counts
parameters with the same meta builds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from nextgpt_registry import resolve_target

from ..composition import Composition, LLMSettings, ResolvedComponent, ResolvedComposition

__all__ = ["TrainedLayout", "build_meta_llm", "llm_config", "token_plan", "trained_layout"]

Shape = tuple[int, ...]


@dataclass
class TrainedLayout:
    """The trained parts of one composition, as a nextgpt checkpoint stores them.

    Attributes:
        groups: ``(part, group) -> {tensor name: shape}``; parts ``input_projectors`` (group ``shared`` or a
            modality), ``output_projectors`` (group ``<modality>/<conditioning input>``), ``lora`` and
            ``embeddings`` (group ``""``; ``embed_tokens`` and, when untied, ``lm_head``, both ``(rows, H)``).
        components: the projector of each projector group (class and options, as the composition builds it).
        added: the added tokens and their ids, in order (``<Img>`` 32000 ... for v0).
        rows: rows of the input embedding (and LM head) after the added tokens.
        hidden: the LLM hidden size.
    """

    composition: Composition
    groups: dict[tuple[str, str], dict[str, Shape]] = field(default_factory=dict)
    components: dict[tuple[str, str], ResolvedComponent] = field(default_factory=dict)
    added: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    hidden: int = 0

    def output_group(self, modality: str) -> str | None:
        """The one output-projector group of ``modality`` (``"image/prompt_embeds"``), ``None`` if it has none.

        Raises:
            ValueError: the modality has several output projectors (the official layout has one per modality).
        """
        names = [g for (part, g) in self.groups if part == "output_projectors" and g.split("/", 1)[0] == modality]
        if len(names) > 1:
            raise ValueError(f"modality {modality!r} has {len(names)} output projectors; the official layout has one")
        return names[0] if names else None

    def count(self) -> int:
        """Parameters in the layout."""
        total = 0
        for tensors in self.groups.values():
            for shape in tensors.values():
                n = 1
                for d in shape:
                    n *= d
                total += n
        return total


def llm_config(settings: LLMSettings) -> Any:
    """The LLM's transformers config: ``config.json`` of ``llm.path`` (no weights read), or the tiny settings."""
    from transformers import AutoConfig

    from ..language_model import tiny_llama_config

    if settings.tiny is not None:
        return tiny_llama_config(settings.tiny, settings.tiny.tokenizer_vocab_size)
    return AutoConfig.from_pretrained(settings.path, local_files_only=True)


def token_plan(resolved: ResolvedComposition, config: Any) -> tuple[dict[str, int], int]:
    """``(added tokens -> ids, embedding rows)`` as :func:`~nextgpt_core.language_model.add_modality_tokens` will
    make them: wrapper then signal tokens per modality, each once, ids from ``vocabulary.first_added_id`` (else
    after the tokenizer's own tokens), rows = the larger of the config's and the tokenizer's size."""
    wanted: list[str] = []
    for m in resolved.modalities.values():
        for tok in (*(m.wrapper_tokens or ()), *m.signal_tokens):
            if tok not in wanted:
                wanted.append(tok)
    comp = resolved.composition
    first = comp.vocabulary.first_added_id
    if first is None:
        if comp.llm.tiny is not None:
            from ..language_model import train_tiny_tokenizer

            first = len(train_tiny_tokenizer(comp.llm.tiny.tokenizer_vocab_size))
        else:
            from transformers import AutoTokenizer

            first = len(AutoTokenizer.from_pretrained(comp.llm.path, local_files_only=True))
    added = {tok: first + i for i, tok in enumerate(wanted)}
    vocab = int(config.vocab_size)
    if comp.llm.tiny is not None:
        vocab = first  # the tiny LLM is built with the tokenizer's size
    return added, max(vocab, first + len(wanted))


def build_meta_llm(resolved: ResolvedComposition, rows: int, *, lora: bool | None = None) -> Any:
    """The composition's LLM on the ``meta`` device, resized to ``rows`` and LoRA-wrapped as the composition says
    (``lora=True``: wrapped with its ``[lora]`` settings even when ``enabled = false``, as training stage 3 does)."""
    from transformers import AutoModelForCausalLM

    comp = resolved.composition
    config = llm_config(comp.llm)
    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(config)
        if llm.get_input_embeddings().weight.shape[0] != rows:
            llm.resize_token_embeddings(rows, mean_resizing=False)
        if comp.lora.enabled if lora is None else lora:
            from ..lora import apply_lora

            llm = apply_lora(llm, comp.lora)
    return llm


def _meta_component(component: ResolvedComponent) -> Any:
    klass = resolve_target(component.target)
    with torch.device("meta"):
        return klass.from_options(component.options)


def trained_layout(resolved: ResolvedComposition) -> TrainedLayout:
    """Build the trained parts of ``resolved`` on the meta device and list their tensors."""
    from ..lora import lora_state_dict

    comp = resolved.composition
    layout = TrainedLayout(comp, hidden=resolved.llm_hidden_size)

    def add(part: str, group: str, component: ResolvedComponent) -> None:
        module = _meta_component(component)
        layout.groups[(part, group)] = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        layout.components[(part, group)] = component

    if resolved.shared_input_projector is not None:
        add("input_projectors", "shared", resolved.shared_input_projector)
    for key, m in resolved.modalities.items():
        if m.input_projector is not None:
            add("input_projectors", key, m.input_projector)
        if m.can_generate:
            for p in m.output_projectors:
                add("output_projectors", f"{key}/{p.fills}", p)
    config = llm_config(comp.llm)
    layout.added, layout.rows = token_plan(resolved, config)
    llm = build_meta_llm(resolved, layout.rows)
    lora = lora_state_dict(llm)
    if lora:
        layout.groups[("lora", "")] = {k: tuple(v.shape) for k, v in lora.items()}
    emb = llm.get_input_embeddings().weight
    embeddings = {"embed_tokens": tuple(emb.shape)}
    head = llm.get_output_embeddings()
    if head is not None and head.weight is not emb:
        embeddings["lm_head"] = tuple(head.weight.shape)
    layout.groups[("embeddings", "")] = embeddings
    return layout
