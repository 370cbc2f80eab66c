"""The contracts a modality plugin implements: Encoder, InputProjector, OutputProjector, Decoder, MediaIO.

Shapes are the contract. ``B`` is the batch, ``H`` the LLM hidden size, ``N`` a modality's signal-token count.

- ``Encoder``:          media --preprocess--> item tensor --forward--> ``(B, n_tokens, enc_dim)``
- ``InputProjector``:   ``(B, n_tokens, enc_dim)`` -> ``(B, n_llm_tokens, H)``
- ``OutputProjector``:  ``hidden (B, N, H)``, ``signal_embeds (B, N, H)`` -> ``(B, length, dim)`` of one named
  decoder conditioning input
- ``Decoder``:          ``{name: (B, length, dim)}`` -> ``list`` of ``B`` media objects

Every component is built from one pydantic config (``config_class``, unknown keys rejected) and saves as
``config.json`` + ``model.safetensors`` (:meth:`Component.save_pretrained` / :meth:`Component.from_pretrained`).
"""

from __future__ import annotations

import json
import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from .errors import CheckpointError, ConditioningError, ConfigError
from .serialization import atomic_directory, read_safetensors, write_safetensors

__all__ = [
    "Component",
    "ComponentConfig",
    "ConditioningInput",
    "DecodedItem",
    "Decoder",
    "DecodeOptions",
    "Encoder",
    "InputProjector",
    "InputProjectorConfig",
    "MediaExtent",
    "MediaIO",
    "OutputProjector",
    "OutputProjectorConfig",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class ComponentConfig(BaseModel):
    """Base of every component config: unknown keys are rejected, values validated at construction."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_line(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(config)'}: "
        f"{'unknown key' if err['type'] == 'extra_forbidden' else err['msg']}"
        for err in exc.errors()
    )


def _target_of(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class Component:
    """Shared behaviour of encoders, projectors and decoders: a config and a safetensors round-trip.

    Subclasses set ``config_class`` and take the config as their only ``__init__`` argument.
    """

    config_class: ClassVar[type[ComponentConfig]] = ComponentConfig
    config: ComponentConfig

    @classmethod
    def make_config(cls, options: Mapping[str, Any] | ComponentConfig | None = None) -> ComponentConfig:
        """Validate ``options`` into this class's config; errors name the class and the bad key."""
        if isinstance(options, cls.config_class):
            return options
        try:
            return cls.config_class.model_validate(dict(options or {}))
        except ValidationError as exc:
            raise ConfigError(f"invalid options for {cls.__name__}: {_one_line(exc)}") from exc

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | ComponentConfig | None = None) -> "Component":
        """Build the component from a config or a plain dict of options."""
        return cls(cls.make_config(options))  # type: ignore[call-arg]

    def _state_module(self) -> nn.Module | None:
        """The module whose ``state_dict`` is saved (``self`` for ``nn.Module`` components)."""
        return self if isinstance(self, nn.Module) else None

    def save_pretrained(self, directory: str | os.PathLike[str], *, state_dict: Mapping[str, Any] | None = None) -> Path:
        """Write ``config.json`` (class + config) and ``model.safetensors`` atomically into ``directory``.

        ``state_dict``: the tensors to write instead of the module's own ``state_dict()`` (the same keys): the full
        tensors gathered from a sharded module (FSDP2), whose own ``state_dict()`` holds shards.

        An existing saved component there is replaced; any other non-empty folder is refused
        (:class:`~nextgpt_core.folders.OutputFolderError`)."""
        from .folders import COMPONENT

        directory = Path(directory)
        module = self._state_module()
        if state_dict is not None and module is not None:
            own, given = set(module.state_dict()), set(state_dict)
            if own != given:
                raise ValueError(f"{type(self).__name__}: the given state_dict has keys {sorted(given ^ own)[:5]} that "
                                 "the module does not, or lacks ones it has")
        with atomic_directory(directory, COMPONENT) as tmp:
            payload = {"target": _target_of(type(self)), "config": self.config.model_dump(mode="json")}
            (tmp / CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n")
            if module is not None:
                write_safetensors(dict(state_dict) if state_dict is not None else module.state_dict(), tmp / WEIGHTS_FILE)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], *, strict: bool = True) -> "Component":
        """Load a component written by :meth:`save_pretrained`.

        Called on a base class (``Component.from_pretrained``) it builds the class named in ``config.json``, but
        imports only a module that is already imported or that an installed plugin registers as a component (a
        ``config.json`` cannot make nextgpt import an arbitrary module). The component is first built on the meta
        device (no memory) and its parameter shapes compared with the weights file's header, so a config that
        claims a huge layer is refused before anything is allocated.

        Raises:
            CheckpointError: missing files, malformed JSON, a class mismatch, a target nextgpt will not import, or
                missing / unexpected / mis-shaped weights.
        """
        from nextgpt_registry import RegistryError, resolve_target

        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise CheckpointError(f"{directory}: no {CONFIG_FILE}; not a saved nextgpt component")
        try:
            payload = json.loads(config_path.read_text(encoding="utf-8"))
            target, options = payload["target"], payload["config"]
            if not isinstance(target, str) or not isinstance(options, dict):
                raise TypeError("'target' must be a string and 'config' an object")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{config_path}: malformed component config ({exc})") from exc
        if target != _target_of(cls) and not _importable_target(target):
            raise CheckpointError(
                f"{config_path} names {target!r}, which is neither a {cls.__name__} nor a component an installed "
                "plugin registers; refusing to import it"
            )
        try:
            klass = resolve_target(target)
        except RegistryError as exc:
            raise CheckpointError(f"{config_path}: {exc}") from exc
        if not (isinstance(klass, type) and issubclass(klass, cls)):
            raise CheckpointError(f"{config_path} holds a {target}, not a {cls.__name__}")
        config = klass.make_config(options)
        weights = directory / WEIGHTS_FILE
        if weights.is_file():
            _check_header(klass, config, weights, strict=strict)
        component = klass.from_options(config)
        module = component._state_module()
        if module is not None:
            state = read_safetensors(weights)
            load_state_strict(module, state, where=str(weights), strict=strict)
        return component


def _importable_target(target: str) -> bool:
    """``target``'s module is already imported, or an installed plugin registers ``target`` as a component."""
    import sys

    if target.partition(":")[0] in sys.modules:
        return True
    from .plugins import get_registry

    return any(spec.target == target for spec in get_registry().components.values())


def _check_header(klass: type, config: Any, weights: Path, *, strict: bool) -> None:
    """Build ``klass(config)`` on the meta device and compare its state's names and shapes with the safetensors
    header of ``weights`` (no tensor read, nothing allocated). A class that cannot be built on the meta device is
    left to the full load's own check."""
    from safetensors import safe_open

    try:
        with torch.device("meta"):
            probe = klass(config)
        module = probe._state_module()
        if module is None:
            return
        own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    except Exception:  # noqa: BLE001 - e.g. a component that reads files or seeds a generator at init
        return
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as fh:
            found = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors' own error types
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from exc
    missing, unexpected = sorted(set(own) - set(found)), sorted(set(found) - set(own))
    shapes = sorted(f"{k}: file {found[k]} vs model {own[k]}" for k in set(own) & set(found) if own[k] != found[k])
    if shapes or (strict and (missing or unexpected)):
        parts = [f"{label} {items[:8]}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)) if items]
        raise CheckpointError(f"{weights}: weights do not fit {klass.__name__}: " + "; ".join(parts))


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], *, where: str, strict: bool = True) -> None:
    """``load_state_dict`` that lists every missing, unexpected and mis-shaped key in one error."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if shapes or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if shapes:
            parts.append(f"mis-shaped {shapes[:8]}")
        raise CheckpointError(f"{where}: weights do not fit {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(dict(state), strict=False)


# ---------------------------------------------------------------------------------------------- encoders
class Encoder(Component, nn.Module, ABC):
    """Turns one media item into feature tokens. Built frozen (``requires_grad=False``, ``eval()``) by
    :meth:`from_options` / :meth:`from_pretrained`; a training stage that wants it trainable says so.

    ``preprocess(media) -> Tensor`` runs on CPU without gradients and returns one item's tensor (no batch dim);
    ``forward(x)`` takes a stacked batch ``(B, *item_shape)`` and returns ``(B, n_tokens, output_dim)``.
    """

    def __init__(self, config: ComponentConfig) -> None:
        nn.Module.__init__(self)
        self.config = config

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | ComponentConfig | None = None) -> "Encoder":
        """Build the encoder frozen (eval mode, no gradients): encoders are never trained by default."""
        encoder = super().from_options(options)
        assert isinstance(encoder, Encoder)
        return encoder.freeze()

    @classmethod
    @abstractmethod
    def output_dim_of(cls, config: ComponentConfig) -> int:
        """``enc_dim`` of the features this encoder produces with ``config`` (no weights needed)."""

    @property
    def output_dim(self) -> int:
        """``enc_dim``: size of each feature token."""
        return self.output_dim_of(self.config)

    def freeze(self) -> "Encoder":
        """Stop gradients and switch to eval mode (the default state after the model is assembled)."""
        self.requires_grad_(False)
        return self.eval()

    @abstractmethod
    def preprocess(self, media: Any) -> torch.Tensor:
        """One media item -> its model-ready tensor (CPU, float32, no batch dim). Raise ``MediaError`` on bad input."""

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *item_shape)`` -> ``(B, n_tokens, output_dim)``."""


# ---------------------------------------------------------------------------------------------- projectors
class InputProjectorConfig(ComponentConfig):
    """``in_dim`` (encoder ``enc_dim``) and ``out_dim`` (LLM hidden); ``None`` is filled in by the composition."""

    in_dim: int | None = None
    out_dim: int | None = None


class InputProjector(Component, nn.Module, ABC):
    """Maps encoder features into the LLM's embedding space: ``(B, n, in_dim)`` -> ``(B, n_llm_tokens, out_dim)``."""

    config_class: ClassVar[type[ComponentConfig]] = InputProjectorConfig

    def __init__(self, config: InputProjectorConfig) -> None:
        nn.Module.__init__(self)
        if config.in_dim is None or config.out_dim is None:
            raise ConfigError(f"{type(self).__name__} needs `in_dim` and `out_dim` (got {config.in_dim}, {config.out_dim})")
        self.config = config

    @abstractmethod
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, n_tokens, in_dim)`` -> ``(B, n_llm_tokens, out_dim)``."""


class OutputProjectorConfig(ComponentConfig):
    """Shape of an output projector; ``None`` fields are filled in by the composition.

    Attributes:
        in_dim: LLM hidden size ``H``.
        num_signal_tokens: ``N``, the length of the modality's signal run.
        out_len: ``length`` of the decoder conditioning input it fills (77 for SD).
        out_dim: ``dim`` of that input (768 for SD-1.5).
        add_signal_embeddings: add the signal tokens' input-embedding rows to the hidden states first (official).
    """

    in_dim: int | None = None
    num_signal_tokens: int | None = None
    out_len: int | None = None
    out_dim: int | None = None
    add_signal_embeddings: bool = True


class OutputProjector(Component, nn.Module, ABC):
    """Maps the LLM's signal-token hidden states to one named decoder conditioning input.

    ``forward(hidden (B, N, in_dim), signal_embeds (B, N, in_dim)) -> (B, out_len, out_dim)``.
    """

    config_class: ClassVar[type[ComponentConfig]] = OutputProjectorConfig

    def __init__(self, config: OutputProjectorConfig) -> None:
        nn.Module.__init__(self)
        unset = [k for k in ("in_dim", "num_signal_tokens", "out_len", "out_dim") if getattr(config, k) is None]
        if unset:
            raise ConfigError(f"{type(self).__name__} needs {', '.join(unset)} (fill them or build it from a composition)")
        self.config = config

    @property
    def output_shape(self) -> tuple[int, int]:
        """``(out_len, out_dim)``."""
        return (int(self.config.out_len), int(self.config.out_dim))  # type: ignore[attr-defined]

    def combine(self, hidden: torch.Tensor, signal_embeds: torch.Tensor) -> torch.Tensor:
        """``hidden + signal_embeds`` when ``add_signal_embeddings`` (official), else ``hidden``; ``(B, N, in_dim)``."""
        return hidden + signal_embeds if self.config.add_signal_embeddings else hidden  # type: ignore[attr-defined]

    @abstractmethod
    def forward(self, hidden: torch.Tensor, signal_embeds: torch.Tensor) -> torch.Tensor:
        """``(B, N, in_dim)``, ``(B, N, in_dim)`` -> ``(B, out_len, out_dim)``."""


# ---------------------------------------------------------------------------------------------- decoders
@dataclass(frozen=True)
class ConditioningInput:
    """One named conditioning tensor a decoder takes, per item ``(length, dim)``.

    SD-1.5 takes one, ``ConditioningInput("prompt_embeds", 77, 768)``; AudioLDM2 takes two (a T5 sequence and a
    GPT-2 sequence). An output projector fills exactly one of them.
    """

    name: str
    length: int
    dim: int
    description: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        """``(length, dim)``."""
        return (self.length, self.dim)


@dataclass(frozen=True, eq=False)
class DecodedItem:
    """A decoder's output item with facts about how it was made (a retrieval decoder: which gallery file, its
    score). ``data`` is the modality's media object; the model puts ``details`` on the reply's ``Media`` part."""

    data: Any
    details: Mapping[str, Any]


def unwrap_decoded(item: Any) -> tuple[Any, dict[str, Any] | None]:
    """``(media, details)`` of a decoder's output item (``details`` is ``None`` for a plain media object)."""
    if isinstance(item, DecodedItem):
        return item.data, dict(item.details)
    return item, None


class DecodeOptions(BaseModel):
    """Base of a decoder's per-request options (steps, guidance, size, ...); unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")


class Decoder(Component, ABC):
    """Wraps a generator (usually a diffusers pipeline) fed with conditioning embeddings.

    Lifecycle: construction is cheap; heavy weights load on first use (:meth:`load`), from a local path only,
    never from a hub. At load the decoder encodes ``""`` the way its pipeline would and caches the result as its
    unconditional (negative) conditioning, used for classifier-free guidance.

    Subclasses implement :meth:`conditioning_inputs_of`, :meth:`_load`, :meth:`encode_unconditional` and
    :meth:`generate`, and set ``options_class`` (per-request options with their defaults).
    """

    options_class: ClassVar[type[DecodeOptions]] = DecodeOptions
    #: ``True``: stage 2 trains this decoder's output projectors against the modality encoder's embedding of each
    #: sample's target media (a retrieval decoder), not against :meth:`encode_text` of the caption
    targets_from_media: ClassVar[bool] = False
    #: ``False`` for a decoder that draws nothing at random (retrieval): the seed does not change its output
    seeded: ClassVar[bool] = True

    def __init__(self, config: ComponentConfig) -> None:
        self.config = config
        self._loaded = False
        self._unconditional: dict[str, torch.Tensor] | None = None
        self._load_lock = threading.Lock()
        self.device = torch.device("cpu")

    # -- declared contract
    @classmethod
    @abstractmethod
    def conditioning_inputs_of(cls, config: ComponentConfig) -> tuple[ConditioningInput, ...]:
        """The named conditioning inputs this decoder takes with ``config`` (no weights needed)."""

    @classmethod
    def check_local_files(cls, config: ComponentConfig, *, require: bool = False) -> None:
        """Check the local weights ``config`` points at against what it declares, from their config files only
        (no weights read); ``require``: a missing folder is an error too (``nextgpt compose validate``).

        Raises:
            ConfigError: the folder's models do not fit the declared conditioning inputs (one line naming both).
            WeightsNotFoundError: ``require`` and the folder is not there.

        The base class has nothing to check; decoders over local folders override it.
        """

    @property
    def conditioning_inputs(self) -> tuple[ConditioningInput, ...]:
        """The named conditioning inputs, in declaration order."""
        return self.conditioning_inputs_of(self.config)

    def attach_encoder(self, encoder: "Encoder | None", *, component: str, media_io: "MediaIO") -> None:
        """Called by the model before the decoder's first use with the composition's encoder of the same modality
        (``None`` when it has none), its component id and the modality's ``MediaIO``. A decoder that works in the
        encoder's embedding space (retrieval) checks here that its gallery was indexed with this encoder; the
        default does nothing."""

    # -- lifecycle
    @property
    def is_loaded(self) -> bool:
        """Whether the heavy parts are in memory."""
        return self._loaded

    def load(self) -> "Decoder":
        """Load the heavy parts (idempotent, thread-safe), :meth:`freeze` them and cache the unconditional
        conditioning."""
        with self._load_lock:
            if not self._loaded:
                self._load()
                self.freeze()
                with torch.no_grad():
                    uncond = self.encode_unconditional()
                self._check(uncond, batch=1, what="encode_unconditional()")
                self._unconditional = {k: v.detach() for k, v in uncond.items()}
                self._loaded = True
        return self

    def torch_modules(self) -> list[nn.Module]:
        """The loaded torch modules of this decoder (UNet, VAE, text encoders, vocoder, ...), each once; empty while
        not loaded. The default is :meth:`_state_module` (when it is a module); pipeline decoders list their
        pipeline's modules."""
        module = self._state_module()
        return [module] if isinstance(module, nn.Module) else []

    def freeze(self) -> "Decoder":
        """Make the decoder frozen: ``requires_grad = False`` and eval mode on every module of
        :meth:`torch_modules`. Decoders never train; :meth:`load` calls this, and so does every training stage
        (``training.trainable.apply_stage``). Idempotent; a no-op while nothing is loaded. Returns ``self``."""
        for module in self.torch_modules():
            module.requires_grad_(False)
            module.eval()
        return self

    def unload(self) -> None:
        """Drop the heavy parts; the next call loads them again."""
        self._unload()
        self._loaded = False
        self._unconditional = None

    def to(self, device: str | torch.device) -> "Decoder":
        """Move the loaded parts to ``device`` (the default implementation moves ``_state_module()``)."""
        self.device = torch.device(device)
        module = self._state_module()
        if module is not None:
            module.to(self.device)
        return self

    def enable_offload(self) -> None:
        """Keep weights on CPU and move them to the accelerator only while generating (if supported)."""
        raise NotImplementedError(f"{type(self).__name__} does not support offloading")

    def unconditional(self) -> dict[str, torch.Tensor]:
        """The cached encoding of ``""``: ``{name: (1, length, dim)}`` (loads the decoder if needed)."""
        self.load()
        assert self._unconditional is not None
        return self._unconditional

    @abstractmethod
    def _load(self) -> None:
        """Load weights (from a local path, or build a tiny random instance)."""

    def _unload(self) -> None:
        """Release what :meth:`_load` allocated (default: nothing)."""

    @abstractmethod
    def encode_unconditional(self) -> dict[str, torch.Tensor]:
        """Encode ``""`` as the pipeline would: ``{name: (1, length, dim)}`` for every conditioning input."""

    def encode_text(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The decoder's own text encoding of each caption: the stage-2 L2 targets of the output projector.

        NExT-GPT's decoding-side alignment (stage 2) trains each output projector to produce, for a caption, what the
        decoder's pipeline itself computes when called with ``prompt=caption`` (SD: CLIP ``last_hidden_state``;
        ZeroScope: OpenCLIP text states; AudioLDM: CLAP ``text_embeds``, L2-normalised). Loads the decoder if needed.

        Args:
            texts: the captions (``""`` included: ``encode_text([""])`` equals :meth:`unconditional`).

        Returns:
            ``{name: (len(texts), length, dim)}`` float tensors on CPU, one per :attr:`conditioning_inputs`, in the
            pipeline's dtype (no gradient), shaped exactly like the conditioning the decoder takes.

        Raises:
            NotImplementedError: the decoder cannot encode text (the default).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot encode text targets")

    def denoising_loss(
        self,
        conditioning: dict[str, torch.Tensor],
        targets: Sequence[Any],
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The optional stage-2/3 denoising loss: the frozen generator's own training loss on ``targets`` when
        conditioned on the projected signal states (NExT-GPT's new code adds it to the caption L2).

        Args:
            conditioning: ``{name: (S, length, dim)}`` from the output projectors, attached to their autograd graph
                (gradients flow into it; the decoder's weights stay frozen).
            targets: ``S`` target media as the modality's ``MediaIO.read`` returns them.
            generator: draws the noise and the timesteps.

        Returns:
            ``(S,)`` float32: one loss per target.

        Raises:
            NotImplementedError: the decoder has no denoising loss (the default).
        """
        raise NotImplementedError(f"{type(self).__name__} has no denoising loss")

    @abstractmethod
    def generate(
        self,
        conditioning: dict[str, torch.Tensor],
        negative: dict[str, torch.Tensor],
        *,
        generator: torch.Generator | None,
        options: DecodeOptions,
    ) -> list[Any]:
        """``{name: (B, length, dim)}`` and matching negatives -> ``B`` media objects."""

    # -- the one way to run it
    def make_options(self, options: Mapping[str, Any] | None = None) -> DecodeOptions:
        """Validate per-request options (unknown keys and bad values raise ``ConfigError``)."""
        try:
            return self.options_class.model_validate(dict(options or {}))
        except ValidationError as exc:
            raise ConfigError(f"invalid decode options for {type(self).__name__}: {_one_line(exc)}") from exc

    def __call__(
        self,
        conditioning: Mapping[str, torch.Tensor],
        *,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> list[Any]:
        """Generate media from conditioning embeddings.

        Args:
            conditioning: ``{name: (B, length, dim)}``, one entry per :attr:`conditioning_inputs`.
            generator: seeds the sampling noise.
            **options: per-request options (see ``options_class``).

        Returns:
            ``B`` media objects (the modality's media type, e.g. a PIL image).

        Raises:
            ConditioningError: a missing, unknown or mis-shaped conditioning input.
        """
        opts = self.make_options(options)
        batch = self._check(conditioning, batch=None, what="conditioning")
        negative = {k: v.expand(batch, *v.shape[1:]) for k, v in self.unconditional().items()}
        conditioning = {k: v.to(self.device) for k, v in conditioning.items()}
        negative = {k: v.to(self.device, dtype=conditioning[k].dtype) for k, v in negative.items()}
        with torch.no_grad():
            return self.generate(conditioning, negative, generator=generator, options=opts)

    def _check(self, tensors: Mapping[str, torch.Tensor], *, batch: int | None, what: str) -> int:
        declared = {c.name: c for c in self.conditioning_inputs}
        missing = sorted(set(declared) - set(tensors))
        unknown = sorted(set(tensors) - set(declared))
        if missing or unknown:
            raise ConditioningError(
                f"{type(self).__name__} {what}: missing {missing}, unknown {unknown}; "
                f"declared inputs: {', '.join(f'{c.name} {c.length}x{c.dim}' for c in declared.values())}"
            )
        sizes = set()
        for name, spec in declared.items():
            t = tensors[name]
            if t.dim() != 3 or tuple(t.shape[1:]) != spec.shape:
                raise ConditioningError(
                    f"{type(self).__name__} {what}: {name!r} has shape {tuple(t.shape)}, expected (B, {spec.length}, {spec.dim})"
                )
            sizes.add(t.shape[0])
        if len(sizes) > 1 or (batch is not None and sizes != {batch}):
            raise ConditioningError(f"{type(self).__name__} {what}: batch sizes differ {sorted(sizes)}")
        return sizes.pop()


# ---------------------------------------------------------------------------------------------- media files
@dataclass(frozen=True)
class MediaExtent:
    """What a media file will cost once decoded, read from its header or container (nothing decoded).

    Attributes:
        seconds: duration (video, audio), else ``None``.
        pixels: width x height of one picture (image, video frame), else ``None``.
        decoded_bytes: bytes of the decoded object :meth:`MediaIO.read` would return, else ``None``.
    """

    seconds: float | None = None
    pixels: int | None = None
    decoded_bytes: int | None = None


class MediaIO(ABC):
    """Reads and writes one modality's files. Named by ``ModalitySpec.media_io``; built with no arguments.

    ``read`` raises ``MediaError`` (one line naming the file) on a missing, corrupt or oversized file.
    """

    @abstractmethod
    def read(self, path: Path) -> Any:
        """Decode the file at ``path`` into the modality's media object."""

    @abstractmethod
    def write(self, media: Any, path: Path) -> Path:
        """Encode ``media`` to ``path`` (which carries the spec's ``output_extension``) and return it."""

    @abstractmethod
    def to_bytes(self, media: Any) -> bytes:
        """A canonical byte form of ``media``, used for content hashing (encoder cache)."""

    def example(self) -> Any | None:
        """A small synthetic media object for demos and smoke tests (``None`` if the plugin offers none)."""
        return None

    def probe(self, path: Path) -> MediaExtent | None:
        """The file's :class:`MediaExtent` from its header / container, without decoding it, so limits apply
        before the work (a server refuses a 1080p hour before decoding a frame). ``None``: not known before
        decoding (the limits then apply to the decoded object). Raises ``MediaError`` for an unreadable file."""
        return None
