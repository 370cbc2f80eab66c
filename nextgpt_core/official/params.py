"""``nextgpt params``: parameters of every component of a composition, total and trainable, built on the ``meta``
device (no weights read, nothing allocated), with the trainable fraction and the fp16 size of each part.

Trainable = what ``nextgpt train --stage N`` trains, per stage (the stage specs of
:data:`nextgpt_core.training.trainable.STAGES`): stage 1 the input projectors and the wrapper tokens' input rows,
stage 2 the output projectors and the signal tokens' input and LM-head rows, stage 3 LoRA, every projector and the
rows of both. Everything else is frozen. The ``trainable`` column and total are stage 3's, the largest set.
Local weight folders that are not set are replaced by the bundled full-size configs (:mod:`.paths`), so
``nextgpt params --composition nextgpt-v0`` works with no weights at all.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from nextgpt_registry import resolve_target

from ..composition import ResolvedComposition

__all__ = ["ComponentCount", "ParamReport", "count_parameters", "count_pipeline_folder"]


@dataclass
class ComponentCount:
    """One row: a component, its parameters, how many are trained, and a note (e.g. a shared branch)."""

    name: str
    role: str
    total: int
    trainable: int
    note: str = ""
    counted: bool = True  # False: the parameters are another component's (shared), left out of the sum
    stages: dict[int, int] = field(default_factory=dict)  # {stage: parameters that stage trains}; trainable = stage 3's

    @property
    def fp16_gib(self) -> float:
        """Size of the parameters at fp16, GiB."""
        return self.total * 2 / 2**30


@dataclass
class ParamReport:
    """Every component of one composition; totals count shared parameters once."""

    composition: str
    components: list[ComponentCount] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(c.total for c in self.components if c.counted)

    @property
    def trainable(self) -> int:
        return sum(c.trainable for c in self.components if c.counted)

    @property
    def fraction(self) -> float:
        """Trainable share of all parameters."""
        return self.trainable / self.total if self.total else 0.0

    def by_name(self) -> dict[str, ComponentCount]:
        return {c.name: c for c in self.components}

    @property
    def stages(self) -> dict[int, int]:
        """``{stage: parameters that stage trains}`` (shared parameters once)."""
        numbers = sorted({s for c in self.components for s in c.stages})
        return {s: sum(c.stages.get(s, 0) for c in self.components if c.counted) for s in numbers}

    def to_dict(self) -> dict[str, Any]:
        return {
            "composition": self.composition,
            "components": [asdict(c) for c in self.components],
            "total": self.total,
            "trainable": self.trainable,
            "trainable_fraction": self.fraction,
            "stages": {str(s): n for s, n in self.stages.items()},
        }


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_pipeline_folder(folder: "str | Path", skip: set[str] = frozenset()) -> list[tuple[str, str, int]]:  # type: ignore[assignment]
    """``(part, class, parameters)`` of each model of a diffusers pipeline folder, built on meta from its configs.

    Parts without a ``config.json`` (tokenizer, scheduler) and the names in ``skip`` are left out.
    """
    import diffusers
    import transformers

    folder = Path(folder)
    index = json.loads((folder / "model_index.json").read_text())
    out = []
    for part, spec in index.items():
        if part.startswith("_") or part in skip or not isinstance(spec, list) or spec[0] is None:
            continue
        sub = folder / part
        if not (sub / "config.json").is_file():
            continue
        library, cls = spec
        if library == "diffusers":
            klass = getattr(diffusers, cls)
            with torch.device("meta"):
                module = klass.from_config(klass.load_config(sub))
        elif library == "transformers":
            klass = getattr(transformers, cls)
            config = klass.config_class.from_pretrained(sub, local_files_only=True)
            with torch.device("meta"):
                module = klass(config)
        else:
            continue
        out.append((part, cls, _numel(module)))
    return out


def _config_of(component: Any) -> tuple[Any, Any]:
    klass = resolve_target(component.target)
    return klass, klass.make_config(component.options)


def _encoder_counts(resolved: ResolvedComposition) -> list[ComponentCount]:
    from ..imagebind.encoder import ImageBindEncoderConfig

    rows: list[ComponentCount] = []
    branches: dict[tuple[Any, ...], str] = {}
    for key, m in resolved.modalities.items():
        if m.encoder is None:
            continue
        klass, config = _config_of(m.encoder)
        name = f"{key}/encoder {m.encoder.id}"
        if isinstance(config, ImageBindEncoderConfig) and config.checkpoint is not None:
            branch = (config.checkpoint, config.modality, config.size)
            if branch in branches:  # one frozen branch per checkpoint and modality (ImageBindEncoder shares it)
                owner = branches[branch]
                rows.append(ComponentCount(name, "encoder", rows[[r.name for r in rows].index(owner)].total, 0,
                                           f"shares the {config.modality} branch of {owner}", counted=False))
                continue
            branches[branch] = name
        options = dict(m.encoder.options)
        if "checkpoint" in klass.config_class.model_fields:
            options["checkpoint"] = None  # build the architecture only; weights are never read for counting
        with torch.device("meta"):
            module = klass.from_options(options)
        rows.append(ComponentCount(name, "encoder", _numel(module), 0))
    return rows


def _decoder_count(key: str, component: Any) -> ComponentCount:
    klass, config = _config_of(component)
    name = f"{key}/decoder {component.id}"
    path = getattr(config, "path", None)
    if path is not None and (Path(path) / "model_index.json").is_file():
        decoder = klass.from_options(component.options)
        skip = {k for k, v in decoder.from_pretrained_kwargs().items() if v is None}
        parts = count_pipeline_folder(path, skip)
        note = ", ".join(f"{part} {n:,}" for part, _, n in parts)
        return ComponentCount(name, "decoder", sum(n for _, _, n in parts), 0, note)
    if getattr(config, "tiny", False):
        decoder = klass.from_options(component.options)
        decoder.load()
        modules = [m for m in decoder.pipe.components.values() if isinstance(m, torch.nn.Module)]
        return ComponentCount(name, "decoder", sum(_numel(m) for m in modules), 0, "tiny build")
    return ComponentCount(name, "decoder", 0, 0, f"not counted: no model_index.json at {path!r}")


def _lora_targets(llm: Any, settings: Any) -> list[str]:
    """The modules the (meta) LLM's LoRA wraps: the composition's list, else what peft recorded."""
    if settings.target_modules:
        return list(settings.target_modules)
    config = getattr(llm, "peft_config", {}).get("default")
    return sorted(getattr(config, "target_modules", None) or [])


def count_parameters(resolved: ResolvedComposition) -> ParamReport:
    """Count every component of ``resolved`` on the meta device (see the module docstring for "trainable")."""
    from .layout import build_meta_llm, llm_config, token_plan

    from ..training.trainable import STAGES

    comp = resolved.composition
    report = ParamReport(comp.name)
    added, rows = token_plan(resolved, llm_config(comp.llm))
    llm = build_meta_llm(resolved, rows, lora=True)  # stage 3 trains LoRA whatever `lora.enabled` says
    lora = sum(p.numel() for n, p in llm.named_parameters() if "lora_" in n)
    base = _numel(llm) - lora
    emb = llm.get_input_embeddings().weight
    head = llm.get_output_embeddings()
    tied = head is None or head.weight is emb
    hidden = emb.shape[1]
    groups = {
        "wrappers": {t for m in resolved.modalities.values() for t in (m.wrapper_tokens or ())},
        "signals": {t for m in resolved.modalities.values() for t in m.signal_tokens},
    }

    def row_count(spec: Any) -> int:
        embed = set().union(*(groups[g] for g in spec.embed_rows))
        head_rows = set().union(*(groups[g] for g in spec.head_rows))
        return (len(embed | head_rows) if tied else len(embed) + len(head_rows)) * hidden

    def by_stage(rule: Any) -> dict[int, int]:
        return {number: rule(spec) for number, spec in STAGES.items()}

    llm_stages = by_stage(row_count)
    last = max(STAGES)
    where = "embed_tokens" if tied else "embed_tokens and lm_head"
    report.components.append(ComponentCount(
        f"llm {type(llm.get_base_model() if hasattr(llm, 'get_base_model') else llm).__name__}", "llm", base,
        llm_stages[last], f"{rows} rows x {hidden}; trained: rows of the {len(added)} added tokens in {where}",
        stages=llm_stages,
    ))
    if lora:
        report.components.append(ComponentCount(
            f"lora r={comp.lora.r}", "lora", lora, lora,
            ", ".join(_lora_targets(llm, comp.lora)) + ("" if comp.lora.enabled else " (added by stage 3)"),
            stages=by_stage(lambda spec: lora if spec.lora else 0),
        ))
    report.components.extend(_encoder_counts(resolved))

    def projector(name: str, role: str, component: Any) -> None:
        klass = resolve_target(component.target)
        with torch.device("meta"):
            n = _numel(klass.from_options(component.options))
        flag = "input_projectors" if role == "input_projector" else "output_projectors"
        report.components.append(ComponentCount(name, role, n, n, component.id,
                                                stages=by_stage(lambda spec: n if getattr(spec, flag) else 0)))

    if resolved.shared_input_projector is not None:
        projector("input_projector shared", "input_projector", resolved.shared_input_projector)
    for key, m in resolved.modalities.items():
        if m.input_projector is not None:
            projector(f"{key}/input_projector", "input_projector", m.input_projector)
        for p in m.output_projectors:
            projector(f"{key}/output_projector {p.fills}", "output_projector", p)
    for key, m in resolved.modalities.items():
        if m.decoder is not None:
            report.components.append(_decoder_count(key, m.decoder))
    return report
