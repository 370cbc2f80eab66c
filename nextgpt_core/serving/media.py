"""Media in and out of the server: base64 and data URLs, uploads, file ids, the size / duration / resolution
limits, and writing generated media into the file store. No modality is named here: modalities, their suffixes
and MIME types come from the registry, reading and writing from each modality's ``MediaIO``."""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
from pathlib import Path
from typing import Any

from ..conversation import Media
from ..errors import NextGPTError
from .config import ServeConfig
from .errors import ServingError
from .files import FILE_ID, FileRecord, FileStore

__all__ = ["MediaGateway", "media_extent"]

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,(?P<data>.*)", re.S)
_OWN_URL = re.compile(r"(?:https?://[^/]+)?/v1/files/(?P<id>[^/?#]+)(?:/content)?")
_B64_CHARS = re.compile(rb"[A-Za-z0-9+/=_-]*")


def media_extent(media: Any) -> tuple[float | None, int | None]:
    """``(seconds, pixels)`` of a decoded media object, each ``None`` when it has no such extent.

    Seconds: a ``duration`` attribute (video, audio). Pixels (width x height of one picture): ``frames (T, H, W, C)``
    (video), ``width`` and ``height`` (PIL images), or a 2-D+ array's first two sizes (depth maps).
    """
    seconds = getattr(media, "duration", None)
    seconds = float(seconds) if isinstance(seconds, (int, float)) else None
    pixels = None
    frames = getattr(media, "frames", None)
    if frames is not None and getattr(frames, "ndim", 0) >= 3:
        pixels = int(frames.shape[1]) * int(frames.shape[2])
    elif isinstance(getattr(media, "width", None), int) and isinstance(getattr(media, "height", None), int):
        pixels = media.width * media.height
    elif getattr(media, "ndim", 0) >= 2 and not hasattr(media, "sample_rate"):
        pixels = int(media.shape[0]) * int(media.shape[1])
    return seconds, pixels


class MediaGateway:
    """Turns client bytes into :class:`~nextgpt_core.conversation.Media` for a model, and generated media into
    stored files, enforcing ``config``'s limits."""

    def __init__(self, model: Any, store: FileStore, config: ServeConfig) -> None:
        self.model, self.store, self.config = model, store, config
        self.registry = model.registry
        self.inputs = list(model.input_modalities())

    # -- modalities, suffixes, MIME types
    def spec(self, modality: str) -> Any:
        """The registered spec of an input modality of the model (else 400)."""
        if modality not in self.inputs:
            raise ServingError(400, "unsupported_modality",
                               f"modality {modality!r} is not an input of this model; inputs: {', '.join(self.inputs) or '(none)'}")
        return self.registry.modality(modality)

    def modality_for_mime(self, mime: str) -> str:
        """The input modality reading ``mime`` (a modality detected by extension wins over an explicit-only one)."""
        mime = mime.lower()
        matches = [k for k in self.inputs if mime in self.registry.modality(k).mime_types]
        matches.sort(key=lambda k: not self.registry.modality(k).detect_by_extension)
        if not matches:
            raise ServingError(415, "unsupported_media_type",
                               f"no input modality of this model reads {mime!r}; readable: {', '.join(self.readable_mimes())}")
        return matches[0]

    def modality_for_name(self, filename: str) -> str:
        """The input modality of a file name's suffix (else 415)."""
        suffix = Path(filename).suffix.lower()
        matches = [k for k in self.inputs if suffix in self.registry.modality(k).extensions]
        matches.sort(key=lambda k: not self.registry.modality(k).detect_by_extension)
        if not suffix or not matches:
            raise ServingError(415, "unsupported_media_type",
                               f"cannot tell the modality of {filename[:80]!r}: give `modality`, or one of the suffixes "
                               f"{', '.join(sorted({e for k in self.inputs for e in self.registry.modality(k).extensions}))}")
        return matches[0]

    def readable_mimes(self) -> list[str]:
        """Every MIME type some input modality reads."""
        return sorted({m for k in self.inputs for m in self.registry.modality(k).mime_types})

    def suffix_for(self, modality: str, *, fmt: str | None = None, mime: str | None = None, filename: str | None = None) -> str:
        """The suffix to store a ``modality`` file under: from ``fmt`` (``"wav"``), the file name, or the MIME type;
        it must be one of the modality's registered extensions (else 415)."""
        spec = self.spec(modality)
        candidates: list[str] = []
        if fmt:
            candidates.append("." + fmt.lower().lstrip("."))
        if filename and Path(filename).suffix:
            candidates.append(Path(filename).suffix.lower())
        if mime and not candidates and mime.lower() != "application/octet-stream":
            known = [e for e in mimetypes.guess_all_extensions(mime.lower()) if e in spec.extensions]
            if not known and mime.lower() not in spec.mime_types:
                raise ServingError(415, "unsupported_media_type",
                                   f"modality {modality!r} reads {', '.join(spec.mime_types) or ', '.join(spec.extensions)}; got {mime!r}")
            candidates.extend(known or spec.extensions[:1])
        if not candidates:
            return spec.extensions[0] if spec.extensions else ".bin"
        for suffix in candidates:
            if suffix in spec.extensions:
                return suffix
        raise ServingError(415, "unsupported_media_type",
                           f"modality {modality!r} reads {', '.join(spec.extensions)}; got {candidates[0]!r}")

    def mime_for(self, modality: str, suffix: str) -> str:
        """A MIME type for a stored file (the system's table, else the modality's first registered one)."""
        guess = mimetypes.types_map.get(suffix) or mimetypes.guess_type(f"x{suffix}")[0]
        spec = self.registry.modality(modality)
        return guess or (spec.mime_types[0] if spec.mime_types else "application/octet-stream")

    # -- decoding client data
    def decode_base64(self, text: str, what: str) -> bytes:
        """Base64 (standard or URL-safe, whitespace allowed) -> bytes; bad base64 -> 400, too large -> 413."""
        raw = "".join(text.split()).encode("ascii", errors="replace")
        if len(raw) * 3 // 4 > self.config.max_upload_bytes:
            raise ServingError(413, "upload_too_large",
                               f"{what} is over the upload limit of {self.config.max_upload_bytes} bytes")
        if not _B64_CHARS.fullmatch(raw):
            raise ServingError(400, "invalid_base64", f"{what} is not valid base64")
        try:
            data = base64.b64decode(raw.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
        except (binascii.Error, ValueError):
            raise ServingError(400, "invalid_base64", f"{what} is not valid base64") from None
        if not data:
            raise ServingError(400, "invalid_base64", f"{what} is empty")
        return data

    def parse_data_url(self, url: str, what: str) -> tuple[str | None, bytes]:
        """``data:<mime>;base64,<data>`` -> ``(mime, bytes)``."""
        match = _DATA_URL.fullmatch(url.strip())
        if not match or not match.group("b64"):
            raise ServingError(400, "invalid_data_url", f"{what}: expected a data:<mime>;base64,<data> URL")
        return match.group("mime"), self.decode_base64(match.group("data"), what)

    def own_file_id(self, url: str) -> str | None:
        """The file id of this server's file URL (``/v1/files/{id}[/content]``, any host), or of a bare file id."""
        text = url.strip()
        if FILE_ID.fullmatch(text):
            return text
        match = _OWN_URL.fullmatch(text)
        return match.group("id") if match else None

    def read_checked(self, modality: str, path: Path) -> Any:
        """Decode a file with its modality's reader and apply the duration, resolution and decoded-size limits:
        first to what the header / container reports (``MediaIO.probe``: nothing decoded yet), then to the
        decoded object."""
        io_ = self.model.media_io(modality)
        probe = getattr(io_, "probe", None)
        if probe is not None:
            try:
                extent = probe(path)
            except NextGPTError as exc:
                raise ServingError(400, "invalid_media", _strip_path(str(exc), path)) from exc
            except Exception as exc:  # noqa: BLE001 - as below: not a readable file
                raise ServingError(400, "invalid_media", f"unreadable {modality} data ({type(exc).__name__})") from None
            if extent is not None:
                self.check_limits(modality, extent.seconds, extent.pixels, extent.decoded_bytes, before=True)
        try:
            data = io_.read(path)
        except NextGPTError as exc:
            raise ServingError(400, "invalid_media", _strip_path(str(exc), path)) from exc
        except Exception as exc:  # a reader that raised something else still means: not a readable file
            raise ServingError(400, "invalid_media", f"unreadable {modality} data ({type(exc).__name__})") from exc
        self.check_extent(modality, data)
        return data

    def check_extent(self, modality: str, data: Any) -> None:
        """413 when ``data`` is longer than ``max_media_seconds``, larger than ``max_media_pixels`` or holds more
        than ``max_decoded_bytes``."""
        seconds, pixels = media_extent(data)
        nbytes = getattr(getattr(data, "frames", None), "nbytes", None) or getattr(getattr(data, "samples", None), "nbytes", None)
        self.check_limits(modality, seconds, pixels, nbytes)

    def check_limits(self, modality: str, seconds: float | None, pixels: int | None, nbytes: int | None,
                     *, before: bool = False) -> None:
        """413 for a duration, picture size or decoded size over the limits (``before``: as the file reports it,
        before decoding)."""
        if seconds is not None and seconds > self.config.max_media_seconds:
            raise ServingError(413, "media_too_long",
                               f"the {modality} input is {seconds:.1f} s long; the limit is {self.config.max_media_seconds:g} s")
        if pixels is not None and pixels > self.config.max_media_pixels:
            raise ServingError(413, "media_too_large",
                               f"the {modality} input has {pixels} pixels per picture; the limit is {self.config.max_media_pixels}")
        if nbytes is not None and nbytes > self.config.max_decoded_bytes:
            when = " once decoded" if before else ""
            raise ServingError(413, "media_too_large",
                               f"the {modality} input would take {nbytes / 2**20:.0f} MiB{when}; the limit is "
                               f"{self.config.max_decoded_bytes / 2**20:.0f} MiB per media input")

    def from_bytes(self, data: bytes, modality: str, suffix: str) -> Media:
        """Inline bytes -> a decoded, checked :class:`Media` (decoded through a temporary file, then removed)."""
        path = self.store.temp_path(suffix)
        try:
            path.write_bytes(data)
            return Media(modality=modality, data=self.read_checked(modality, path))
        finally:
            self.store.discard(path)

    def known_file(self, file_id: str | None) -> bool:
        """Whether ``file_id`` names a file in the store."""
        try:
            self.store.get(file_id or "")
        except ServingError:
            return False
        return True

    def from_file_id(self, file_id: str, modality: str | None = None) -> Media:
        """A stored file as an input (its modality, or ``modality`` when that modality reads its suffix)."""
        record = self.store.get(file_id)
        key = modality or record.modality
        spec = self.spec(key)
        if record.suffix not in spec.extensions:
            raise ServingError(400, "unsupported_modality",
                               f"{file_id} is a {record.modality} file ({record.suffix}); modality {key!r} reads {', '.join(spec.extensions)}")
        return Media(modality=key, path=self.store.path(record))

    def store_upload(self, source: Any, *, filename: str, content_type: str | None, modality: str | None,
                     purpose: str) -> FileRecord:
        """Receive an upload: its modality (given, else from the suffix, else the MIME type), the size limit, a full
        read with the modality's reader (so a corrupt file fails now) and the media limits."""
        if modality:
            key = modality
            self.spec(key)
        elif filename and Path(filename).suffix:
            key = self.modality_for_name(filename)
        elif content_type and content_type != "application/octet-stream":
            key = self.modality_for_mime(content_type.split(";")[0].strip())
        else:
            raise ServingError(415, "unsupported_media_type", "cannot tell the upload's modality: give `modality` or a file name with a suffix")
        suffix = self.suffix_for(key, filename=filename, mime=(content_type or "").split(";")[0].strip() or None)
        path = self.store.temp_path(suffix)
        try:
            self.store.copy_stream(source, path, self.config.max_upload_bytes)
            self.read_checked(key, path)
            return self.store.add_path(path, filename=filename, purpose=purpose, modality=key,
                                       mime_type=self.mime_for(key, suffix))
        finally:
            self.store.discard(path)

    # -- generated media out
    def store_output(self, media: Media) -> FileRecord:
        """Write a generated media part with its modality's writer into the store (purpose ``"output"``)."""
        key = media.modality
        assert key is not None
        spec = self.registry.modality(key)
        suffix = spec.output_extension or (spec.extensions[0] if spec.extensions else ".bin")
        path = self.store.temp_path(suffix)
        try:
            written = Path(self.model.media_io(key).write(media.data, path))
            return self.store.add_path(written, filename=f"{key}{suffix}", purpose="output", modality=key,
                                       mime_type=self.mime_for(key, suffix))
        finally:
            self.store.discard(path)


def _strip_path(message: str, path: Path) -> str:
    """A reader's message without the server's temporary path in it."""
    return message.replace(repr(str(path)), "the file").replace(str(path), "the file")


