"""A base for decoders that wrap a diffusers pipeline fed with conditioning embeddings (no modality code here).

A subclass names its pipeline, says how to build a tiny random-init instance of the real classes, how to encode
``""`` the way the pipeline would, and how to call the pipeline with embeddings. This base handles the rest:
lazy loading from a local folder only (``local_files_only=True``; a missing folder is a
:class:`WeightsNotFoundError`), the dtype, the device, model CPU offload and progress bars.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import logging
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal, Sequence

import torch

from pydantic import model_validator

from .errors import ConfigError, FolderMismatchError, WeightsNotFoundError
from .interfaces import ComponentConfig, ConditioningInput, Decoder
from .language_model import derived_seed

__all__ = [
    "OFFLOAD_DEVICE",
    "CLIPTextDecoder",
    "DiffusersDecoder",
    "DiffusersDecoderConfig",
    "check_captions",
    "check_text_conditioning",
    "encode_empty_negative",
    "encode_prompt_positive",
    "folder_config",
    "folder_mismatch",
    "quiet_library_notices",
    "text_conditioning_problems",
]

#: notices that say nothing actionable to a nextgpt user (deprecated-but-shipped pipelines, the torchvision-free
#: image-processor fallback that nextgpt relies on by design)
_NOISE = ("has been deprecated", "requires torchvision (not installed)")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in _NOISE)


@contextlib.contextmanager
def quiet_library_notices() -> Iterator[None]:
    """Drop diffusers' and transformers' known-harmless notices while a pipeline is imported and built."""
    # make both libraries create their handlers now, so the filters below reach records logged during the block
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.get_logger("diffusers")
    transformers_logging.get_logger("transformers")
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    handlers = [h for lg in loggers for h in lg.handlers]
    noise = _DropNoise()
    for target in (*loggers, *handlers):
        target.addFilter(noise)
    try:
        yield
    finally:
        for target in (*loggers, *handlers):
            target.removeFilter(noise)


class DiffusersDecoderConfig(ComponentConfig):
    """Where the pipeline comes from and how it runs.

    Attributes:
        path: local folder of a saved diffusers pipeline (``model_index.json`` inside). Never a hub id.
        tiny: build a tiny random-init instance of the real pipeline classes instead (tests, the ``tiny``
            composition); the decoder class's ``tiny_options`` (e.g. small conditioning dims) fill the fields the
            user did not set. Exactly one of ``path`` and ``tiny`` is needed.
        dtype: ``float32`` (default, CPU), ``float16`` or ``bfloat16``.
        offload: model CPU offload (``enable_model_cpu_offload``) when a GPU is used.
        seed: seed of the tiny random init.
        progress: show diffusers' progress bar while denoising.
    """

    path: str | None = None
    tiny: bool = False
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    offload: bool = False
    seed: int = 0
    progress: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> "DiffusersDecoderConfig":
        if self.tiny == (self.path is not None):
            raise ValueError("give exactly one of `path` (a local diffusers folder; nothing is downloaded) and `tiny = true`")
        return self


#: the accelerator model CPU offload moves each sub-model to while it runs (diffusers' own default: GPU 0)
OFFLOAD_DEVICE = "cuda:0"

#: marks "inside a call, per-call pipeline not made yet" in :attr:`DiffusersDecoder.pipe`'s context variable
_PENDING = object()


class DiffusersDecoder(Decoder):
    """Decoder over a diffusers pipeline. Subclasses set ``pipeline_class`` and implement :meth:`build_tiny`,
    :meth:`encode_unconditional` and :meth:`generate` (which calls ``self.pipe`` with embeddings).

    One decoder serves concurrent requests: a diffusers pipeline keeps per-call state on itself (the scheduler's
    timesteps, step index and, for PNDM, its history of model outputs; ``_guidance_scale``, ``_num_timesteps``...),
    so each call runs on its own shallow copy of the pipeline with its own deep copy of the scheduler
    (:meth:`request_pipeline`); the weights (UNet, VAE, text encoder) are shared. Inside a call ``self.pipe`` is
    that copy, in the calling thread only (a context variable), so subclasses keep writing ``self.pipe(...)``.
    """

    config_class: ClassVar[type[ComponentConfig]] = DiffusersDecoderConfig
    #: the diffusers pipeline class (loaded with ``from_pretrained(path, local_files_only=True)``)
    pipeline_class: ClassVar[Any]
    #: options implied by ``tiny = true`` (the user's own options win), e.g. ``{"cross_attention_dim": 32}``
    tiny_options: ClassVar[dict[str, Any]] = {}

    @classmethod
    def make_config(cls, options: Any = None) -> ComponentConfig:
        """As :meth:`Component.make_config`, with ``tiny_options`` filled in under ``tiny = true``."""
        if isinstance(options, cls.config_class) or not options or not dict(options).get("tiny"):
            return super().make_config(options)
        return super().make_config({**cls.tiny_options, **dict(options)})

    def __init__(self, config: DiffusersDecoderConfig) -> None:
        self._call_pipe: contextvars.ContextVar[Any] = contextvars.ContextVar(f"pipe-{id(self)}", default=None)
        self._shared_pipe: Any = None
        super().__init__(config)

    @property
    def pipe(self) -> Any:
        """The pipeline: the per-call copy while :meth:`__call__` runs in this thread (made on first use inside
        the call, once the decoder is loaded), else the shared one."""
        own = self._call_pipe.get()
        if own is _PENDING:
            if self._shared_pipe is None:
                return None
            own = self.request_pipeline()
            self._call_pipe.set(own)
        return own if own is not None else self._shared_pipe

    @pipe.setter
    def pipe(self, value: Any) -> None:
        self._shared_pipe = value

    def request_pipeline(self) -> Any:
        """A pipeline for one call: a shallow copy of the loaded one (same weight modules) with a deep copy of its
        scheduler, so concurrent calls never share denoising state."""
        shared = self._shared_pipe
        if shared is None:
            return None
        own = copy.copy(shared)
        scheduler = getattr(shared, "scheduler", None)
        if scheduler is not None:
            own.__dict__["scheduler"] = copy.deepcopy(scheduler)  # plain attribute: the config is left untouched
        return own

    def __call__(self, conditioning: Any, *, generator: torch.Generator | None = None, **options: Any) -> list[Any]:
        """As :meth:`Decoder.__call__` (inputs checked before anything loads), on a per-call pipeline
        (:meth:`request_pipeline`)."""
        token = self._call_pipe.set(_PENDING)
        try:
            return super().__call__(conditioning, generator=generator, **options)
        finally:
            self._call_pipe.reset(token)

    @property
    def torch_dtype(self) -> torch.dtype:
        """The configured dtype as a ``torch.dtype``."""
        return getattr(torch, self.config.dtype)  # type: ignore[attr-defined]

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for ``pipeline_class.from_pretrained`` (e.g. parts to skip)."""
        return {}

    @abstractmethod
    def build_tiny(self) -> Any:
        """A tiny random-init instance of the real pipeline classes (called under a fixed seed)."""

    @classmethod
    def check_local_files(cls, config: Any, *, require: bool = False) -> None:
        """A ``path`` folder must hold ``model_index.json`` (when ``require``, or when the folder exists) and its
        sub-models' ``config.json`` must fit the declared conditioning (:meth:`folder_problems`)."""
        path = getattr(config, "path", None)
        if path is None:
            return
        folder = Path(path)
        if not (folder / "model_index.json").is_file():
            if require or folder.exists():
                raise WeightsNotFoundError(
                    f"{cls.__name__}: no diffusers pipeline at {str(folder)!r} (model_index.json missing); "
                    "nextgpt never downloads weights, give a local folder"
                )
            return
        problems = cls.folder_problems(folder, config)
        if problems:
            raise folder_mismatch(cls.__name__, str(folder), problems)

    @classmethod
    def folder_problems(cls, folder: Path, config: Any) -> list[str]:
        """What in a pipeline folder's sub-model configs contradicts ``config`` (read with :func:`folder_config`);
        empty when it fits. Subclasses compare the shapes their conditioning depends on."""
        return []

    def pipeline_problems(self) -> list[str]:
        """What in the loaded pipeline (``self.pipe``) contradicts the config; empty when it fits. Checked once it
        loads (:meth:`_load`); subclasses compare the parts and shapes their conditioning depends on."""
        return []

    def _load(self) -> None:
        with quiet_library_notices():
            self._load_pipeline()
        problems = self.pipeline_problems()
        if problems:
            self.pipe = None
            raise folder_mismatch(type(self).__name__, self.config.path, problems)  # type: ignore[attr-defined]

    def _load_pipeline(self) -> None:
        config = self.config
        if config.tiny:  # type: ignore[attr-defined]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derived_seed(config.seed, type(self).__name__))  # type: ignore[attr-defined]
                pipe = self.build_tiny()
            for module in pipe.components.values():
                if isinstance(module, torch.nn.Module):
                    module.eval()
            if self.torch_dtype != torch.float32:
                pipe = pipe.to(self.torch_dtype)
        elif config.path is not None:  # type: ignore[attr-defined]
            folder = Path(config.path)  # type: ignore[attr-defined]
            if not (folder / "model_index.json").is_file():
                raise WeightsNotFoundError(
                    f"{type(self).__name__}: no diffusers pipeline at {str(folder)!r} (model_index.json missing); "
                    "nextgpt never downloads weights, give a local folder"
                )
            pipe = self.pipeline_class.from_pretrained(
                folder, local_files_only=True, dtype=self.torch_dtype, **self.from_pretrained_kwargs()
            )
        else:
            raise WeightsNotFoundError(
                f"{type(self).__name__}: no weights: set `path` to a local diffusers folder (or `tiny = true` for a "
                "tiny random-init instance)"
            )
        pipe.set_progress_bar_config(disable=not config.progress)  # type: ignore[attr-defined]
        self.pipe = pipe
        if config.offload and torch.cuda.is_available():  # type: ignore[attr-defined]
            pipe.enable_model_cpu_offload(device=OFFLOAD_DEVICE)
        elif self.device.type != "cpu":
            pipe.to(self.device)

    def _unload(self) -> None:
        self.pipe = None

    def to(self, device: str | torch.device) -> "DiffusersDecoder":
        self.device = torch.device(device)
        if self.pipe is not None and not self.config.offload:  # type: ignore[attr-defined]
            self.pipe.to(self.device)
        return self

    def enable_offload(self) -> None:
        """Model CPU offload: each sub-model moves to the GPU only while it runs (needs accelerate and CUDA)."""
        self.config = self.config.model_copy(update={"offload": True})
        if self.pipe is not None and torch.cuda.is_available():
            self.pipe.enable_model_cpu_offload(device=OFFLOAD_DEVICE)

    @property
    def execution_device(self) -> torch.device:
        """Where the pipeline's models compute, so where its inputs go: under model CPU offload the accelerator
        each sub-model moves to while it runs (:data:`OFFLOAD_DEVICE`), else the pipeline's device (diffusers'
        public ``DiffusionPipeline.device``; the configured ``device`` before loading)."""
        if self.config.offload and torch.cuda.is_available():  # type: ignore[attr-defined]
            return torch.device(OFFLOAD_DEVICE)
        pipe = self.pipe
        return torch.device(pipe.device) if pipe is not None else self.device

    def call_pipeline(self, prompt_embeds: Any, negative_prompt_embeds: Any, *, generator: torch.Generator | None,
                      options: Any, output_type: str, **extra: Any) -> Any:
        """One call of the pipeline with embeddings: the positive and negative ``prompt_embeds``, the options'
        ``num_inference_steps`` and ``guidance_scale``, ``generator`` and ``output_type``; ``extra`` are the
        pipeline's own further arguments (size, frames, audio length, masks). Returns the pipeline's output."""
        return self.pipe(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            num_inference_steps=options.num_inference_steps,
            guidance_scale=options.guidance_scale,
            generator=generator,
            output_type=output_type,
            **extra,
        )

    def torch_modules(self) -> list[torch.nn.Module]:
        """The loaded pipeline's torch modules (UNet, VAE, text encoders, vocoder, ...), each once; empty while
        not loaded."""
        pipe = self._shared_pipe
        if pipe is None:
            return []
        seen: dict[int, torch.nn.Module] = {}
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                seen.setdefault(id(module), module)
        return list(seen.values())

    def _state_module(self) -> None:
        # frozen decoder weights are never saved in nextgpt checkpoints: the composition references them by path
        return None


# ---------------------------------------------------------------------------------------------- CLIP-text pipelines
def encode_empty_negative(pipe: Any, length: int, dim: int, *, device: torch.device | None = None) -> torch.Tensor:
    """The pipeline's own encoding of ``negative_prompt=""``: ``(1, length, dim)`` on ``device``.

    Runs ``pipe.encode_prompt`` down its classifier-free-guidance branch (tokenizer padded to ``length``, then the
    text encoder), exactly as a call with ``prompt_embeds=...`` and ``negative_prompt=""`` does. ``device``: where
    the text encoder computes (:attr:`DiffusersDecoder.execution_device`); default the pipeline's ``device``.
    """
    dtype = pipe.text_encoder.dtype
    device = torch.device(pipe.device) if device is None else device
    placeholder = torch.zeros(1, length, dim, dtype=dtype, device=device)
    _, negative = pipe.encode_prompt(None, device, 1, True, negative_prompt="", prompt_embeds=placeholder)
    return negative


def check_captions(texts: Sequence[str]) -> list[str]:
    """``texts`` as a non-empty list of strings, for ``Decoder.encode_text``: a bare string or a non-string item
    is a ``TypeError``, no texts a ``ValueError``."""
    if isinstance(texts, str):
        raise TypeError("encode_text takes a sequence of captions, not a single string (wrap it in a list)")
    captions = list(texts)
    if not captions:
        raise ValueError("encode_text needs at least one caption")
    if not all(isinstance(t, str) for t in captions):
        raise TypeError("encode_text: every caption must be a str")
    return captions


def encode_prompt_positive(pipe: Any, texts: Sequence[str], *, device: torch.device | None = None) -> torch.Tensor:
    """The pipeline's own encoding of ``prompt=list(texts)``: ``(len(texts), length, dim)`` on CPU, no gradient.

    Runs ``pipe.encode_prompt`` down its positive branch only (no classifier-free guidance): the tokenizer pads and
    truncates each caption to ``tokenizer.model_max_length`` (77), then the text encoder, exactly as a call with
    ``prompt=texts`` does. ``[""]`` gives the same tensor as :func:`encode_empty_negative` (the same branch of code
    in diffusers). ``device``: where the text encoder computes (default the pipeline's ``device``). Raises
    ``TypeError`` for a bare string or a non-string item, ``ValueError`` for no texts.
    """
    captions = check_captions(texts)
    device = torch.device(pipe.device) if device is None else device
    with torch.no_grad():
        positive, _ = pipe.encode_prompt(captions, device, 1, False)
    return positive.detach().cpu()


def folder_config(folder: Path, part: str, name: str = "config.json") -> dict[str, Any]:
    """``folder/part/name`` as a dict (``{}`` when absent); malformed JSON is one :class:`ConfigError` line."""
    import json

    path = folder / part / name
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: malformed JSON ({str(exc).splitlines()[0]})") from exc
    return data if isinstance(data, dict) else {}


def folder_mismatch(name: str, path: str | None, problems: Sequence[str]) -> FolderMismatchError:
    """The one error of a pipeline folder (or tiny build) that does not fit a decoder's config, naming every
    problem: ``<Decoder>: the pipeline at '<path>' does not fit the config: <problem>; <problem>``."""
    where = f"the pipeline at {path!r}" if path is not None else "the tiny pipeline"
    return FolderMismatchError(f"{name}: {where} does not fit the config: " + "; ".join(problems))


def text_conditioning_problems(pipe: Any, length: int, dim: int) -> list[str]:
    """A loaded pipeline's text side (UNet ``cross_attention_dim``, tokenizer ``model_max_length``) against the
    declared ``(length, dim)``: one problem, or none."""
    got_dim = int(pipe.unet.config.cross_attention_dim)
    got_len = int(getattr(pipe.tokenizer, "model_max_length", length)) if pipe.tokenizer is not None else length
    if got_dim != dim or got_len != length:
        return [f"it takes prompt_embeds {got_len}x{got_dim}, the config declares {length}x{dim} "
                "(set cross_attention_dim/text_length to match the folder)"]
    return []


def check_text_conditioning(decoder: Any, pipe: Any, length: int, dim: int) -> None:
    """Raise :class:`~nextgpt_core.errors.FolderMismatchError` (a ``CheckpointError``) when a loaded pipeline's text
    side does not match the declared ``(length, dim)``."""
    problems = text_conditioning_problems(pipe, length, dim)
    if problems:
        raise folder_mismatch(type(decoder).__name__, decoder.config.path, problems)


class CLIPTextDecoder(DiffusersDecoder):
    """A :class:`DiffusersDecoder` whose pipeline conditions on one CLIP-text sequence (Stable Diffusion, ZeroScope,
    AnimateDiff): one input ``prompt_embeds`` of ``(config.text_length, config.cross_attention_dim)``, negatives and
    stage-2 targets from the pipeline's own ``encode_prompt``, and a loaded folder checked against the declared shape.

    Its config must have ``text_length`` and ``cross_attention_dim`` fields.
    """

    @classmethod
    def conditioning_inputs_of(cls, config: Any) -> tuple[ConditioningInput, ...]:  # type: ignore[override]
        return (
            ConditioningInput(
                "prompt_embeds",
                config.text_length,
                config.cross_attention_dim,
                "CLIP text encoder last_hidden_state of the prompt (the UNet's cross-attention context)",
            ),
        )

    @classmethod
    def folder_problems(cls, folder: Path, config: Any) -> list[str]:
        """The UNet's ``cross_attention_dim`` and the text side's length (tokenizer ``model_max_length``, else the
        text encoder's ``max_position_embeddings``) against ``cross_attention_dim`` / ``text_length``."""
        problems = []
        dim = folder_config(folder, "unet").get("cross_attention_dim")
        if isinstance(dim, int) and dim != config.cross_attention_dim:
            problems.append(f"unet cross_attention_dim is {dim}, the config declares {config.cross_attention_dim} "
                            "(set cross_attention_dim)")
        length = folder_config(folder, "tokenizer", "tokenizer_config.json").get("model_max_length")
        if not isinstance(length, int) or length > 1_000_000:  # tokenizers without a limit store a huge number
            length = folder_config(folder, "text_encoder").get("max_position_embeddings")
        if isinstance(length, int) and length != config.text_length:
            problems.append(f"the text encoder takes {length} tokens, the config declares text_length {config.text_length}")
        return problems

    def pipeline_problems(self) -> list[str]:
        """A loaded folder's text side against the declared ``(text_length, cross_attention_dim)`` (the tiny build
        is made to fit)."""
        if self.config.path is None:  # type: ignore[attr-defined]
            return []
        spec = self.conditioning_inputs[0]
        return text_conditioning_problems(self.pipe, spec.length, spec.dim)

    def encode_unconditional(self) -> dict[str, torch.Tensor]:
        """``{"prompt_embeds": (1, 77, dim)}``: what the pipeline computes for ``negative_prompt=""``."""
        spec = self.conditioning_inputs[0]
        return {spec.name: encode_empty_negative(self.pipe, spec.length, spec.dim, device=self.execution_device)}

    def encode_text(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The stage-2 L2 targets: ``{"prompt_embeds": (len(texts), 77, dim)}`` on CPU, what the pipeline's
        ``encode_prompt`` computes for ``prompt=texts``; ``[""]`` gives :meth:`unconditional`."""
        self.load()
        spec = self.conditioning_inputs[0]
        out = {spec.name: encode_prompt_positive(self.pipe, texts, device=self.execution_device)}
        self._check(out, batch=len(out[spec.name]), what="encode_text()")
        return out
