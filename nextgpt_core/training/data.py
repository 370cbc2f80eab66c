"""Training data: one in-memory sample type and readers for the official NExT-GPT formats and our JSONL format.

A :class:`TrainingSample` is a :class:`~nextgpt_core.conversation.Conversation` plus a list of :class:`Target`:

* text of **assistant** turns is what the LM loss is on;
* :class:`~nextgpt_core.conversation.Media` parts of **user** turns are inputs (a path, not decoded: the training
  collator decodes them later through the modality's plugin, see :class:`MediaLoader`);
* each :class:`Target` marks an output the assistant must produce (a signal run of ``modality``) at a position in an
  assistant turn, with the caption whose decoder-text-encoder embedding is the stage-2 L2 target.

Signal tokens are never text: every official signal-token spelling (``[IMG0] [IMG1] ...``), wrapper token
(``<Img>``, ``</Img>``), placeholder (``<image>``) and inline media tag (``<Image>x.jpg</Image>``) found in a row is
removed from the text and turned into structure (a :class:`Media` part or a :class:`Target`). The collator inserts
signal ids directly.

Formats (see ``docs/data-formats.md``): ``jsonl`` (ours), ``xcaption`` (cc3m / webvid / audiocap), ``t2m`` (legacy
T-T+X instruction json), ``mosit`` (MosIT raw conversations), ``llava`` (LLaVA / Alpaca legacy) and
``conversations`` (the new-code comprehension / generation / instruction-tuning json). :func:`read_dataset` reads
one file; rows that fail are skipped and reported, or raise :class:`DatasetError` (``on_error``).

Example:
    >>> import json, tempfile, pathlib
    >>> from nextgpt_registry import Registry
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> row = {"turns": [{"role": "user", "parts": [{"text": "Draw a cat"}]},
    ...                  {"role": "assistant", "parts": [{"text": "Here:"}, {"generate": "image", "caption": "a cat"}]}]}
    >>> _ = (folder / "d.jsonl").write_text(json.dumps(row) + "\\n")
    >>> ds = read_dataset(folder / "d.jsonl", registry=_demo_registry())
    >>> ds.report.kept, ds[0].targets[0].modality, ds[0].targets[0].caption
    (1, 'image', 'a cat')
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Literal, Sequence

from ..conversation import Conversation, Media, Text, Turn
from ..errors import DatasetError

__all__ = [
    "DataProblem",
    "DataReport",
    "DatasetError",
    "FORMATS",
    "LoadedDataset",
    "MediaLoader",
    "Target",
    "TrainingSample",
    "detect_format",
    "read_dataset",
    "sample_to_json",
    "write_jsonl",
]

OnError = Literal["skip", "fail"]
Task = Literal["caption", "generate"]

#: Format names :func:`read_dataset` accepts (aliases map onto them: cc3m / webvid / audiocap -> xcaption,
#: alpaca -> llava, nextgpt -> jsonl).
FORMATS: tuple[str, ...] = ("jsonl", "xcaption", "t2m", "mosit", "llava", "conversations")
_ALIASES = {"cc3m": "xcaption", "webvid": "xcaption", "audiocap": "xcaption", "alpaca": "llava", "nextgpt": "jsonl"}

#: The official signal-token spellings (NExT-GPT v0), always recognised and stripped even when the installed
#: plugins spell theirs differently.
OFFICIAL_SIGNAL_FORMATS = {"image": "[IMG{i}]", "video": "[VID{i}]", "audio": "[AUD{i}]"}
#: The official wrapper tokens (every v0 input is wrapped in ``<Img>``/``</Img>``), always stripped.
OFFICIAL_WRAPPERS = ("<Img>", "</Img>")
#: X-caption name fields and the modality they name.
XCAPTION_FIELDS = {"image_name": "image", "video_name": "video", "audio_name": "audio"}
#: MosIT gpt turns: the tag spelling and file-name pattern of the media the assistant generates
#: (``data/prepare_data.py::preprocess_it_mosit``); any other tag in a gpt turn is removed, not an output.
MOSIT_GENERATED = {
    "image": ("Image", re.compile(r"mosit_i_.*?\.jpg")),
    "video": ("Video", re.compile(r"mosit_v_.*?\.mp4")),
    "audio": ("Audio", re.compile(r"mosit_a_.*?\.wav")),
}


def mosit_generated_name(modality: str, stem: str) -> str | None:
    """A file name for media the assistant generates in a MosIT row, as the official files name them
    (``mosit_i_<stem>.jpg`` / ``mosit_v_<stem>.mp4`` / ``mosit_a_<stem>.wav``); ``None`` for a modality with no
    official convention (any tag in a gpt turn is then an output)."""
    spelled = {"image": "mosit_i_{}.jpg", "video": "mosit_v_{}.mp4", "audio": "mosit_a_{}.wav"}.get(modality)
    if spelled is None:
        return None
    name = spelled.format(stem)
    assert MOSIT_GENERATED[modality][1].fullmatch(name)
    return name


#: Official stage-1 prompt (``build_one_instance_stage_1``).
DEFAULT_CAPTION_PROMPT = "generate a caption"
#: Longest caption of a generate target, in characters: decoders' text encoders read at most a few hundred tokens
#: (CLIP 77), and a longer caption only costs memory (a 10 MB caption took 4 GB in ``cache-targets``).
MAX_CAPTION_CHARS = 2_000
#: Longest text value of a row, in characters (a row over it is skipped with kind ``too_long``, before any
#: tokenizing; the model's own context limit is checked again before training, without tokenizing either).
MAX_TEXT_CHARS = 1_000_000
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


# ============================================================================================ sample types
@dataclass(frozen=True)
class Target:
    """An output the assistant must produce: a signal run of ``modality`` in turn ``turn_index``.

    Attributes:
        modality: registry key of the output modality (``"image"``).
        caption: the text whose decoder-text-encoder embedding is the stage-2 L2 target (never empty).
        media_path: the target media file (for a denoising loss), resolved and checked to exist; ``None`` if the row
            names none (or names a missing one and the reader was told ``require_target_media=False``).
        turn_index: index of the assistant turn in ``sample.conversation.turns``.
        part_index: insertion position in that turn's ``parts``: the signal run goes after ``parts[:part_index]``
            (``len(parts)`` = at the end of the turn).
    """

    modality: str
    caption: str
    media_path: Path | None
    turn_index: int
    part_index: int

    @property
    def target_id(self) -> str:
        """Stable key of the caption embedding: 24 hex chars of SHA-256 over ``"<modality>\\n<caption>"``.

        The same caption of the same modality always gets the same id (whichever file or row it came from); a cache
        of embeddings from several decoders should also key on the decoder id.
        """
        return target_id(self.modality, self.caption)


def target_id(modality: str, caption: str) -> str:
    """The :attr:`Target.target_id` of ``caption`` for ``modality`` (24 lower-case hex chars)."""
    return hashlib.sha256(f"{modality}\n{caption}".encode("utf-8")).hexdigest()[:24]


@dataclass
class TrainingSample:
    """One training example.

    Attributes:
        conversation: user turns hold ``Text`` and input ``Media`` (``path`` set, ``data`` None: lazy); assistant
            turns hold ``Text`` only (what the LM loss is on; may be one empty ``Text`` if the turn is only a
            target).
        targets: outputs to produce, in conversation order (several allowed, of any generating modalities).
        source: ``(file, row)``: the dataset file and its row (1-based line for JSONL, 0-based index for json
            arrays).
        sample_id: the row's ``id`` field if it has one, else ``"<file name>:<row>"``.
    """

    conversation: Conversation
    targets: list[Target] = field(default_factory=list)
    source: tuple[str, int] = ("", 0)
    sample_id: str = ""

    @property
    def inputs(self) -> list[Media]:
        """The input media parts (of user turns), in order."""
        return [p for t in self.conversation.turns if t.role == "user" for p in t.parts if isinstance(p, Media)]

    @property
    def output_modalities(self) -> list[str]:
        """Modalities of the targets, in order (repeats kept)."""
        return [t.modality for t in self.targets]


@dataclass(frozen=True)
class DataProblem:
    """Why a row was skipped (or a whole file failed).

    Attributes:
        file: the dataset file.
        row: 1-based line (JSONL) or 0-based index (json array); ``None`` for the whole file.
        message: one line.
        kind: category, one of ``invalid_json``, ``malformed``, ``missing_media``, ``unknown_modality``,
            ``empty_conversation``, ``missing_caption``, ``too_long``.
        row_kind: ``"line"`` (JSONL) or ``"index"`` (json array).
    """

    file: str
    row: int | None
    message: str
    kind: str = "malformed"
    row_kind: Literal["line", "index"] = "line"

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file}, {self.row_kind} {self.row}"
        return f"{where}: {self.message}"


@dataclass
class DataReport:
    """What reading a file did: nothing is dropped silently.

    Attributes:
        file: the dataset file; format: the format used.
        rows_read: rows seen (non-blank lines / array items); kept: samples produced; problems: one per skipped row.
        targets_without_media: targets whose media file was named but missing, kept with ``media_path=None``
            (only with ``require_target_media=False``).
        references_dropped: media tags in MosIT gpt turns that name no generated media (a name other than
            ``mosit_i_*.jpg`` / ``mosit_v_*.mp4`` / ``mosit_a_*.wav``, e.g. an input mentioned again); removed from
            the text and not outputs, as the official preprocessing does.
    """

    file: str
    format: str
    rows_read: int = 0
    kept: int = 0
    problems: list[DataProblem] = field(default_factory=list)
    targets_without_media: int = 0
    references_dropped: int = 0

    @property
    def skipped(self) -> int:
        """Rows skipped (``rows_read - kept``)."""
        return len(self.problems)

    @property
    def skipped_by_kind(self) -> dict[str, int]:
        """Skipped rows per :attr:`DataProblem.kind`."""
        return dict(Counter(p.kind for p in self.problems))

    def summary(self) -> str:
        """One line: ``file (format): N rows read, K kept, S skipped (kind: n, ...)``."""
        text = f"{self.file} ({self.format}): {self.rows_read} rows read, {self.kept} kept, {self.skipped} skipped"
        if self.problems:
            text += " (" + ", ".join(f"{k}: {n}" for k, n in sorted(self.skipped_by_kind.items())) + ")"
        if self.targets_without_media:
            text += f"; {self.targets_without_media} targets without their media file"
        if self.references_dropped:
            text += f"; {self.references_dropped} media references in replies that are not generated media (removed)"
        return text


@dataclass
class LoadedDataset(Sequence[TrainingSample]):
    """The samples read from one file and the :class:`DataReport` of the reading (a sequence of samples)."""

    samples: list[TrainingSample]
    report: DataReport

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> TrainingSample:  # type: ignore[override]
        return self.samples[index]

    def __iter__(self) -> Iterator[TrainingSample]:
        return iter(self.samples)


class MediaLoader:
    """Decodes lazy media parts through their plugin's ``MediaIO`` (one instance per modality, cached).

    ``MediaLoader(registry).load(media)`` returns the plugin's media object (an RGB ``PIL.Image``, a
    ``nextgpt_video.Video``, a ``nextgpt_audio.Audio`` ...); raises ``MediaError`` naming the file if it is unreadable.
    """

    def __init__(self, registry: Any = None) -> None:
        self.registry = registry or _default_registry()
        self._io: dict[str, Any] = {}

    def media_io(self, modality: str) -> Any:
        """The ``MediaIO`` of ``modality``."""
        if modality not in self._io:
            from nextgpt_registry import resolve_target

            self._io[modality] = resolve_target(self.registry.modality(modality).media_io)()
        return self._io[modality]

    def load(self, media: Media) -> Any:
        """Decode ``media.path`` with its modality's reader (``media.data`` if already decoded)."""
        if media.data is not None:
            return media.data
        assert media.path is not None and media.modality is not None
        return self.media_io(media.modality).read(media.path)


# ============================================================================================ reading
class _RowError(Exception):
    def __init__(self, message: str, kind: str = "malformed") -> None:
        super().__init__(message)
        self.kind = kind


def _default_registry() -> Any:
    from ..plugins import get_registry

    return get_registry()


def _demo_registry() -> Any:
    """A registry with an ``image`` modality (for the module's doctest)."""
    from nextgpt_registry import ModalitySpec, Registry, hookimpl

    class _Image:
        @hookimpl
        def nextgpt_register_modalities(self, register: Callable[[Any], None]) -> None:
            register(ModalitySpec(key="image", license="x", signal_token_format="[IMG{i}]", num_signal_tokens=4,
                                  wrapper_tokens=("<Img>", "</Img>"), extensions=(".png",), media_io="a.b:C"))

    return Registry.from_plugins([_Image()])


def detect_format(path: str | os.PathLike[str], data: Any = None) -> str:
    """The format of a dataset file, by the rule in ``docs/data-formats.md``.

    ``.jsonl`` -> ``jsonl``. Otherwise the file is a json array and its first object decides: ``turns`` -> jsonl
    (rejected: use JSON Lines), ``image_list``/``video_list``/``audio_list`` -> ``mosit``, ``mm_name`` -> ``t2m``,
    ``conversations`` -> ``conversations``, ``conversation`` -> ``llava``, an ``*_name`` field + ``caption`` ->
    ``xcaption``.

    Args:
        data: the parsed json (read from ``path`` if ``None``).

    Raises:
        DatasetError: the format cannot be told (pass ``format=`` explicitly).
    """
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return "jsonl"
    if data is None:
        data = _load_json_array(path)
    first = next((row for row in data if isinstance(row, dict)), None) if isinstance(data, list) else None
    if first is None:
        raise DatasetError(f"{path}: cannot detect the format (no json object rows); pass format= one of {', '.join(FORMATS)}")
    keys = set(first)
    if "turns" in keys:
        raise DatasetError(f"{path}: rows with 'turns' are our JSONL format: write one object per line in a .jsonl file")
    if keys & {"image_list", "video_list", "audio_list"} or (
        "conversation" in keys and any(k.endswith("_list") and isinstance(first[k], list) for k in keys)
    ):
        return "mosit"  # the official lists, or another installed modality's ``<key>_list``
    if "mm_name" in keys:
        return "t2m"
    if "conversations" in keys:
        return "conversations"
    if "conversation" in keys:
        return "llava"
    if "caption" in keys and (keys & set(XCAPTION_FIELDS) or any(k.endswith("_name") for k in keys)):
        return "xcaption"  # the official ``image_name`` / ``video_name`` / ``audio_name``, or ``<key>_name``
    raise DatasetError(
        f"{path}: cannot detect the format from the first row's keys {sorted(keys)}; pass format= one of {', '.join(FORMATS)}"
    )


def _load_json_array(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"dataset file not found: {str(path)!r}") from None
    except IsADirectoryError:
        raise DatasetError(f"dataset {str(path)!r} is a folder, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a json array of rows, got a {type(data).__name__}")
    return data


def read_dataset(
    path: str | os.PathLike[str],
    *,
    format: str = "auto",
    media_root: str | os.PathLike[str] | None = None,
    on_error: OnError = "skip",
    registry: Any = None,
    task: Task = "caption",
    caption_prompt: str = DEFAULT_CAPTION_PROMPT,
    require_target_media: bool = True,
) -> LoadedDataset:
    """Read one dataset file into :class:`TrainingSample` objects; media are checked to exist (stat), not decoded.

    Args:
        path: the dataset file (``.jsonl`` for ours, ``.json`` array for the official formats).
        format: ``"auto"`` (see :func:`detect_format`) or one of :data:`FORMATS` (or an alias: ``cc3m``,
            ``webvid``, ``audiocap``, ``alpaca``).
        media_root: folder that relative media names are resolved against (default: the dataset file's folder).
        on_error: ``"skip"`` a bad row and record a :class:`DataProblem`, or ``"fail"`` with :class:`DatasetError`.
        registry: the plugin registry (modality keys, suffixes, signal-token spellings); default: the process-wide one.
        task: X-caption only: ``"caption"`` (stage 1: user = media + ``caption_prompt``, assistant = caption) or
            ``"generate"`` (stage 2: user = caption, assistant = caption + a signal run of the row's modality).
        caption_prompt: the stage-1 instruction.
        require_target_media: a target whose media file is named but missing is a problem (``True``) or kept with
            ``media_path=None`` and counted in ``report.targets_without_media`` (``False``; official T2M and
            stage-2 data ship only captions).

    Returns:
        :class:`LoadedDataset`: ``samples`` and the ``report`` (rows read / kept / skipped and why).

    Raises:
        DatasetError: the file is missing, is not valid JSON (json arrays), its format cannot be told, or (with
            ``on_error="fail"``) at the first bad row, naming file and row.
    """
    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
    if task not in ("caption", "generate"):
        raise ValueError(f"task must be 'caption' or 'generate', got {task!r}")
    path = Path(path)
    registry = registry or _default_registry()
    root = Path(media_root) if media_root is not None else path.parent
    fmt = _ALIASES.get(format, format)
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"unknown format {format!r}; use 'auto' or one of {', '.join(FORMATS)}")

    rows: list[tuple[int, Any]]
    if fmt == "jsonl" or (fmt == "auto" and path.suffix.lower() == ".jsonl"):
        fmt, row_kind, rows = "jsonl", "line", None  # type: ignore[assignment]
    else:
        data = _load_json_array(path)
        if fmt == "auto":
            fmt = detect_format(path, data)
            if fmt == "jsonl":  # pragma: no cover - detect_format rejects it for arrays
                raise DatasetError(f"{path}: use a .jsonl file for our format")
        row_kind = "index"
        rows = list(enumerate(data))

    ctx = _Context(path=path, root=root, registry=registry, markup=_Markup.of(registry), task=task,
                   caption_prompt=caption_prompt, require_target_media=require_target_media)
    report = DataReport(file=str(path), format=fmt)
    samples: list[TrainingSample] = []
    build = _READERS[fmt]

    def problems_from(row_no: int, item: Any, parsed: bool, parse_error: str | None) -> None:
        report.rows_read += 1
        try:
            if not parsed:
                raise _RowError(parse_error or "invalid JSON", "invalid_json")
            if not isinstance(item, dict):
                raise _RowError(f"a row must be a json object, got {_type_name(item)}")
            ctx.notes = ctx.dropped = 0
            sample = build(item, ctx)
            sample.source = (str(path), row_no)
            sample.sample_id = str(item["id"]) if isinstance(item.get("id"), (str, int)) else f"{path.name}:{row_no}"
            _check_sample(sample)
        except _RowError as exc:
            problem = DataProblem(str(path), row_no, str(exc), exc.kind, row_kind)  # type: ignore[arg-type]
            if on_error == "fail":
                raise DatasetError(str(problem), problem) from exc
            report.problems.append(problem)
            return
        report.targets_without_media += ctx.notes
        report.references_dropped += ctx.dropped
        report.kept += 1
        samples.append(sample)

    if rows is None:
        if not path.is_file():
            raise DatasetError(f"dataset file not found: {str(path)!r}" if not path.is_dir()
                               else f"dataset {str(path)!r} is a folder, not a file")
        with open(path, "rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    item, ok, err = json.loads(raw.decode("utf-8")), True, None
                except UnicodeDecodeError as exc:
                    item, ok, err = None, False, f"invalid JSON (not UTF-8: byte {exc.start})"
                except json.JSONDecodeError as exc:
                    item, ok, err = None, False, f"invalid JSON (column {exc.colno}: {exc.msg})"
                problems_from(line_no, item, ok, err)
    else:
        for index, item in rows:
            problems_from(index, item, True, None)
    return LoadedDataset(samples, report)


# ---------------------------------------------------------------------------------------------- context
@dataclass
class _Context:
    path: Path
    root: Path
    registry: Any
    markup: "_Markup"
    task: str
    caption_prompt: str
    require_target_media: bool
    notes: int = 0
    dropped: int = 0

    # -- modalities
    def modality(self, key: Any, *, output: bool) -> str:
        if not isinstance(key, str) or not key:
            raise _RowError(f"a modality must be a non-empty string, got {_type_name(key)}")
        spec = self.registry.modalities.get(key)
        if spec is None:
            known = ", ".join(sorted(self.registry.modalities)) or "(none installed)"
            raise _RowError(f"unknown modality {key!r} (installed: {known})", "unknown_modality")
        if output and not spec.can_generate:
            raise _RowError(f"modality {key!r} cannot be generated (it has no signal tokens)", "unknown_modality")
        if not output and not spec.can_read:
            raise _RowError(f"modality {key!r} cannot be an input (it has no wrapper tokens)", "unknown_modality")
        return key

    def modality_of_path(self, name: str) -> str:
        from nextgpt_registry import MediaTypeError

        try:
            return self.registry.modality_for_path(name)
        except MediaTypeError as exc:
            raise _RowError(str(exc), "unknown_modality") from exc

    # -- files
    def resolve(self, name: Any) -> Path:
        if not isinstance(name, str) or not name.strip():
            raise _RowError(f"a media name must be a non-empty string, got {_type_name(name)}")
        p = Path(name.strip())
        return p if p.is_absolute() else self.root / p

    def input_media(self, name: Any, modality: str | None) -> Media:
        p = self.resolve(name)
        key = self.modality(modality if modality is not None else self.modality_of_path(p.name), output=False)
        if not p.is_file():
            if p.is_dir():
                raise _RowError(f"{key} {str(p)!r} is a folder, not a file", "missing_media")
            raise _RowError(f"{key} file not found: {str(p)!r}", "missing_media")
        return Media(modality=key, path=p)

    def target_path(self, name: Any) -> Path | None:
        if name is None or name == "":
            return None
        p = self.resolve(name)
        if p.is_file():
            return p
        if self.require_target_media:
            raise _RowError(f"target media file not found: {str(p)!r} (pass require_target_media=False to keep the "
                            f"target without it)", "missing_media")
        self.notes += 1
        return None


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _RowError(f"{what} must be a string, got {_type_name(value)}")
    if len(value) > MAX_TEXT_CHARS:
        raise _RowError(f"{what} is {len(value):,} characters; a text is limited to {MAX_TEXT_CHARS:,}", "too_long")
    return value


def _caption(value: Any, what: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _RowError(f"{what}: a generate target needs a non-empty caption", "missing_caption")
    caption = value.strip() if isinstance(value, str) else _text(value, what)
    if len(caption) > MAX_CAPTION_CHARS:
        raise _RowError(f"{what}: the caption is {len(caption):,} characters; captions are limited to "
                        f"{MAX_CAPTION_CHARS:,} (a decoder reads a few hundred tokens at most)", "too_long")
    return caption


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise _RowError(f"{what} must be an array, got {_type_name(value)}")
    return value


# ---------------------------------------------------------------------------------------------- markup
@dataclass(frozen=True)
class _Mark:
    kind: Literal["tag", "placeholder", "signal"]
    modality: str | None
    name: str = ""
    tag: str = ""  # a tag's own spelling (``Image`` in ``<Image>x.jpg</Image>``)


class _Markup:
    """Finds official markup in text: media tags, placeholders, signal runs, wrapper tokens (stripped)."""

    _cache: ClassVar[dict[int, "_Markup"]] = {}

    def __init__(self, registry: Any) -> None:
        formats = dict(OFFICIAL_SIGNAL_FORMATS)
        wrappers = set(OFFICIAL_WRAPPERS)
        for key, spec in registry.modalities.items():
            if spec.signal_token_format:
                formats[key] = spec.signal_token_format
            if spec.wrapper_tokens:
                wrappers.update(spec.wrapper_tokens)
        self.keys = set(registry.modalities) | set(OFFICIAL_SIGNAL_FORMATS)
        groups = []
        self.signal_groups: dict[str, str] = {}
        for n, (key, fmt) in enumerate(sorted(formats.items())):
            token = re.escape(fmt).replace(re.escape("{i}"), r"\d+")
            group = f"sig{n}"
            self.signal_groups[group] = key
            groups.append(f"(?P<{group}>{token}(?:[ \\t]*{token})*)")
        keys_alt = "|".join(sorted((re.escape(k) for k in self.keys), key=len, reverse=True))
        wrap_alt = "|".join(sorted((re.escape(w) for w in wrappers), key=len, reverse=True))
        self.pattern = re.compile(
            r"<(?P<tag>[A-Za-z_][A-Za-z0-9_]*)>(?P<name>[^<>\n]*?)</(?P=tag)>"
            + f"|<(?P<ph>{keys_alt})>"
            + "|" + "|".join(groups)
            + f"|(?P<wrap>{wrap_alt})"
        )

    @classmethod
    def of(cls, registry: Any) -> "_Markup":
        found = cls._cache.get(id(registry))
        if found is None or found.keys != set(registry.modalities) | set(OFFICIAL_SIGNAL_FORMATS):
            found = cls._cache[id(registry)] = cls(registry)
        return found

    def split(self, text: str) -> list[str | _Mark]:
        """Text pieces and marks, in order (wrapper tokens and unknown tags' brackets dropped)."""
        out: list[str | _Mark] = []
        pos = 0
        for m in self.pattern.finditer(text):
            out.append(text[pos : m.start()])
            pos = m.end()
            if m.group("tag") is not None:
                key = m.group("tag").lower()
                name = m.group("name").strip()
                if key in self.keys and name:
                    out.append(_Mark("tag", key, name, m.group("tag")))
                elif name:  # <Img>x</Img> (v0 wrappers around a media token): keep no text of it
                    continue
            elif m.group("ph") is not None:
                out.append(_Mark("placeholder", m.group("ph")))
            elif m.group("wrap") is not None:
                continue
            else:
                group = next(g for g in self.signal_groups if m.group(g) is not None)
                out.append(_Mark("signal", self.signal_groups[group]))
        out.append(text[pos:])
        return out


def _clean(text: str) -> str:
    """Collapse the spaces a removed token leaves; strip the ends."""
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n[ \t]+", "\n", text)
    return text.strip()


class _TurnBuilder:
    """Builds one turn's parts and the targets in it."""

    def __init__(self, role: str, turn_index: int) -> None:
        self.role = role
        self.turn_index = turn_index
        self.parts: list[Text | Media] = []
        self.targets: list[Target] = []
        self._joinable = False  # the last thing added was text: text that follows joins it (a removed mark between)

    def text(self, text: str) -> None:
        text = _clean(text)
        if not text:
            return
        last = self.parts[-1] if self.parts else None
        if self._joinable and isinstance(last, Text):
            self.parts[-1] = Text(_clean(f"{last.text} {text}"))
        else:
            self.parts.append(Text(text))
        self._joinable = True

    def media(self, media: Media) -> None:
        self.parts.append(media)
        self._joinable = False

    def target(self, ctx: _Context, modality: Any, caption: Any, media_name: Any = None) -> None:
        key = ctx.modality(modality, output=True)
        cap = _caption(caption, f"the {key} target")
        self.targets.append(Target(key, cap, ctx.target_path(media_name), self.turn_index, len(self.parts)))
        self._joinable = False

    def build(self) -> Turn:
        return Turn(self.role, self.parts or [Text("")])  # type: ignore[arg-type]


def _role(value: Any) -> str:
    role = _ROLES.get(value) if isinstance(value, str) else None
    if role is None:
        raise _RowError(f"unknown role {value!r} (use human/user or gpt/assistant)")
    return role


def _build_markup_turn(
    ctx: _Context,
    role: str,
    index: int,
    value: str,
    *,
    on_input: Callable[[_TurnBuilder, _Mark], None],
    on_output: Callable[[_TurnBuilder, _Mark], None],
) -> _TurnBuilder:
    """Split ``value`` on markup; user-side marks go to ``on_input``, assistant-side marks to ``on_output``."""
    tb = _TurnBuilder(role, index)
    for piece in ctx.markup.split(value):
        if isinstance(piece, str):
            tb.text(piece)
        elif role == "user":
            on_input(tb, piece)
        else:
            on_output(tb, piece)
    return tb


def _assemble(builders: list[_TurnBuilder]) -> TrainingSample:
    conv = Conversation([b.build() for b in builders])
    targets = [t for b in builders for t in b.targets]
    return TrainingSample(conv, targets)


def _check_sample(sample: TrainingSample) -> None:
    turns = sample.conversation.turns
    if not turns:
        raise _RowError("empty conversation", "empty_conversation")
    if not any(t.role == "user" for t in turns):
        raise _RowError("the conversation has no user turn", "empty_conversation")
    trained = [t for t in turns if t.role == "assistant"]
    has_text = any(isinstance(p, Text) and p.text for t in trained for p in t.parts)
    if not trained or not (has_text or sample.targets):
        raise _RowError("the conversation has no assistant text or target to train on", "empty_conversation")


def _pop_queue(queue: dict[str, list[Any]], key: str, what: str) -> Any:
    items = queue.get(key) or []
    if not items:
        raise _RowError(f"{what}: more <{key}> placeholders than {key} items in the row")
    return items.pop(0)


# ---------------------------------------------------------------------------------------------- readers
def _read_jsonl(row: dict[str, Any], ctx: _Context) -> TrainingSample:
    turns = _list(row.get("turns"), "'turns'")
    if not turns:
        raise _RowError("empty conversation ('turns' is [])", "empty_conversation")
    builders = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise _RowError(f"turns[{i}] must be an object, got {_type_name(turn)}")
        role = turn.get("role")
        if role not in ("user", "assistant"):
            raise _RowError(f"turns[{i}].role must be 'user' or 'assistant', got {role!r}")
        parts = _list(turn.get("parts"), f"turns[{i}].parts")
        tb = _TurnBuilder(role, i)
        for j, part in enumerate(parts):
            where = f"turns[{i}].parts[{j}]"
            if not isinstance(part, dict):
                raise _RowError(f"{where} must be an object, got {_type_name(part)}")
            kinds = [k for k in ("text", "media", "generate") if k in part]
            if "generate" in part:
                kinds = ["generate"]
            if len(kinds) != 1:
                raise _RowError(f"{where} must have exactly one of 'text', 'media', 'generate'")
            if kinds[0] == "text":
                _strip_into(tb, ctx, _text(part["text"], f"{where}.text"))
            elif kinds[0] == "media":
                if role != "user":
                    raise _RowError(f"{where}: media in an assistant turn; an output is {{'generate': ..., 'caption': ...}}")
                tb.media(ctx.input_media(part["media"], part.get("modality")))
            else:
                if role != "assistant":
                    raise _RowError(f"{where}: 'generate' belongs in an assistant turn")
                tb.target(ctx, part["generate"], part.get("caption"), part.get("media"))
        builders.append(tb)
    return _assemble(builders)


def _strip_into(tb: _TurnBuilder, ctx: _Context, text: str) -> None:
    """Our format's text is plain: any official markup in it is removed (not silently kept as text)."""
    for piece in ctx.markup.split(text):
        if isinstance(piece, str):
            tb.text(piece)
        else:
            raise _RowError(f"text of turn {tb.turn_index} contains markup {piece.kind} ({piece.modality}); "
                            "use a 'media' or 'generate' part instead")


def _xcaption_fields(ctx: _Context) -> dict[str, str]:
    """``<key>_name`` -> key: the official three, and the same layout for every installed modality."""
    return {**XCAPTION_FIELDS, **{f"{key}_name": key for key in ctx.registry.modalities}}


def _read_xcaption(row: dict[str, Any], ctx: _Context) -> TrainingSample:
    fields = _xcaption_fields(ctx)
    found = [(f, m) for f, m in fields.items() if f in row]
    if len(found) != 1:
        raise _RowError(f"an X-caption row needs exactly one of {', '.join(fields)}; got {sorted(row)}")
    name_field, modality = found[0]
    caption = _caption(row.get("caption"), "caption")
    user, assistant = _TurnBuilder("user", 0), _TurnBuilder("assistant", 1)
    if ctx.task == "caption":
        user.media(ctx.input_media(row[name_field], modality))
        user.text(ctx.caption_prompt)
        _strip_caption(assistant, ctx, caption)
    else:
        _strip_caption(user, ctx, caption)
        _strip_caption(assistant, ctx, caption)
        assistant.target(ctx, modality, _plain(ctx, caption), row[name_field])
    return _assemble([user, assistant])


def _plain(ctx: _Context, text: str) -> str:
    return _clean(" ".join(p for p in ctx.markup.split(text) if isinstance(p, str)))


def _strip_caption(tb: _TurnBuilder, ctx: _Context, text: str) -> None:
    tb.text(_plain(ctx, text))


def _official_turns(row: dict[str, Any], key: str) -> list[dict[str, Any]]:
    conv = _list(row.get(key), f"'{key}'")
    if not conv:
        raise _RowError(f"empty conversation ('{key}' is [])", "empty_conversation")
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict):
            raise _RowError(f"{key}[{i}] must be an object, got {_type_name(turn)}")
        _text(turn.get("value"), f"{key}[{i}].value")
    return conv


def _read_t2m(row: dict[str, Any], ctx: _Context) -> TrainingSample:
    conv = _official_turns(row, "conversation")
    mm_name = row.get("mm_name")
    builders = []
    for i, turn in enumerate(conv):
        role = _role(turn.get("from"))
        out = turn.get("output_modality", "text") if role == "assistant" else "text"
        if out is None:
            out = "text"
        pending: list[bool] = [out != "text"]

        def on_output(tb: _TurnBuilder, mark: _Mark, turn: dict[str, Any] = turn, out: Any = out,
                      pending: list[bool] = pending) -> None:
            if mark.kind == "signal" and pending[0] and mark.modality == out:
                tb.target(ctx, out, turn.get("caption"), mm_name)
                pending[0] = False
            # any other markup is stripped

        def on_input(tb: _TurnBuilder, mark: _Mark) -> None:
            return None  # T2M inputs are text; stray markup is stripped

        tb = _build_markup_turn(ctx, role, i, turn["value"], on_input=on_input, on_output=on_output)
        if pending[0]:  # no signal run in the text: the output goes at the end of the turn (official layout)
            tb.target(ctx, out, turn.get("caption"), mm_name)
        builders.append(tb)
    return _assemble(builders)


def _read_mosit(row: dict[str, Any], ctx: _Context) -> TrainingSample:
    captions: dict[tuple[str, str], Any] = {}
    for modality in dict.fromkeys(["image", "video", "audio", *ctx.registry.modalities]):  # official + installed
        for j, item in enumerate(_list(row.get(f"{modality}_list", []), f"'{modality}_list'")):
            if not isinstance(item, dict):
                raise _RowError(f"{modality}_list[{j}] must be an object, got {_type_name(item)}")
            name = item.get(f"{modality}_name")
            if isinstance(name, str):
                captions[(modality, name.strip())] = item.get("caption")
    conv = _official_turns(row, "conversation")

    def on_input(tb: _TurnBuilder, mark: _Mark) -> None:
        if mark.kind == "tag":
            tb.media(ctx.input_media(mark.name, mark.modality))

    def on_output(tb: _TurnBuilder, mark: _Mark) -> None:
        if mark.kind == "tag":
            assert mark.modality is not None
            generated = MOSIT_GENERATED.get(mark.modality)
            if generated is not None and not (mark.tag == generated[0] and generated[1].fullmatch(mark.name)):
                ctx.dropped += 1  # not a generated media name: the official preprocessing removes the tag
                return
            key = ctx.modality(mark.modality, output=True)
            caption = captions.get((key, mark.name))
            if caption is None and (key, mark.name) not in captions:
                raise _RowError(f"<{key.capitalize()}>{mark.name}</{key.capitalize()}> in a gpt turn is not in "
                                f"'{key}_list' (its caption is the target)", "missing_caption")
            tb.target(ctx, key, caption, mark.name)

    builders = [
        _build_markup_turn(ctx, _role(t.get("from")), i, t["value"], on_input=on_input, on_output=on_output)
        for i, t in enumerate(conv)
    ]
    return _assemble(builders)


def _read_llava(row: dict[str, Any], ctx: _Context) -> TrainingSample:
    conv = _official_turns(row, "conversation")
    first_human = next((t for t in conv if t.get("from") in ("human", "user")), {})
    declared = first_human.get("input_modality", "image")
    if declared == "text":
        # official Alpaca rows (image_name "00000000000"): the legacy loader reads them as text only and never looks
        # at image_name (TX2TInstructionDataset with no media root)
        name = None
    else:
        name = row.get("image_name") or row.get("image")
        if name is not None and not isinstance(name, str):
            raise _RowError(f"'image_name' must be a string, got {_type_name(name)}")
    media = _llava_media(ctx, name, declared) if name else None
    placed = [False]

    def on_input(tb: _TurnBuilder, mark: _Mark) -> None:
        if mark.kind == "placeholder" and media is not None and mark.modality == media.modality and not placed[0]:
            tb.media(media)
            placed[0] = True

    builders = []
    for i, t in enumerate(conv):
        role = _role(t.get("from"))
        out = t.get("output_modality", "text") if role == "assistant" else "text"
        tb = _build_markup_turn(ctx, role, i, t["value"], on_input=on_input, on_output=lambda tb, mark: None)
        if role == "user" and media is not None and not placed[0]:
            # official build_one_instance_stage_3: the media goes first in the first human turn
            tb.parts.insert(0, media)
            placed[0] = True
        if out not in (None, "text"):
            # the legacy schema is T2M's (build_one_instance_stage_3 appends the signal tokens of output_modality):
            # an output is a target with the turn's caption, never dropped
            tb.target(ctx, out, t.get("caption"))
        builders.append(tb)
    return _assemble(builders)


def _llava_media(ctx: _Context, name: str, declared: Any) -> Media:
    """The row's input file, checked: it exists and its suffix is a file of the declared ``input_modality``."""
    wanted = ctx.modality(declared, output=False)
    by_suffix = ctx.modality_of_path(Path(name.strip()).name)
    if by_suffix != wanted:
        raise _RowError(f"{name!r} is a {by_suffix} file by its suffix, but the row's input_modality is {wanted!r}",
                        "unknown_modality")
    return ctx.input_media(name, wanted)


def _names(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _read_conversations(row: dict[str, Any], ctx: _Context) -> TrainingSample:
    conv = _official_turns(row, "conversations")
    inputs: dict[str, list[Any]] = {}
    outputs: dict[str, list[tuple[Any, Any]]] = {}
    for key in ("image", "video", "audio"):
        inputs[key] = list(_names(row.get(f"input_{key}", row.get(key) if key == "image" else None), f"input_{key}"))
        files = _names(row.get(f"output_{key}"), f"output_{key}")
        caps = _names(row.get(f"{key}_captions"), f"{key}_captions")
        if files and caps and len(files) != len(caps):
            raise _RowError(f"'output_{key}' has {len(files)} items but '{key}_captions' has {len(caps)}")
        n = max(len(files), len(caps))
        outputs[key] = [(files[k] if k < len(files) else None, caps[k] if k < len(caps) else None) for k in range(n)]

    def on_input(tb: _TurnBuilder, mark: _Mark) -> None:
        if mark.kind == "placeholder":
            assert mark.modality is not None
            tb.media(ctx.input_media(_pop_queue(inputs, mark.modality, "input"), mark.modality))
        elif mark.kind == "tag":
            tb.media(ctx.input_media(mark.name, mark.modality))

    def on_output(tb: _TurnBuilder, mark: _Mark) -> None:
        if mark.kind in ("placeholder", "signal"):
            assert mark.modality is not None
            name, caption = _pop_queue(outputs, mark.modality, "output")  # type: ignore[arg-type]
            tb.target(ctx, mark.modality, caption, name)

    # the k-th <X> placeholder of the human turns (in any turn) takes input_X[k], as the new code splices them in
    # order; the inputs no placeholder takes go first in the first human turn
    wanted: Counter[str] = Counter()
    for t in conv:
        if _ROLES.get(t.get("from")) == "user":
            wanted.update(m.modality for m in ctx.markup.split(t["value"])
                          if isinstance(m, _Mark) and m.kind == "placeholder" and m.modality in inputs)
    lead_names = [(k, n) for k in ("image", "video", "audio") for n in inputs[k][wanted[k]:]]
    for k in inputs:
        inputs[k] = inputs[k][: wanted[k]]
    builders = []
    for i, t in enumerate(conv):
        role = _role(t.get("from"))
        tb = _build_markup_turn(ctx, role, i, t["value"], on_input=on_input, on_output=on_output)
        if role == "user" and lead_names and not any(b.role == "user" for b in builders):
            tb.parts[:0] = [ctx.input_media(n, k) for k, n in lead_names]
        builders.append(tb)
    left = {k: len(v) for k, v in outputs.items() if v}
    if left:
        raise _RowError(f"outputs without a <modality> placeholder in a gpt turn: {left}")
    return _assemble(builders)


_READERS: dict[str, Callable[[dict[str, Any], _Context], TrainingSample]] = {
    "jsonl": _read_jsonl,
    "xcaption": _read_xcaption,
    "t2m": _read_t2m,
    "mosit": _read_mosit,
    "llava": _read_llava,
    "conversations": _read_conversations,
}


# ============================================================================================ writing
def sample_to_json(sample: TrainingSample, media_root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """One sample as a row of our JSONL format (paths relative to ``media_root`` when they lie under it)."""

    def rel(p: Path) -> str:
        if media_root is not None:
            try:
                return Path(p).resolve().relative_to(Path(media_root).resolve()).as_posix()
            except ValueError:
                pass
        return str(p)

    turns = []
    for ti, turn in enumerate(sample.conversation.turns):
        parts: list[dict[str, Any]] = []
        targets = [t for t in sample.targets if t.turn_index == ti]

        def emit_targets(position: int, targets: list[Target], parts: list[dict[str, Any]]) -> None:
            for t in targets:
                if t.part_index == position:
                    part: dict[str, Any] = {"generate": t.modality, "caption": t.caption}
                    if t.media_path is not None:
                        part["media"] = rel(t.media_path)
                    parts.append(part)

        for pi, p in enumerate(turn.parts):
            emit_targets(pi, targets, parts)
            if isinstance(p, Text):
                if p.text:
                    parts.append({"text": p.text})
            else:
                if p.path is None:
                    raise DatasetError("cannot write an in-memory media part to JSONL (it has no path)")
                parts.append({"media": rel(p.path), "modality": p.modality})
        emit_targets(len(turn.parts), targets, parts)
        turns.append({"role": turn.role, "parts": parts})
    row: dict[str, Any] = {"turns": turns}
    if sample.sample_id:
        row = {"id": sample.sample_id, **row}
    return row


def write_jsonl(
    samples: Sequence[TrainingSample] | Iterator[TrainingSample],
    path: str | os.PathLike[str],
    media_root: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``samples`` as our JSONL format at ``path`` (media paths relative to ``media_root``, default the
    file's folder); returns ``path``. :func:`read_dataset` on the result gives the same samples back."""
    path = Path(path)
    root = Path(media_root) if media_root is not None else path.parent
    with open(path, "w", encoding="utf-8") as fh:
        for sample in samples:
            fh.write(json.dumps(sample_to_json(sample, root), ensure_ascii=False) + "\n")
    return path
