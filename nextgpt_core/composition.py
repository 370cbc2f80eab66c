"""Compositions: which LLM, which modalities and which components, in one TOML file validated by pydantic.

Loading a composition (:func:`load_composition`) checks its syntax and keys without torch. Resolving it
(:func:`resolve_composition`) looks every name up in the registry, merges each plugin's preset with the file's
overrides, fills the projectors' dimensions from their neighbours and rejects a projector that does not fit its
encoder or decoder, naming both. See docs/compositions.md for every key.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from nextgpt_registry import ComponentChoice, ModalitySpec, Registry, RegistryError, UnknownKeyError, resolve_target

from .errors import CompositionError, ConfigError

__all__ = [
    "Composition",
    "ComponentSettings",
    "ResolvedComposition",
    "ResolvedModality",
    "ResolvedRoute",
    "DecoderRouteSettings",
    "builtin_compositions",
    "load_composition",
    "path_settings",
    "paths_file",
    "placeholders",
    "check_llm_folder",
    "check_local_weights",
    "resolve_composition",
]


def _choice(value: Any) -> Any:
    return {"id": value} if isinstance(value, str) else value


Choice = Annotated[ComponentChoice, BeforeValidator(_choice)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: A ``[llm.tiny]`` larger than this many parameters is refused: "tiny" is for tests and toy runs (a real LLM is a
#: local folder, ``llm.path``), and a typo must not become a multi-GB allocation.
TINY_LLM_MAX_PARAMETERS = 1_000_000_000


class TinyLLMSettings(_Strict):
    """A random-init Llama of the real class and a byte-level BPE tokenizer trained offline at build time.

    Bounds (each violation one line naming the key): every size at least 1, the heads divide the width into an
    even head size, the key/value heads divide the heads, and the whole model at most
    :data:`TINY_LLM_MAX_PARAMETERS` parameters.
    """

    hidden_size: int = Field(default=64, ge=2, le=16384)
    intermediate_size: int = Field(default=128, ge=1, le=65536)
    num_hidden_layers: int = Field(default=2, ge=1, le=256)
    num_attention_heads: int = Field(default=4, ge=1, le=1024)
    num_key_value_heads: int = Field(default=4, ge=1, le=1024)
    max_position_embeddings: int = Field(default=512, ge=8, le=1_048_576)
    tokenizer_vocab_size: int = Field(default=300, ge=260, le=65536)

    @model_validator(mode="after")
    def _shapes(self) -> "TinyLLMSettings":
        heads, kv, width = self.num_attention_heads, self.num_key_value_heads, self.hidden_size
        if width % heads or (width // heads) % 2:
            raise ValueError(f"hidden_size {width} must split into num_attention_heads {heads} heads of an even size")
        if heads % kv:
            raise ValueError(f"num_key_value_heads {kv} must divide num_attention_heads {heads}")
        if self.parameters() > TINY_LLM_MAX_PARAMETERS:
            raise ValueError(
                f"about {self.parameters():,} parameters; [llm.tiny] is limited to {TINY_LLM_MAX_PARAMETERS:,} "
                "(use llm.path for a real model)"
            )
        return self

    def parameters(self, added_tokens: int = 64) -> int:
        """Approximate parameter count (untied embedding and head, ``added_tokens`` spare rows)."""
        width, inter = self.hidden_size, self.intermediate_size
        kv_width = width // self.num_attention_heads * self.num_key_value_heads
        per_layer = 2 * width * width + 2 * width * kv_width + 3 * width * inter + 2 * width
        return self.num_hidden_layers * per_layer + 2 * (self.tokenizer_vocab_size + added_tokens) * width + width


class LLMSettings(_Strict):
    """The language model: a local Hugging Face folder (``path``) or a ``tiny`` random instance. Never a hub id."""

    path: str | None = None
    tiny: TinyLLMSettings | None = None
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    #: ``"always"``: every tokenizer call starts with SentencePiece's dummy-prefix space, even when the text already
    #: starts with a space (the SentencePiece library and transformers 4.29's slow ``LlamaTokenizer`` do this; the
    #: tokenizers-backed ``LlamaTokenizer`` of transformers 5 skips it). Only for SentencePiece (Metaspace) tokenizers.
    dummy_prefix: Literal["tokenizer", "always"] = "tokenizer"

    @model_validator(mode="after")
    def _one_source(self) -> "LLMSettings":
        if (self.path is None) == (self.tiny is None):
            raise ValueError("set exactly one of `llm.path` (a local folder) and `[llm.tiny]`")
        return self


class PromptSettings(_Strict):
    """How turns become text. ``{content}`` is replaced by the turn's parts (media as wrapped embeddings).

    Attributes:
        system: text before the first turn.
        user: template of a user turn.
        assistant: template of an earlier assistant turn (history).
        generation_prompt: appended after the last user turn; the reply continues it.
        stop: strings that end the reply (searched in the decoded reply text, modality tokens left out and special
            tokens kept, so ``<|im_end|>`` works).
        bos: ``"start"`` (one BOS at the start), ``"every_segment"`` (a BOS before every text segment, as the
            official v0 demo does) or ``"none"``.
        part_separator: text between the parts of one turn.
        strip_around_tokens: remove the whitespace of a text piece where it touches a wrapper token (what the
            official v0's slow Llama tokenizer did around added tokens).
        join_turns: the text between two media spans is one segment even across turns, the header and the
            generation prompt (the official v0 demo builds one string and splits it only at media); with
            ``bos = "every_segment"`` each such segment gets one BOS. Default: each turn's text is its own segment.
        training_bos: the ``bos`` rule of training layouts (``None``: the same as ``bos``). The official v0 trains
            with one BOS at the start and none after ``</Img>`` (``prompt_wrap``) but infers with one per segment.
        user_prefix_apart: the first user turn's template text before ``{content}`` (``"### Human: "``) is tokenized
            on its own when text follows it, as part of the same segment (no BOS between): official v0 training
            encodes ``"### Human: "`` apart from the caption / question (``prompt_wrap``). In training this holds for
            every sample; at inference for a conversation of one turn (the demo's first turn, ``"### Human:  {text}"``).
    """

    system: str = ""
    user: str = "### Human: {content}\n"
    assistant: str = "### Assistant: {content}\n###"
    generation_prompt: str = "### Assistant:"
    stop: tuple[str, ...] = ("###",)
    bos: Literal["start", "every_segment", "none"] = "start"
    part_separator: str = " "
    strip_around_tokens: bool = False
    join_turns: bool = False
    training_bos: Literal["start", "every_segment", "none"] | None = None
    user_prefix_apart: bool = False

    @property
    def bos_in_training(self) -> str:
        """The BOS rule training layouts use: ``training_bos``, else ``bos``."""
        return self.training_bos or self.bos

    @model_validator(mode="after")
    def _placeholders(self) -> "PromptSettings":
        for name in ("user", "assistant"):
            if "{content}" not in getattr(self, name):
                raise ValueError(f"`prompt.{name}` must contain '{{content}}'")
        return self


class GenerationSettings(_Strict):
    """Defaults of the LLM's sampling; each can be overridden per request."""

    max_new_tokens: int = Field(default=64, ge=1)
    do_sample: bool = True
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0)
    max_context_tokens: int | None = Field(default=None, ge=8)


class SignalSettings(_Strict):
    """Which hidden states feed the output projectors.

    Attributes:
        hidden_layer: index into the LLM's hidden states (-1: the last layer after the final norm, official).
        position_offset: 0 reads the states AT the signal tokens (what the official projector was trained on);
            -1 reads the position before each one (what a literal copy of the legacy inference indexing would
            read in today's transformers, which no longer puts a BOS first in ``generate``'s output).
    """

    hidden_layer: int = -1
    position_offset: int = Field(default=0, le=0)


class InputProjectionSettings(_Strict):
    """``tie = true``: one input projector shared by every input modality (official v0 ``llama_proj``)."""

    tie: bool = False
    shared: Choice | None = None

    @model_validator(mode="after")
    def _shared_when_tied(self) -> "InputProjectionSettings":
        if self.tie and self.shared is None:
            raise ValueError("`input_projection.tie = true` needs `input_projection.shared` (e.g. \"linear\")")
        return self


class VocabularySettings(_Strict):
    """The ids the added tokens must get.

    ``first_added_id``: the first added token (wrapper and signal tokens, in composition order) must get this id
    and the rest the ids after it, consecutively (official v0: ``<Img>`` = 32000 ... ``[AUD7]`` = 32037). A tokenizer
    that gives other ids (e.g. one with an extra ``[PAD]`` piece) is an error when the model is built.
    """

    first_added_id: int | None = Field(default=None, ge=0)


class LoRASettings(_Strict):
    """LoRA on the LLM (peft). Official stage 3: r 32, alpha 32, dropout 0.1 on q, k, v, o.

    ``target_modules``: the layers' names; absent (``None``) = peft's default for the LLM's architecture
    (``nextgpt_core.lora.default_target_modules``), so any LLM works without naming its layers.
    """

    enabled: bool = False
    r: int = Field(default=8, ge=1)
    alpha: float = 16.0
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] | None = None

    @field_validator("target_modules")
    @classmethod
    def _some_targets(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError("an empty list wraps nothing; leave `target_modules` out for the architecture's default")
        return value


def _one_output_projector(data: Any) -> Any:
    if isinstance(data, dict) and "output_projector" in data:
        data = dict(data)
        if "output_projectors" in data:
            raise ValueError("give `output_projector` or `output_projectors`, not both")
        data["output_projectors"] = [data.pop("output_projector")]
    return data


class DecoderRouteSettings(_Strict):
    """A further decoder of an output modality, beside its ``decoder`` (e.g. retrieval beside generation): the
    same signal tokens' hidden states, its own output projectors (one per conditioning input; the input names of a
    modality's decoders must differ) and its own default ``decode_options``."""

    decoder: Choice
    output_projectors: tuple[Choice, ...] = ()
    decode_options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _single_output_projector(cls, data: Any) -> Any:
        return _one_output_projector(data)


class ComponentSettings(_Strict):
    """One modality's part of a composition; unset fields come from the plugin's preset.

    ``extra_decoders`` adds decoders beside ``decoder`` (each with its own output projectors); ``decode_with`` is
    which of the modality's decoders (by component id) turn each signal run into media by default, in order: one
    media part each, the reply saying which decoder made it (default: ``decoder`` alone). A request may choose
    others (``generate(..., decoders={key: [...]})``, ``--decoder KEY=ID``).
    """

    preset: str | None = None
    encoder: Choice | None = None
    input_projector: Choice | None = None
    output_projectors: tuple[Choice, ...] | None = None
    decoder: Choice | None = None
    num_signal_tokens: int | None = Field(default=None, ge=1)
    signal_token_format: str | None = None
    wrapper_tokens: tuple[str, str] | None = None
    decode_options: dict[str, Any] = Field(default_factory=dict)
    item_merge: Literal["separate", "sum"] = "separate"
    max_per_reply: int = Field(default=1, ge=0)
    extra_decoders: tuple[DecoderRouteSettings, ...] = ()
    decode_with: tuple[str, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _single_output_projector(cls, data: Any) -> Any:
        return _one_output_projector(data)


class Composition(_Strict):
    """A whole system: the LLM, its settings, and the modalities in order.

    ``auto_modalities = "tiny"`` adds every installed modality the file does not list, with that preset, after
    the listed ones (the built-in ``tiny`` composition uses it, so a new plugin needs no edit here).

    ``checkpoint`` names trained weights (a nextgpt checkpoint folder) loaded with the model unless the caller
    passes its own; ``weights_manifest`` names a JSON file of ``{"files": {relative path: sha256}}`` (relative to
    the manifest) that is checked before anything loads, so a missing or corrupted weights file is one error
    naming it (and the manifest's ``"rebuild"`` command). Paths may use ``${COMPOSITION_DIR}``, the folder of
    the composition file.
    """

    name: str
    description: str = ""
    checkpoint: str | None = None
    weights_manifest: str | None = None
    seed: int = 0
    device: str = "cpu"
    modules_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    llm: LLMSettings
    prompt: PromptSettings = PromptSettings()
    generation: GenerationSettings = GenerationSettings()
    signal: SignalSettings = SignalSettings()
    input_projection: InputProjectionSettings = InputProjectionSettings()
    lora: LoRASettings = LoRASettings()
    vocabulary: VocabularySettings = VocabularySettings()
    auto_modalities: str | None = None
    modalities: dict[str, ComponentSettings] = Field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- loading
def builtin_compositions() -> list[str]:
    """Names of the compositions shipped with the core: ``compositions/<name>.toml``, or
    ``compositions/<name>/<name>.toml`` for one that ships with its weights (``toy``)."""
    folder = resources.files("nextgpt_core") / "compositions"
    names = {p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml")}
    names |= {p.name for p in folder.iterdir() if p.is_dir() and (p / f"{p.name}.toml").is_file()}
    return sorted(names)


def builtin_composition_file(name: str) -> Path:
    """The TOML file of the built-in composition ``name`` (see :func:`builtin_compositions`)."""
    folder = Path(str(resources.files("nextgpt_core") / "compositions"))
    nested = folder / name / f"{name}.toml"
    return nested if nested.is_file() else folder / f"{name}.toml"


PATHS_FILE_ENV = "NEXTGPT_PATHS"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def paths_file() -> Path:
    """The local-paths settings file: ``$NEXTGPT_PATHS``, else ``~/.config/nextgpt/paths.toml``."""
    return Path(os.environ.get(PATHS_FILE_ENV) or Path.home() / ".config" / "nextgpt" / "paths.toml").expanduser()


def path_settings() -> dict[str, str]:
    """``{NAME: value}`` from the paths file (a flat TOML table of strings; absent file: empty)."""
    file = paths_file()
    if not file.is_file():
        return {}
    try:
        data = tomllib.loads(_read_text(file, str(file)))
    except tomllib.TOMLDecodeError as exc:
        raise CompositionError(f"{file}: not valid TOML ({exc})") from exc
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        raise CompositionError(f"{file}: every entry must be a string path (NAME = \"/path\"); not: {', '.join(bad)}")
    return dict(data)


def placeholders(data: Any) -> list[str]:
    """Every ``${NAME}`` used in the string values of ``data`` (a parsed composition), in order, once each."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.extend(n for n in _PLACEHOLDER.findall(value) if n not in found)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(data)
    return found


#: the placeholder for the folder of the composition file (never taken from the environment)
COMPOSITION_DIR = "COMPOSITION_DIR"


def _expand(data: Any, where: str, fallback: "dict[str, str] | None", folder: "Path | None" = None) -> Any:
    """Replace ``${NAME}`` in string values: the environment first, then the paths file, then ``fallback``;
    ``${COMPOSITION_DIR}`` is always ``folder``, the composition file's folder."""
    names = placeholders(data)
    if not names:
        return data
    values = {**(fallback or {}), **path_settings(), **{k: v for k, v in os.environ.items() if k in names}}
    if folder is not None:
        values[COMPOSITION_DIR] = str(folder)
    elif COMPOSITION_DIR in names:
        raise CompositionError(f"{where}: ${{{COMPOSITION_DIR}}} is only defined for a composition read from a file")
    unset = [n for n in names if n not in values]
    if unset:
        raise CompositionError(
            f"{where}: {', '.join('${' + n + '}' for n in unset)} not set; set the environment variable(s) or add "
            f"NAME = \"/local/path\" lines to {paths_file()} (or point {PATHS_FILE_ENV} at such a file)"
        )

    def sub(value: Any) -> Any:
        if isinstance(value, str):
            return _PLACEHOLDER.sub(lambda m: values[m.group(1)], value)
        if isinstance(value, dict):
            return {k: sub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v) for v in value]
        return value

    return sub(data)


def _read_text(path: Path, where: str) -> str:
    """A TOML file's text (TOML is UTF-8 by definition); undecodable bytes are one line naming the byte offset."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CompositionError(f"{where}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                               "TOML files are UTF-8") from exc
    except OSError as exc:
        raise CompositionError(f"{where}: cannot read ({exc.strerror or exc})") from exc


def load_composition(
    source: "str | os.PathLike[str] | Composition | dict[str, Any]", *, fallback_paths: "dict[str, str] | None" = None
) -> Composition:
    """Read a composition from a built-in name, a TOML path, a dict, or pass a ``Composition`` through.

    String values may hold ``${NAME}`` placeholders (local weight paths): each is taken from the environment
    variable ``NAME``, else from the paths file (:func:`paths_file`), else from ``fallback_paths``.

    Raises:
        CompositionError: unreadable TOML, unknown keys or bad values (every problem listed, with its key path),
            or a placeholder that is set nowhere.
    """
    if isinstance(source, Composition):
        return source
    if isinstance(source, dict):
        return _validate(_expand(source, "<dict>", fallback_paths), "<dict>")
    path = Path(source)
    if not path.suffix and str(source) in builtin_compositions():
        path = builtin_composition_file(str(source))
        text = path.read_text()
        where = f"built-in composition {source!r}"
    elif path.is_file():
        where = str(path)
        text = _read_text(path, where)
    elif path.is_dir():
        raise CompositionError(f"{str(source)!r} is a folder, not a composition file (a .toml file or a built-in name)")
    else:
        raise CompositionError(
            f"no composition file {str(source)!r} and no built-in of that name; built-ins: {', '.join(builtin_compositions())}"
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CompositionError(f"{where}: not valid TOML ({exc})") from exc
    return _validate(_expand(data, where, fallback_paths, path.resolve().parent), where)


def _problems(exc: ValidationError) -> str:
    """pydantic errors as one line: ``a.b: unknown key; c: Input should be ...``."""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        problems.append(f"{loc}: {msg}")
    return "; ".join(problems)


def _validate(data: dict[str, Any], where: str) -> Composition:
    try:
        return Composition.model_validate(data)
    except ValidationError as exc:
        raise CompositionError(f"{where}: {_problems(exc)}") from exc


# ---------------------------------------------------------------------------------------------- resolving
@dataclass(frozen=True)
class ResolvedComponent:
    """A component with its registry id, its class name and its options, dimensions filled in."""

    id: str
    target: str
    options: dict[str, Any]
    fills: str | None = None


@dataclass(frozen=True)
class ResolvedRoute:
    """One decoder of an output modality with the output projectors that fill its inputs and its default options."""

    decoder: ResolvedComponent
    output_projectors: tuple[ResolvedComponent, ...]
    decode_options: dict[str, Any]


@dataclass(frozen=True)
class ResolvedModality:
    """One modality, ready to build: spec, tokens, components and defaults.

    ``decoder`` / ``output_projectors`` / ``decode_options`` are its first decoder's; ``extra_decoders`` the others;
    ``decode_with`` the decoder ids that decode each run by default (:attr:`routes` has them all by id).
    """

    key: str
    spec: ModalitySpec
    encoder: ResolvedComponent | None
    input_projector: ResolvedComponent | None
    output_projectors: tuple[ResolvedComponent, ...]
    decoder: ResolvedComponent | None
    wrapper_tokens: tuple[str, str] | None
    signal_tokens: tuple[str, ...]
    decode_options: dict[str, Any]
    item_merge: str
    max_per_reply: int
    extra_decoders: tuple[ResolvedRoute, ...] = ()
    decode_with: tuple[str, ...] = ()

    @property
    def routes(self) -> dict[str, ResolvedRoute]:
        """Every decoder of the modality by component id, the first one first (empty for an input-only one)."""
        if self.decoder is None:
            return {}
        first = ResolvedRoute(self.decoder, self.output_projectors, self.decode_options)
        return {first.decoder.id: first, **{r.decoder.id: r for r in self.extra_decoders}}

    @property
    def can_read(self) -> bool:
        """Has an encoder path (media of this modality can be inputs)."""
        return self.encoder is not None

    @property
    def can_generate(self) -> bool:
        """Has signal tokens and a decoder (the LLM can emit this modality)."""
        return self.decoder is not None and bool(self.signal_tokens)


@dataclass(frozen=True)
class ResolvedComposition:
    """A composition checked against the registry: every name found, every dimension consistent."""

    composition: Composition
    llm_hidden_size: int
    modalities: dict[str, ResolvedModality]
    shared_input_projector: ResolvedComponent | None = None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (``nextgpt compose show``)."""
        def comp(c: ResolvedComponent | None) -> Any:
            return None if c is None else {k: v for k, v in c.__dict__.items() if v is not None}

        return {
            "composition": self.composition.model_dump(mode="json", exclude={"modalities"}),
            "llm_hidden_size": self.llm_hidden_size,
            "shared_input_projector": comp(self.shared_input_projector),
            "modalities": {
                key: {
                    "encoder": comp(m.encoder),
                    "input_projector": comp(m.input_projector),
                    "output_projectors": [comp(c) for c in m.output_projectors],
                    "decoder": comp(m.decoder),
                    "wrapper_tokens": list(m.wrapper_tokens) if m.wrapper_tokens else None,
                    "signal_tokens": list(m.signal_tokens),
                    "decode_options": m.decode_options,
                    "item_merge": m.item_merge,
                    "max_per_reply": m.max_per_reply,
                    "extra_decoders": [
                        {"decoder": comp(r.decoder), "output_projectors": [comp(c) for c in r.output_projectors],
                         "decode_options": r.decode_options}
                        for r in m.extra_decoders
                    ],
                    "decode_with": list(m.decode_with),
                }
                for key, m in self.modalities.items()
            },
            "notes": list(self.notes),
        }


#: files that carry a tokenizer's vocabulary (transformers builds a 1-token tokenizer from a folder with none)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model")


def _llm_config(path: str, config_path: Path) -> dict[str, Any]:
    """``config.json`` of an ``llm.path`` folder, checked to describe a causal LM (no weights, no torch).

    A model whose ``architectures`` name no ``...ForCausalLM`` / ``...LMHeadModel`` class (an encoder-decoder such
    as T5, an encoder such as BERT) is refused; without ``architectures`` the ``model_type`` must be one
    transformers maps to a causal LM.
    """
    from .errors import WeightsNotFoundError

    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CompositionError(f"llm.path {path!r}: config.json is not valid JSON ({str(exc).splitlines()[0]})") from exc
    except OSError as exc:
        raise WeightsNotFoundError(f"llm.path {path!r}: cannot read config.json ({exc.strerror or exc})") from exc
    if not isinstance(config, dict):
        raise CompositionError(f"llm.path {path!r}: config.json holds a JSON {type(config).__name__}, not an object")
    archs = config.get("architectures")
    if isinstance(archs, list) and archs:
        if not any(isinstance(a, str) and a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
            raise CompositionError(
                f"llm.path {path!r}: holds a {', '.join(map(str, archs))} (model_type {config.get('model_type')!r}), "
                "not a causal language model (a ...ForCausalLM class); nextgpt generates with a decoder-only LLM"
            )
    else:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        if config.get("model_type") not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise CompositionError(
                f"llm.path {path!r}: model_type {config.get('model_type')!r} is not a causal language model "
                "transformers knows (config.json names no ...ForCausalLM architecture)"
            )
    return config


def check_llm_folder(path: str) -> None:
    """Check, without loading weights, that ``path`` holds a causal LM (:func:`_llm_config`) with a usable
    tokenizer (a vocabulary file: one of :data:`TOKENIZER_FILES`). One :class:`CompositionError` (or
    :class:`~nextgpt_core.errors.WeightsNotFoundError` for a missing folder) naming the problem."""
    from .errors import WeightsNotFoundError

    folder = Path(path)
    if not folder.is_dir():
        raise WeightsNotFoundError(f"llm.path {path!r}: " + ("is a file, not a folder" if folder.exists() else
                                   "no such folder (nextgpt never downloads weights)"))
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise WeightsNotFoundError(f"llm.path {path!r}: no config.json there (nextgpt never downloads weights)")
    _llm_config(path, config_path)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise CompositionError(
            f"llm.path {path!r}: no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); save the tokenizer "
            "into the folder (tokenizer.save_pretrained)"
        )


def llm_hidden_size(settings: LLMSettings) -> int:
    """Hidden size of the configured LLM, read from ``config.json`` for a local folder (no weights loaded)."""
    if settings.tiny is not None:
        return settings.tiny.hidden_size
    config_path = Path(settings.path or "") / "config.json"
    if not config_path.is_file():
        from .errors import WeightsNotFoundError

        raise WeightsNotFoundError(f"llm.path {settings.path!r}: no config.json there (nextgpt never downloads weights)")
    config = _llm_config(settings.path or "", config_path)
    config = config.get("text_config", config) if isinstance(config.get("text_config"), dict) else config
    for key in ("hidden_size", "n_embd", "d_model", "dim"):  # the names causal LMs use for it
        if isinstance(config.get(key), int):
            return int(config[key])
    from transformers import AutoConfig  # attribute maps of exotic architectures

    return int(AutoConfig.from_pretrained(settings.path, local_files_only=True).hidden_size)


def resolve_composition(
    composition: "Composition | str | os.PathLike[str]", registry: Registry | None = None
) -> ResolvedComposition:
    """Check a composition against the registry and fill in every projector dimension.

    Raises:
        CompositionError: an unknown modality, preset or component, a component of the wrong role, or a
            projector whose dimensions do not fit its encoder, the LLM or its decoder (naming both sides).
    """
    from .plugins import get_registry

    comp = load_composition(composition)
    registry = registry or get_registry()
    hidden = llm_hidden_size(comp.llm)
    notes: list[str] = []

    ordered: list[tuple[str, ComponentSettings]] = list(comp.modalities.items())
    if comp.auto_modalities is not None:
        for key, spec in registry.modalities.items():
            if key in comp.modalities:
                continue
            if comp.auto_modalities not in spec.presets:
                provider = registry.provider("modality", key).describe()
                notes.append(f"modality {key!r} ({provider}) left out: it has no {comp.auto_modalities!r} preset")
                continue
            ordered.append((key, ComponentSettings(preset=comp.auto_modalities)))
    resolved: dict[str, ResolvedModality] = {}
    for key, settings in ordered:
        try:
            spec = registry.modality(key)
        except UnknownKeyError as exc:
            raise CompositionError(f"composition {comp.name!r}: {exc}") from exc
        resolved[key] = _resolve_modality(comp, key, spec, settings, registry, hidden)

    shared = None
    if comp.input_projection.tie:
        shared = _resolve_shared_projector(comp, resolved, registry, hidden)
    _check_tokens(comp, resolved)
    return ResolvedComposition(comp, hidden, resolved, shared, tuple(notes))


def _resolve_modality(
    comp: Composition, key: str, spec: ModalitySpec, s: ComponentSettings, registry: Registry, hidden: int
) -> ResolvedModality:
    where = f"composition {comp.name!r}, modality {key!r}"
    preset = None
    if s.preset is not None:
        preset = spec.presets.get(s.preset)
        if preset is None:
            raise CompositionError(
                f"{where}: plugin has no preset {s.preset!r}; presets: {', '.join(spec.presets) or '(none)'}"
            )

    def pick(name: str) -> Any:
        value = getattr(s, name)
        return value if value is not None else (getattr(preset, name) if preset is not None else None)

    enc_choice, inproj_choice, dec_choice = pick("encoder"), pick("input_projector"), pick("decoder")
    out_choices = s.output_projectors if s.output_projectors is not None else (preset.output_projectors if preset else ())
    decode_options = {**(preset.decode_options if preset else {}), **s.decode_options}
    if preset is not None and preset.decoder is not None and dec_choice is not None and dec_choice.id != preset.decoder.id:
        # the preset's options are its own decoder's: a swapped decoder keeps those its options class also takes
        try:
            known = set(resolve_target(registry.component(dec_choice.id, role="decoder").target).options_class.model_fields)
        except (RegistryError, AttributeError):
            known = set()
        decode_options = {**{k: v for k, v in preset.decode_options.items() if k in known}, **s.decode_options}
    n_signal = s.num_signal_tokens or (preset.num_signal_tokens if preset else None) or spec.num_signal_tokens
    fmt = s.signal_token_format or spec.signal_token_format
    if s.signal_token_format is not None and "{i}" not in s.signal_token_format:
        raise CompositionError(f"{where}: `signal_token_format` must contain '{{i}}' (e.g. '[IMG{{i}}]'), got {s.signal_token_format!r}")
    wrappers = s.wrapper_tokens or spec.wrapper_tokens

    encoder = _component(registry, enc_choice, "encoder", key, where)
    enc_dim = None
    if encoder is not None:
        klass = _class(encoder, where)
        enc_dim = klass.output_dim_of(_config(klass, encoder.options, where, "encoder"))
        if wrappers is None:
            raise CompositionError(f"{where}: has an encoder but no wrapper tokens (set `wrapper_tokens`)")

    input_projector = None
    if encoder is not None and not comp.input_projection.tie:
        if inproj_choice is None:
            raise CompositionError(f"{where}: has an encoder but no `input_projector`")
        input_projector = _fit_input_projector(registry, inproj_choice, key, where, encoder, enc_dim, hidden)

    decoder = _component(registry, dec_choice, "decoder", key, where)
    output_projectors: tuple[ResolvedComponent, ...] = ()
    signal_tokens: tuple[str, ...] = ()
    extra: list[ResolvedRoute] = []
    decode_with: tuple[str, ...] = ()
    if decoder is not None:
        if fmt is None:
            raise CompositionError(f"{where}: has a decoder but the modality defines no signal tokens")
        signal_tokens = tuple(fmt.format(i=i) for i in range(n_signal))
        first = _resolve_route(registry, key, where, decoder, out_choices, decode_options, hidden, n_signal)
        output_projectors = first.output_projectors
        taken = {p.fills: decoder.id for p in output_projectors}
        for route in s.extra_decoders:
            dec = _component(registry, route.decoder, "decoder", key, where)
            assert dec is not None
            if dec.id in {decoder.id, *(r.decoder.id for r in extra)}:
                raise CompositionError(f"{where}: decoder {dec.id!r} is listed twice")
            resolved_route = _resolve_route(registry, key, where, dec, route.output_projectors, dict(route.decode_options),
                                            hidden, n_signal)
            for p in resolved_route.output_projectors:
                if p.fills in taken:
                    raise CompositionError(f"{where}: decoders {taken[p.fills]!r} and {dec.id!r} both take {p.fills!r}; "
                                           "a modality's decoders need distinct conditioning input names")
                taken[p.fills] = dec.id  # type: ignore[index]
            extra.append(resolved_route)
        ids = [decoder.id, *(r.decoder.id for r in extra)]
        decode_with = tuple(s.decode_with) if s.decode_with is not None else (decoder.id,)
        unknown = [d for d in decode_with if d not in ids]
        if unknown or not decode_with or len(set(decode_with)) != len(decode_with):
            raise CompositionError(f"{where}: decode_with {list(decode_with)} must name distinct decoders of the modality: "
                                   f"{', '.join(ids)}")
    elif out_choices:
        raise CompositionError(f"{where}: output projectors given but no decoder")
    elif s.extra_decoders or s.decode_with is not None:
        raise CompositionError(f"{where}: extra_decoders / decode_with need a `decoder` first")

    return ResolvedModality(
        key=key,
        spec=spec,
        encoder=encoder,
        input_projector=input_projector,
        output_projectors=tuple(output_projectors),
        decoder=decoder,
        wrapper_tokens=tuple(wrappers) if (wrappers and encoder is not None) else None,  # type: ignore[arg-type]
        signal_tokens=signal_tokens,
        decode_options=decode_options,
        item_merge=s.item_merge,
        max_per_reply=s.max_per_reply,
        extra_decoders=tuple(extra),
        decode_with=decode_with,
    )


def _resolve_route(
    registry: Registry,
    key: str,
    where: str,
    decoder: ResolvedComponent,
    out_choices: tuple[ComponentChoice, ...],
    decode_options: dict[str, Any],
    hidden: int,
    n_signal: int,
) -> ResolvedRoute:
    """One decoder with its output projectors (dimensions filled, each input filled once) and options checked."""
    dec_class = _class(decoder, where)
    dec_config = _config(dec_class, decoder.options, where, "decoder")
    try:
        inputs = {c.name: c for c in dec_class.conditioning_inputs_of(dec_config)}
    except ConfigError as exc:
        raise CompositionError(f"{where}: decoder {decoder.id!r}: {exc}") from exc
    _check_local_files(dec_class, dec_config, where, require=False)  # an existing folder that does not fit
    try:
        dec_class.options_class.model_validate(decode_options)
    except ValidationError as exc:
        raise CompositionError(f"{where}: decode_options: {_problems(exc)}") from exc
    if not out_choices:
        raise CompositionError(f"{where}: decoder {decoder.id!r} has no `output_projectors`")
    if len(out_choices) == 1 and out_choices[0].fills is None and len(inputs) > 1:
        # one projector choice for a decoder with several inputs: one projector of that kind per input, so a
        # decoder swap (AudioLDM -> AudioLDM2) stays a one-line change
        out_choices = tuple(out_choices[0].model_copy(update={"fills": name}) for name in inputs)
    filled: dict[str, str] = {}
    output_projectors: list[ResolvedComponent] = []
    for choice in out_choices:
        target_name = choice.fills or (next(iter(inputs)) if len(inputs) == 1 else None)
        if target_name is None:
            raise CompositionError(
                f"{where}: decoder {decoder.id!r} takes several conditioning inputs ({', '.join(inputs)}); "
                f"say which one output projector {choice.id!r} `fills`"
            )
        if target_name not in inputs:
            raise CompositionError(
                f"{where}: output projector {choice.id!r} fills {target_name!r}, which decoder {decoder.id!r} "
                f"does not take; it takes {', '.join(inputs)}"
            )
        if target_name in filled:
            raise CompositionError(f"{where}: {target_name!r} is filled twice ({filled[target_name]}, {choice.id})")
        filled[target_name] = choice.id
        output_projectors.append(
            _fit_output_projector(registry, choice, key, where, inputs[target_name], decoder, hidden, n_signal)
        )
    unfilled = [n for n in inputs if n not in filled]
    if unfilled:
        raise CompositionError(f"{where}: decoder {decoder.id!r} input(s) {', '.join(unfilled)} filled by no output projector")
    return ResolvedRoute(decoder, tuple(output_projectors), decode_options)


def _check_local_files(dec_class: Any, config: Any, where: str, *, require: bool) -> None:
    from .errors import WeightsNotFoundError

    check = getattr(dec_class, "check_local_files", None)
    if check is None:
        return
    try:
        check(config, require=require)
    except WeightsNotFoundError as exc:
        raise WeightsNotFoundError(f"{where}: {exc}") from exc
    except ConfigError as exc:
        raise CompositionError(f"{where}: {exc}") from exc


def check_local_weights(resolved: "ResolvedComposition") -> None:
    """Everything a resolved composition reads from local folders, checked from their config files (no weights
    read; ``nextgpt compose validate``): the ``llm.path`` folder holds a causal LM with a tokenizer
    (:func:`check_llm_folder`), and every decoder's ``path`` is there and fits the conditioning it declares
    (``Decoder.check_local_files(require=True)``). Raises the first problem, one line."""
    comp = resolved.composition
    if comp.llm.path is not None:
        check_llm_folder(comp.llm.path)
    for key, modality in resolved.modalities.items():
        where = f"composition {comp.name!r}, modality {key!r}"
        for route in modality.routes.values():
            dec_class = _class(route.decoder, where)
            _check_local_files(dec_class, _config(dec_class, route.decoder.options, where, "decoder"), where, require=True)


def _component(registry: Registry, choice: ComponentChoice | None, role: str, key: str, where: str) -> ResolvedComponent | None:
    if choice is None:
        return None
    try:
        spec = registry.component(choice.id, role=role)
    except UnknownKeyError as exc:
        raise CompositionError(f"{where}: {exc}") from exc
    if spec.modality not in (None, key):
        raise CompositionError(f"{where}: {role.replace('_', ' ')} {choice.id!r} is for modality {spec.modality!r}")
    return ResolvedComponent(choice.id, spec.target, dict(choice.options), choice.fills)


def _class(component: ResolvedComponent, where: str) -> Any:
    try:
        return resolve_target(component.target)
    except RegistryError as exc:
        raise CompositionError(f"{where}: component {component.id!r}: {exc}") from exc


def _config(klass: Any, options: dict[str, Any], where: str, role: str) -> Any:
    try:
        return klass.make_config(options)
    except ConfigError as exc:
        raise CompositionError(f"{where}, {role}: {exc}") from exc


def _fit_input_projector(
    registry: Registry, choice: ComponentChoice, key: str, where: str, encoder: ResolvedComponent, enc_dim: int | None, hidden: int
) -> ResolvedComponent:
    proj = _component(registry, choice, "input_projector", key, where)
    assert proj is not None
    options = dict(proj.options)
    given_in = options.get("in_dim")
    if given_in is not None and given_in != enc_dim:
        raise CompositionError(
            f"{where}: input projector {proj.id!r} has enc_dim (in_dim) {given_in}, but encoder {encoder.id!r} "
            f"outputs {enc_dim}"
        )
    given_out = options.get("out_dim")
    if given_out is not None and given_out != hidden:
        raise CompositionError(f"{where}: input projector {proj.id!r} has out_dim {given_out}, but the LLM hidden size is {hidden}")
    options.update(in_dim=enc_dim, out_dim=hidden)
    klass = _class(proj, where)
    _config(klass, options, where, "input projector")
    return ResolvedComponent(proj.id, proj.target, options)


def _fit_output_projector(
    registry: Registry,
    choice: ComponentChoice,
    key: str,
    where: str,
    target: Any,
    decoder: ResolvedComponent,
    hidden: int,
    n_signal: int,
) -> ResolvedComponent:
    proj = _component(registry, choice, "output_projector", key, where)
    assert proj is not None
    options = dict(proj.options)
    for name, want in (("out_len", target.length), ("out_dim", target.dim)):
        given = options.get(name)
        if given is not None and given != want:
            raise CompositionError(
                f"{where}: output projector {proj.id!r} produces {name} {given}, but decoder {decoder.id!r} "
                f"input {target.name!r} is {target.length}x{target.dim}"
            )
    if options.get("in_dim") not in (None, hidden):
        raise CompositionError(f"{where}: output projector {proj.id!r} has in_dim {options['in_dim']}, but the LLM hidden size is {hidden}")
    if options.get("num_signal_tokens") not in (None, n_signal):
        raise CompositionError(
            f"{where}: output projector {proj.id!r} expects {options['num_signal_tokens']} signal tokens, the modality has {n_signal}"
        )
    options.update(in_dim=hidden, num_signal_tokens=n_signal, out_len=target.length, out_dim=target.dim)
    klass = _class(proj, where)
    _config(klass, options, where, "output projector")
    return ResolvedComponent(proj.id, proj.target, options, target.name)


def _resolve_shared_projector(
    comp: Composition, resolved: dict[str, ResolvedModality], registry: Registry, hidden: int
) -> ResolvedComponent:
    where = f"composition {comp.name!r}, input_projection.shared"
    readers = [m for m in resolved.values() if m.encoder is not None]
    dims: dict[str, tuple[str, int]] = {}
    for m in readers:
        klass = _class(m.encoder, where)  # type: ignore[arg-type]
        dims[m.key] = (m.encoder.id, klass.output_dim_of(_config(klass, m.encoder.options, where, "encoder")))  # type: ignore[union-attr]
    distinct = {d for _, d in dims.values()}
    if len(distinct) > 1:
        listing = ", ".join(f"{k}: encoder {e!r} -> {d}" for k, (e, d) in dims.items())
        raise CompositionError(f"{where}: a tied input projector needs one encoder dim, got {listing}")
    assert comp.input_projection.shared is not None
    if not readers:
        raise CompositionError(f"{where}: `tie = true` but no modality has an encoder")
    first_key = readers[0].key
    enc_id, enc_dim = dims[first_key]
    enc = readers[0].encoder
    assert enc is not None
    return _fit_input_projector(registry, comp.input_projection.shared, first_key, where, enc, enc_dim, hidden)


def _check_tokens(comp: Composition, resolved: dict[str, ResolvedModality]) -> None:
    """Signal tokens are unique across modalities and never double as wrappers (wrappers may be shared, as the
    official v0 shares ``<Img>``/``</Img>`` between image, video and audio)."""
    signal_owner: dict[str, str] = {}
    for m in resolved.values():
        for tok in m.signal_tokens:
            if tok in signal_owner:
                raise CompositionError(f"composition {comp.name!r}: signal token {tok!r} used by {signal_owner[tok]} and {m.key}")
            signal_owner[tok] = m.key
    for m in resolved.values():
        for tok in m.wrapper_tokens or ():
            if tok in signal_owner:
                raise CompositionError(
                    f"composition {comp.name!r}: token {tok!r} is a signal token of {signal_owner[tok]} and a wrapper of {m.key}"
                )
