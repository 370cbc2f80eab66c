"""What each NExT-GPT training stage trains, set exactly, with row-level training of the added tokens.

Stages are data (:data:`STAGES`); :func:`apply_stage` freezes the whole model, then makes trainable exactly the
stage's set and returns it as a :class:`TrainableSet` (counts per component, printable, saved as JSON).

| stage | trains | official (legacy ``code/``) |
|---|---|---|
| 1 ``encoding``    | input projectors + the wrapper tokens' **input-embedding** rows | ``llama_proj`` (+ whole matrices, by accident) |
| 2 ``decoding``    | output projectors + the signal tokens' rows in the input embedding **and** the LM head | output projectors (+ whole matrices) |
| 3 ``instruction`` | LoRA (peft, the composition's ``[lora]``) + input and output projectors + the rows of stages 1 and 2 | LoRA + all projectors (+ whole matrices) |

Stage 3 trains the added tokens' rows (wrapper input rows; signal input and LM-head rows) because the official
stage 3 trained them (it trained the whole matrices, see the reference §2.1) and the instruction data both reads
media (wrappers) and must emit signal runs (signal LM-head rows); every *other* row stays frozen. To freeze them
too, pass ``dataclasses.replace(STAGES[3], embed_rows=(), head_rows=())`` to :func:`apply_stage`.

Row-level training (:class:`RowTraining`): the embedding and LM-head matrices stay frozen (``requires_grad =
False``); the named rows are separate small ``Parameter`` s ``(k, H)`` (initialised from the current rows), and
forward hooks on the embedding and the LM-head modules substitute them: the embedding output at positions whose id
is a named row is replaced by that row, and the LM head's logits of the named ids are recomputed as
``hidden @ rows.T`` (+ bias). So gradients, AdamW moments and weight decay exist only for the named rows; every
other entry of both matrices is bit-identical whatever optimizer is used. :meth:`RowTraining.merge` copies the
rows into the matrices (the forward does not change), so :func:`nextgpt_core.checkpoint.save_checkpoint` then saves
them as ``token_rows``; :meth:`RowTraining.export_rows` gives the same tensors without touching the model. The
hooks sit on the module objects, so they keep working when peft wraps the LLM afterwards (stage 3).

Tied embeddings (``lm_head.weight is embed_tokens.weight``): one parameter holds the union of the embedding and
LM-head rows and both hooks use it; training a wrapper's input row then also changes its output row (the matrix is
one), and the checkpoint stores it once (``embed_tokens`` only), as ``save_checkpoint`` does for tied models.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from ..model import NextGPT

__all__ = [
    "ROW_GROUPS",
    "STAGES",
    "RowTraining",
    "StageSpec",
    "TrainableSet",
    "apply_stage",
    "get_stage",
    "remove_row_training",
    "token_ids_of",
]

ROW_GROUPS = ("wrappers", "signals")
"""Token groups a stage may name: every modality's wrapper tokens, every modality's signal tokens."""

ROWS_ATTRIBUTE = "trainable_rows"
"""Name of the :class:`RowTraining` submodule :func:`apply_stage` adds to the model."""


@dataclass(frozen=True)
class StageSpec:
    """One stage's trainable set, declared as data.

    Attributes:
        number: 1, 2 or 3.
        name: ``encoding`` / ``decoding`` / ``instruction``.
        input_projectors: train every input projector (``model.input_projectors``, ``shared`` included).
        output_projectors: train every output projector.
        lora: train LoRA on the LLM (wrap it with the composition's ``[lora]`` settings if not wrapped yet).
        embed_rows: token groups (:data:`ROW_GROUPS`) whose input-embedding rows train.
        head_rows: token groups whose LM-head rows train.
        description: one line for tables and docs.
    """

    number: int
    name: str
    input_projectors: bool = False
    output_projectors: bool = False
    lora: bool = False
    embed_rows: tuple[str, ...] = ()
    head_rows: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        bad = [g for g in (*self.embed_rows, *self.head_rows) if g not in ROW_GROUPS]
        if bad:
            raise ValueError(f"unknown token group(s) {bad}; groups: {', '.join(ROW_GROUPS)}")


STAGES: dict[int, StageSpec] = {
    1: StageSpec(
        1,
        "encoding",
        input_projectors=True,
        embed_rows=("wrappers",),
        description="X->text alignment: input projectors + wrapper tokens' input rows; LM loss on the caption",
    ),
    2: StageSpec(
        2,
        "decoding",
        output_projectors=True,
        embed_rows=("signals",),
        head_rows=("signals",),
        description="text->X alignment: output projectors + signal tokens' input and LM-head rows; LM + L2 loss",
    ),
    3: StageSpec(
        3,
        "instruction",
        input_projectors=True,
        output_projectors=True,
        lora=True,
        embed_rows=("wrappers", "signals"),
        head_rows=("signals",),
        description="instruction tuning: LoRA + all projectors + wrapper input rows + signal input/LM-head rows",
    ),
}


def get_stage(stage: int | str | StageSpec) -> StageSpec:
    """A :class:`StageSpec` from ``1``/``2``/``3``, ``"1"``, a name (``"encoding"``...), or a spec (passed through)."""
    if isinstance(stage, StageSpec):
        return stage
    for spec in STAGES.values():
        if str(stage) in (str(spec.number), spec.name):
            return spec
    raise ValueError(f"unknown stage {stage!r}; stages: " + ", ".join(f"{s.number} ({s.name})" for s in STAGES.values()))


def token_ids_of(model: NextGPT, groups: Iterable[str]) -> list[int]:
    """The sorted ids of the token groups (``wrappers`` / ``signals``) of ``model.tokens``."""
    ids: set[int] = set()
    for group in groups:
        if group == "wrappers":
            ids.update(i for pair in model.tokens.wrappers.values() for i in pair)
        elif group == "signals":
            ids.update(model.tokens.all_signal_ids)
        else:
            raise ValueError(f"unknown token group {group!r}; groups: {', '.join(ROW_GROUPS)}")
    return sorted(ids)


# ---------------------------------------------------------------------------------------------- row training
def _is_tied(embed: nn.Module, head: nn.Module | None) -> bool:
    return head is not None and head.weight is embed.weight


class RowTraining(nn.Module):
    """Trainable copies of some rows of a frozen input embedding and LM head, substituted by forward hooks.

    Attributes:
        embed_ids: ``(k_e,)`` long buffer, the input-embedding rows that train.
        head_ids: ``(k_h,)`` long buffer, the LM-head rows that train.
        embed_rows: ``Parameter (k_e, H)``, the current values of those embedding rows (``None`` if ``k_e == 0``).
        head_rows: ``Parameter (k_h, H)`` (the same object as ``embed_rows`` when tied; ``None`` if ``k_h == 0``).
        tied: the LM head shares the embedding's weight; then ``embed_ids == head_ids`` (their union).

    Build it with :meth:`attach`; :meth:`detach` merges the rows and removes the hooks.
    """

    def __init__(self, embed: nn.Module, head: nn.Module | None, embed_ids: Sequence[int], head_ids: Sequence[int]) -> None:
        super().__init__()
        self.tied = _is_tied(embed, head)
        if self.tied:
            embed_ids = head_ids = sorted(set(embed_ids) | set(head_ids))
        if head is None and head_ids:
            raise ValueError("the LLM has no output embeddings (LM head) whose rows could train")
        weight = embed.weight
        vocab = weight.shape[0]
        for ids in (embed_ids, head_ids):
            if ids and (min(ids) < 0 or max(ids) >= vocab):
                raise ValueError(f"row ids {list(ids)} do not fit a vocabulary of {vocab}")
        self._modules_ref = (embed, head)  # a tuple: not registered, so the LLM's weights are not our parameters
        self.register_buffer("embed_ids", torch.tensor(list(embed_ids), dtype=torch.long, device=weight.device), persistent=False)
        self.register_buffer("head_ids", torch.tensor(list(head_ids), dtype=torch.long, device=weight.device), persistent=False)
        # position of each vocabulary id in embed_rows, -1 when the row is not trained: (vocab,)
        lookup = torch.full((vocab,), -1, dtype=torch.long, device=weight.device)
        lookup[self.embed_ids] = torch.arange(len(embed_ids), device=weight.device)
        self.register_buffer("embed_lookup", lookup, persistent=False)
        with torch.no_grad():
            self.embed_rows = nn.Parameter(weight[self.embed_ids].clone()) if embed_ids else None
            if self.tied:
                self.head_rows = self.embed_rows
            else:
                self.head_rows = nn.Parameter(head.weight[self.head_ids].clone()) if head_ids else None  # type: ignore[union-attr]
        self._handles: list[Any] = []

    # -- hooks
    def _embed_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: torch.Tensor) -> torch.Tensor:
        if self.embed_rows is None:
            return output
        ids = args[0] if args else kwargs["input"]
        pos = self.embed_lookup[ids]  # (...,)
        rows = self.embed_rows[pos.clamp(min=0)].to(output.dtype)  # (..., H)
        return torch.where((pos >= 0).unsqueeze(-1), rows, output)

    def _head_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: torch.Tensor) -> torch.Tensor:
        if self.head_rows is None:
            return output
        hidden = args[0] if args else kwargs["input"]  # (..., H)
        bias = getattr(module, "bias", None)
        new = F.linear(hidden, self.head_rows.to(hidden.dtype), None if bias is None else bias[self.head_ids].to(hidden.dtype))
        return output.index_copy(-1, self.head_ids, new.to(output.dtype))  # (..., V), named columns replaced

    @classmethod
    def attach(cls, llm: Any, embed_ids: Sequence[int], head_ids: Sequence[int]) -> RowTraining:
        """Freeze ``llm``'s embedding and LM-head weights and hook trainable copies of the named rows into them.

        Args:
            llm: a Hugging Face causal LM, plain or peft-wrapped (``get_input/output_embeddings`` are used).
            embed_ids: ids of the input-embedding rows that train.
            head_ids: ids of the LM-head rows that train.
        """
        embed, head = llm.get_input_embeddings(), llm.get_output_embeddings()
        self = cls(embed, head, embed_ids, head_ids)
        embed.weight.requires_grad_(False)
        if head is not None:
            head.weight.requires_grad_(False)
        self._handles.append(embed.register_forward_hook(self._embed_hook, with_kwargs=True))
        if head is not None and len(self.head_ids):
            self._handles.append(head.register_forward_hook(self._head_hook, with_kwargs=True))
        return self

    def detach(self) -> None:
        """Merge the rows into the matrices and remove the hooks (the forward is unchanged by this)."""
        self.merge()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # -- results
    @torch.no_grad()
    def merge(self) -> None:
        """Copy the trained rows into the (frozen) embedding and LM-head matrices, in place.

        Call it before ``model.save_checkpoint`` (which reads the matrices' ``token_rows``). Idempotent; the forward
        does not change (the hooks substitute the same values), so training may go on afterwards.
        """
        embed, head = self._modules_ref
        if self.embed_rows is not None:
            embed.weight[self.embed_ids] = self.embed_rows.to(embed.weight.dtype)
        if self.head_rows is not None and not self.tied:
            head.weight[self.head_ids] = self.head_rows.to(head.weight.dtype)  # type: ignore[union-attr]

    @torch.no_grad()
    def reload(self) -> None:
        """The inverse of :meth:`merge`: set the trained rows from the matrices (after a checkpoint was loaded into
        the LLM, so training resumes from the loaded rows)."""
        embed, head = self._modules_ref
        if self.embed_rows is not None:
            self.embed_rows.copy_(embed.weight[self.embed_ids])
        if self.head_rows is not None and not self.tied:
            self.head_rows.copy_(head.weight[self.head_ids])  # type: ignore[union-attr]

    @torch.no_grad()
    def export_rows(self, ids: Sequence[int]) -> dict[str, torch.Tensor]:
        """The current rows ``ids`` as the checkpoint's ``token_rows`` tensors, without changing the model.

        Returns:
            ``{"ids": (n,), "embed_tokens": (n, H)}`` plus ``"lm_head": (n, H)`` unless tied; trained rows come from
            the row parameters, the others from the matrices.
        """
        embed, head = self._modules_ref
        index = torch.tensor(list(ids), dtype=torch.long, device=embed.weight.device)
        out = {"ids": index.cpu(), "embed_tokens": self._rows(embed.weight, index, self.embed_ids, self.embed_rows)}
        if head is not None and not self.tied:
            out["lm_head"] = self._rows(head.weight, index, self.head_ids, self.head_rows)
        return out

    @staticmethod
    def _rows(weight: torch.Tensor, index: torch.Tensor, trained: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        result = weight[index].clone()
        if rows is not None:
            for j, i in enumerate(trained.tolist()):
                hit = (index == i).nonzero()
                if len(hit):
                    result[hit[0, 0]] = rows[j].to(result.dtype)
        return result.cpu()


def remove_row_training(model: nn.Module) -> None:
    """Merge and remove a :class:`RowTraining` that :func:`apply_stage` attached to ``model`` (no-op if none)."""
    rows = getattr(model, ROWS_ATTRIBUTE, None)
    if isinstance(rows, RowTraining):
        rows.detach()
        delattr(model, ROWS_ATTRIBUTE)


# ---------------------------------------------------------------------------------------------- the trainable set
@dataclass
class TrainableSet:
    """What a stage trains: parameters by component, counts, and the row training.

    Attributes:
        stage: the :class:`StageSpec` applied.
        parameters: ``{component: [(qualified name in the model, Parameter), ...]}``; components are
            ``input_projectors.<key>``, ``output_projectors.<key>.<conditioning>``, ``llm.lora``,
            ``embed_tokens.rows`` and ``lm_head.rows`` (``embed_tokens+lm_head.rows`` when tied).
        counts: ``{component: number of trainable scalars}``.
        row_tokens: ``{"embed_tokens" | "lm_head" | "embed_tokens+lm_head": [token names]}``.
        total_params: scalars in the whole model (every parameter of the module tree, each once, the row copies
            not counted again; decoders are outside the tree, load lazily and never train).
        rows: the :class:`RowTraining` (``None`` when the stage trains no rows).
        notes: anything the stage did besides freezing (e.g. wrapping the LLM with LoRA).
        new_ids: the added tokens' ids (the rows a checkpoint stores).
        train_modules: the modules that run in train mode while the stage trains (its projectors, the LoRA
            branches with their dropout); everything else runs in eval mode (:meth:`set_modes`).
    """

    stage: StageSpec
    parameters: dict[str, list[tuple[str, nn.Parameter]]]
    counts: dict[str, int]
    row_tokens: dict[str, list[str]]
    total_params: int
    rows: RowTraining | None = None
    notes: list[str] = field(default_factory=list)
    new_ids: list[int] = field(default_factory=list)
    train_modules: list[nn.Module] = field(default_factory=list)

    @property
    def trainable(self) -> int:
        """Total trainable scalars."""
        return sum(self.counts.values())

    @property
    def fraction(self) -> float:
        """``trainable / total_params``."""
        return self.trainable / self.total_params if self.total_params else 0.0

    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Every trainable ``(name, Parameter)``, each once, in component order."""
        seen: set[int] = set()
        out = []
        for items in self.parameters.values():
            for name, p in items:
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append((name, p))
        return out

    def set_modes(self, model: nn.Module) -> None:
        """Train mode for exactly :attr:`train_modules`, eval mode for everything else of ``model`` (encoders,
        the LLM's frozen base, projectors the stage does not train) and for every loaded decoder.

        Frozen means frozen: a frozen part must compute during training what it computes at inference (the
        ImageBind audio branch has DropPath 0.1, which eval mode turns off; a frozen GPT-2 base has dropout), and
        it must not draw random numbers, so that a resumed run draws what the uninterrupted one drew.
        """
        model.eval()
        for module in self.train_modules:
            module.train()
        for decoder in getattr(model, "decoders", {}).values():
            decoder.freeze()

    def merge(self) -> None:
        """Copy trained rows into the embedding/LM-head matrices (do this before ``model.save_checkpoint``)."""
        if self.rows is not None:
            self.rows.merge()

    def export_rows(self) -> dict[str, torch.Tensor] | None:
        """The added tokens' rows (``tokens.new_ids``) as the checkpoint's ``token_rows`` tensors
        (``ids (n,)``, ``embed_tokens (n, H)``, ``lm_head (n, H)`` unless tied), or ``None`` without row training."""
        return None if self.rows is None else self.rows.export_rows(self.new_ids)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "stage": dataclasses.asdict(self.stage),
            "counts": dict(self.counts),
            "trainable": self.trainable,
            "total": self.total_params,
            "fraction": self.fraction,
            "row_tokens": self.row_tokens,
            "tied_embeddings": bool(self.rows is not None and self.rows.tied),
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path``; returns it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    def table(self) -> str:
        """A plain-text table: one line per component, then the total and the fraction of all parameters."""
        rows = [(name, f"{n:,}") for name, n in self.counts.items()]
        rows.append(("total trainable", f"{self.trainable:,}"))
        rows.append(("all parameters", f"{self.total_params:,}"))
        rows.append(("fraction", f"{100 * self.fraction:.4f} %"))
        width = max(len(r[0]) for r in rows)
        nwidth = max(len(r[1]) for r in rows)
        lines = [f"stage {self.stage.number} ({self.stage.name}): {self.stage.description}"]
        for i, (name, n) in enumerate(rows):
            if i == len(self.counts):
                lines.append("-" * (width + nwidth + 2))
            lines.append(f"{name:<{width}}  {n:>{nwidth}}")
        for where, names in self.row_tokens.items():
            lines.append(f"{where} rows: {', '.join(names)}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _is_peft(llm: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(llm, PeftModel)


def _wrap_lora(model: NextGPT) -> list[str]:
    settings = model.composition.lora
    notes = model.enable_lora(settings)
    if not settings.enabled:
        notes.append("the composition had `lora.enabled = false`; the model's composition now says true, and so do "
                     "its checkpoints' manifests (`nextgpt generate --checkpoint` takes the LoRA settings from there)")
    return notes


_LORA_BRANCHES = ("lora_A", "lora_B", "lora_dropout", "lora_embedding_A", "lora_embedding_B")
"""peft's per-layer containers of the LoRA branch (each a ModuleDict keyed by adapter name)."""


def apply_stage(model: NextGPT, stage: int | str | StageSpec) -> TrainableSet:
    """Freeze ``model`` and make trainable exactly ``stage``'s set; returns it.

    Steps: wrap the LLM with LoRA if the stage trains LoRA and it is not wrapped; merge and remove any row training
    of an earlier stage; ``requires_grad_(False)`` on everything (LLM, encoders, projectors, loaded decoders); then
    ``requires_grad = True`` on the stage's projectors and LoRA tensors, and attach a :class:`RowTraining` (as the
    submodule ``model.trainable_rows``) for its rows. The embedding and LM-head matrices themselves never train.

    Args:
        model: a :class:`~nextgpt_core.model.NextGPT` (train/eval mode is left as it is; the trainer sets it
            with :meth:`TrainableSet.set_modes`). Loaded decoders are frozen through :meth:`Decoder.freeze`.
        stage: ``1``/``2``/``3``, a stage name, or a custom :class:`StageSpec`.

    Returns:
        The :class:`TrainableSet`; ``{n for n, p in model.named_parameters() if p.requires_grad}`` equals the names
        of ``trainable.named_parameters()``.
    """
    spec = get_stage(stage)
    notes: list[str] = []
    if spec.lora and not _is_peft(model.llm):
        notes.extend(_wrap_lora(model))
    remove_row_training(model)
    model.requires_grad_(False)
    for decoder in model.decoders.values():
        decoder.freeze()  # public contract: every loaded module of the decoder, no gradient, eval mode

    parameters: dict[str, list[tuple[str, nn.Parameter]]] = {}
    train_modules: list[nn.Module] = []

    def take(component: str, prefix: str, module: nn.Module) -> None:
        items = [(f"{prefix}.{n}", p) for n, p in module.named_parameters()]
        for _, p in items:
            p.requires_grad_(True)
        parameters[component] = items
        train_modules.append(module)

    if spec.input_projectors:
        for key, proj in model.input_projectors.items():
            take(f"input_projectors.{key}", f"input_projectors.{key}", proj)
    if spec.output_projectors:
        for key, projs in model.output_projectors.items():
            for name, proj in projs.items():
                take(f"output_projectors.{key}.{name}", f"output_projectors.{key}.{name}", proj)
    if spec.lora:
        items = [(f"llm.{n}", p) for n, p in model.llm.named_parameters() if "lora_" in n]
        if not items:
            raise ValueError("stage trains LoRA but the LLM has no LoRA parameters")
        for _, p in items:
            p.requires_grad_(True)
        parameters["llm.lora"] = items
        # the LoRA branches (lora_A / lora_B and their dropout) train; the layers they wrap stay frozen
        train_modules.extend(m for n, m in model.llm.named_modules() if n.rsplit(".", 1)[-1] in _LORA_BRANCHES)

    embed_ids, head_ids = token_ids_of(model, spec.embed_rows), token_ids_of(model, spec.head_rows)
    stray = sorted(set(embed_ids + head_ids) - set(model.tokens.new_ids))
    if stray:
        raise ValueError(f"row ids {stray} are not added tokens; only tokens.new_ids rows are saved in checkpoints")
    rows: RowTraining | None = None
    row_tokens: dict[str, list[str]] = {}
    if embed_ids or head_ids:
        rows = RowTraining.attach(model.llm, embed_ids, head_ids)
        model.add_module(ROWS_ATTRIBUTE, rows)
        names = {i: t for t, i in model.tokens.added.items()}
        if rows.tied:
            assert rows.embed_rows is not None
            rows.embed_rows.requires_grad_(True)
            parameters["embed_tokens+lm_head.rows"] = [(f"{ROWS_ATTRIBUTE}.embed_rows", rows.embed_rows)]
            row_tokens["embed_tokens+lm_head"] = [names[i] for i in rows.embed_ids.tolist()]
            notes.append("input and output embeddings are tied: one set of rows trains both")
        else:
            for where, attr, p, ids in (
                ("embed_tokens", "embed_rows", rows.embed_rows, embed_ids),
                ("lm_head", "head_rows", rows.head_rows, head_ids),
            ):
                if p is not None:
                    p.requires_grad_(True)
                    parameters[f"{where}.rows"] = [(f"{ROWS_ATTRIBUTE}.{attr}", p)]
                    row_tokens[where] = [names[i] for i in ids]

    counts = {c: sum(p.numel() for _, p in items) for c, items in parameters.items()}
    row_params = {id(p) for p in rows.parameters()} if rows is not None else set()
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values() if id(p) not in row_params)
    return TrainableSet(
        stage=spec,
        parameters=parameters,
        counts=counts,
        row_tokens=row_tokens,
        total_params=total,
        rows=rows,
        notes=notes,
        new_ids=list(model.tokens.new_ids),
        train_modules=train_modules,
    )
