"""Video media for nextgpt: the in-memory type :class:`Video` and :class:`VideoIO` (MP4 / WebM / GIF via PyAV)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from nextgpt_core.errors import MediaError
from nextgpt_core.interfaces import MediaExtent, MediaIO

__all__ = ["MAX_FRAMES", "MAX_FRAME_PIXELS", "Video", "VideoIO"]

#: Most frames :meth:`VideoIO.read` decodes (about 10 min at 30 fps); longer files raise ``MediaError``.
MAX_FRAMES = 18_000
#: Largest frame (width x height) accepted (4096 x 2304); larger raise ``MediaError``.
MAX_FRAME_PIXELS = 4096 * 2304
#: Largest decoded size in bytes (``T*H*W*3``) accepted, so a long HD file cannot exhaust memory.
MAX_DECODED_BYTES = 4 << 30


@dataclass(eq=False)
class Video:
    """Decoded video: ``frames`` uint8 ``(T, H, W, 3)`` RGB, ``fps`` frames per second."""

    frames: np.ndarray
    fps: float

    def __array__(self, dtype=None, copy=None):  # noqa: ANN001 - numpy protocol
        """``np.asarray(media)`` gives the frames (so array comparisons compare content)."""
        return self.frames if dtype is None else self.frames.astype(dtype)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames.shape[0] / self.fps if self.fps else 0.0


def _check_video(media: Any) -> Video:
    if not isinstance(media, Video):
        raise MediaError(f"expected a nextgpt_video.Video, got {type(media).__name__}")
    f = np.asarray(media.frames)
    if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3 or f.shape[0] < 1:
        raise MediaError(f"Video.frames must be uint8 (T>=1, H, W, 3), got {f.dtype} {f.shape}")
    if not (media.fps and np.isfinite(media.fps) and media.fps > 0):
        raise MediaError(f"Video.fps must be a positive number, got {media.fps!r}")
    return media


def _extent(stream: Any, container: Any) -> MediaExtent:
    """:class:`MediaExtent` of a video stream from its container's metadata."""
    import math

    width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    rate = stream.average_rate or stream.guessed_rate
    seconds = None
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / 1_000_000  # av.time_base
    frames = int(stream.frames or 0)
    if not frames and seconds is not None and rate:
        frames = math.ceil(seconds * float(rate))
    if seconds is None and frames and rate:
        seconds = frames / float(rate)
    return MediaExtent(seconds=seconds, pixels=width * height, decoded_bytes=frames * width * height * 3 if frames else None)


class VideoIO(MediaIO):
    """Reads MP4 / WebM / GIF (any container and codec PyAV's bundled FFmpeg decodes) and writes H.264 MP4.

    ``read`` decodes every frame of the first video stream to RGB24 and returns ``Video(frames uint8 (T, H, W, 3),
    fps)`` with ``fps = float(stream.average_rate)`` (what decord, ImageBind's reader, reports as ``get_avg_fps``),
    falling back to the stream's guessed rate. It fails with one ``MediaError`` naming the file when the file is
    missing, has no video stream, cannot be demuxed/decoded, yields fewer frames than its header declares
    (truncated), changes frame size mid-stream, or exceeds :data:`MAX_FRAMES` / :data:`MAX_FRAME_PIXELS` /
    :data:`MAX_DECODED_BYTES`.

    ``write`` encodes libx264, ``yuv420p``, ``crf`` :attr:`crf` (17: visually lossless; 0 is mathematically lossless
    but needs an H.264 High 4:4:4 decoder), ``+faststart``, without the macroblock tree (with it two encodes of the
    same frames could differ: same frames, same bytes). yuv420p needs even sizes: an odd height/width is padded
    by repeating the last row/column (so such a video reads back one pixel larger).
    """

    #: x264 constant-rate factor used by :meth:`write`.
    crf: int = 17
    #: x264 preset used by :meth:`write`.
    preset: str = "medium"

    def probe(self, path: Path) -> MediaExtent:
        """Duration, frame size and decoded size from the container (no frame decoded).

        Frames: the stream's declared count, else its duration (stream, else container) times its rate.
        """
        path = self._check_file(path)
        name = str(path)
        try:
            with self._open(name) as container:
                stream = self._stream(container, name)
                return _extent(stream, container)
        except MediaError:
            raise
        except Exception as exc:  # av.error.*, OSError
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise MediaError(f"{name!r} is not a readable video ({msg})") from exc

    def read(self, path: Path) -> Video:
        """Decode ``path`` -> ``Video(frames uint8 (T, H, W, 3), fps)``.

        The limits apply first to what the container reports (:meth:`probe`), so an over-long or over-large file
        is refused before a frame is decoded; they apply again while decoding (a container can under-report).
        Frames are decoded into one preallocated array when the count is declared (no second copy at the end).
        """
        path = self._check_file(path)
        name = str(path)
        try:
            with self._open(name) as container:
                stream = self._stream(container, name)
                stream.thread_type = "AUTO"
                width, height = stream.codec_context.width, stream.codec_context.height
                if width * height > MAX_FRAME_PIXELS:
                    raise MediaError(f"{name!r} is {width}x{height}; frames are limited to {MAX_FRAME_PIXELS} pixels")
                extent = _extent(stream, container)
                estimated = (extent.decoded_bytes or 0) // max(width * height * 3, 1)
                if estimated > MAX_FRAMES or (extent.decoded_bytes or 0) > MAX_DECODED_BYTES:
                    raise MediaError(
                        f"{name!r} is too long: its container reports about {estimated} frames of {width}x{height} "
                        f"({(extent.decoded_bytes or 0) / 2**30:.1f} GiB decoded); limit {MAX_FRAMES} frames / "
                        f"{MAX_DECODED_BYTES / 2**30:.0f} GiB"
                    )
                rate = stream.average_rate or stream.guessed_rate
                declared = int(stream.frames or 0)
                buffer = np.empty((declared, height, width, 3), dtype=np.uint8) if declared else None
                extra: list[np.ndarray] = []  # frames beyond the declared count (or all of them without one)
                count = 0
                for frame in container.decode(stream):
                    array = frame.to_ndarray(format="rgb24")
                    if array.shape != (height, width, 3):
                        raise MediaError(f"{name!r} changes frame size mid-stream ({(height, width)} -> {array.shape[:2]})")
                    if buffer is not None and count < declared:
                        buffer[count] = array
                    else:
                        extra.append(array)
                    count += 1
                    if count > MAX_FRAMES or count * array.nbytes > MAX_DECODED_BYTES:
                        raise MediaError(f"{name!r} is too long: over {count - 1} frames decoded; limit {MAX_FRAMES} frames / {MAX_DECODED_BYTES} bytes")
        except MediaError:
            raise
        except Exception as exc:  # av.error.*, OSError, ValueError from corrupt streams
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise MediaError(f"{name!r} is not a readable video ({msg})") from exc
        if not count:
            raise MediaError(f"{name!r} contains no decodable video frames")
        if declared and count < declared:
            raise MediaError(f"{name!r} is truncated or corrupt: decoded {count} of {declared} frames")
        fps = float(rate) if rate else 0.0
        if not fps > 0:
            raise MediaError(f"{name!r} has no usable frame rate")
        if buffer is None:
            frames = np.stack(extra)
        elif extra:
            frames = np.concatenate([buffer, np.stack(extra)])
        else:
            frames = buffer
        return Video(frames=frames, fps=fps)

    @staticmethod
    def _check_file(path: Path) -> Path:
        path = Path(path)
        if not path.is_file():
            raise MediaError(f"video file not found: {str(path)!r}" if not path.is_dir() else f"{str(path)!r} is a folder, not a video file")
        if path.stat().st_size == 0:
            raise MediaError(f"{str(path)!r} is empty (0 bytes)")
        return path

    @staticmethod
    def _open(name: str) -> Any:
        import av

        return av.open(name, mode="r")

    @staticmethod
    def _stream(container: Any, name: str) -> Any:
        if not container.streams.video:
            raise MediaError(f"{name!r} has no video stream")
        return container.streams.video[0]

    def write(self, media: Video, path: Path) -> Path:
        """Encode ``media`` as H.264 (libx264, yuv420p) MP4 at ``path`` at ``media.fps``."""
        import av

        video = _check_video(media)
        frames = np.asarray(video.frames)
        pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
        if pad_h or pad_w:
            frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        path = Path(path)
        rate = Fraction(float(video.fps)).limit_denominator(1001 * 1000)
        with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
            stream.pix_fmt = "yuv420p"
            # mbtree (the lookahead's macroblock tree) made two encodes of the same frames differ now and then
            stream.options = {"crf": str(self.crf), "preset": self.preset, "x264-params": "mbtree=0"}
            for array in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return path

    def to_bytes(self, media: Video) -> bytes:
        """Canonical form: ``b"VIDEO <T>x<H>x<W>x3 fps=<fps>\\n"`` followed by the raw uint8 frames (C order)."""
        video = _check_video(media)
        frames = np.ascontiguousarray(video.frames)
        t, h, w, _ = frames.shape
        return f"VIDEO {t}x{h}x{w}x3 fps={float(video.fps)!r}\n".encode() + frames.tobytes()

    def example(self) -> Video:
        """16 frames at 8 fps, 64x96: a white square sliding right over a vertical colour gradient."""
        t, h, w = 16, 64, 96
        frames = np.zeros((t, h, w, 3), dtype=np.uint8)
        frames[..., 2] = np.linspace(40, 200, h, dtype=np.uint8)[None, :, None]
        for i in range(t):
            x0 = i * (w - 16) // (t - 1)
            frames[i, 24:40, x0 : x0 + 16] = 255
        return Video(frames=frames, fps=8.0)
