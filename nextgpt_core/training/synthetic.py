"""Small synthetic captioned datasets for tests and examples: shapes and colours as images and videos, tones as sounds.

:func:`make_synthetic_dataset` writes media files through the modality plugins' writers (``ImageIO`` /
``VideoIO`` / ``AudioIO``; images fall back to PIL when the image plugin is not installed) and the dataset files
that describe them, in our JSONL format and in the official X-caption formats (cc3m / webvid / audiocap json).
Everything is a deterministic function of ``seed``: the same arguments give byte-identical dataset files and the same
decoded media.

Captions are compositional so a model can learn them from the pixels / samples:

* image: ``"a red circle on a white background"`` (shape x colour x background);
* video: ``"a blue square moving right"`` (shape x colour x direction);
* audio: ``"a steady low tone"`` / ``"a beeping high tone"`` (pitch x rhythm).

Example:
    >>> import tempfile
    >>> ds = make_synthetic_dataset(tempfile.mkdtemp(), n_per_modality=2, modalities=("image",))
    >>> sorted(ds.xcaption), len(ds.items["image"])
    (['image'], 2)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

__all__ = [
    "AUDIO_RATE",
    "SyntheticDataset",
    "SyntheticItem",
    "audio_caption",
    "image_caption",
    "make_synthetic_dataset",
    "render_audio",
    "render_image",
    "render_video",
    "video_caption",
]

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}
DIRECTIONS = ("left", "right", "up", "down")
PITCHES = {"low": 220.0, "middle": 440.0, "high": 880.0}
RHYTHMS = ("steady", "beeping")
#: Sample rate of the synthetic sounds (Hz; ImageBind and AudioLDM use 16 kHz).
AUDIO_RATE = 16_000
#: X-caption file name and name field per modality (the official T-X pair files).
XCAPTION_FILES = {"image": ("cc3m.json", "image_name"), "video": ("webvid.json", "video_name"),
                  "audio": ("audiocap.json", "audio_name")}


@dataclass(frozen=True)
class SyntheticItem:
    """One synthetic media file: ``modality``, its ``caption``, its ``path`` (under the media folder) and the
    attributes it was drawn from (``{"shape": "circle", "colour": "red", ...}``)."""

    modality: str
    caption: str
    path: Path
    attributes: dict[str, Any]


@dataclass
class SyntheticDataset:
    """What :func:`make_synthetic_dataset` wrote.

    Attributes:
        root: the folder; media: ``root/media`` (the media root of every dataset file).
        jsonl: ``root/synthetic.jsonl``: for every item one captioning sample (user: media + prompt, assistant:
            caption) then one generation sample (user: ``"Show me <caption>."``, assistant: text + a ``generate``
            target with the caption and the item's file).
        xcaption: modality -> ``root/cc3m.json`` / ``webvid.json`` / ``audiocap.json``.
        items: modality -> the items, in order.
        skipped: modality -> why it was not made (its plugin is not installed).
    """

    root: Path
    media: Path
    jsonl: Path
    xcaption: dict[str, Path] = field(default_factory=dict)
    items: dict[str, list[SyntheticItem]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- rendering
def image_caption(shape: str, colour: str, background: str) -> str:
    """``"a <colour> <shape> on a <background> background"``."""
    return f"a {colour} {shape} on a {background} background"


def video_caption(shape: str, colour: str, direction: str) -> str:
    """``"a <colour> <shape> moving <direction>"``."""
    return f"a {colour} {shape} moving {direction}"


def audio_caption(pitch: str, rhythm: str) -> str:
    """``"a <rhythm> <pitch> tone"``."""
    return f"a {rhythm} {pitch} tone"


def _mask(shape: str, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    if shape == "square":
        return (np.abs(x - cx) <= radius * 0.85) & (np.abs(y - cy) <= radius * 0.85)
    if shape == "triangle":  # apex up
        top, bottom = cy - radius, cy + radius
        half = (y - top) / (2 * radius) * radius
        return (y >= top) & (y <= bottom) & (np.abs(x - cx) <= half)
    raise ValueError(f"unknown shape {shape!r}; use one of {SHAPES}")


def render_image(shape: str, colour: str, background: str, *, size: int = 64, cx: float | None = None,
                 cy: float | None = None, radius: float | None = None) -> np.ndarray:
    """A uint8 RGB image ``(size, size, 3)``: one filled ``shape`` of ``colour`` on a plain ``background``."""
    rgb = np.empty((size, size, 3), dtype=np.uint8)
    rgb[:] = BACKGROUNDS[background]
    r = radius if radius is not None else size * 0.28
    m = _mask(shape, size, cx if cx is not None else size / 2, cy if cy is not None else size / 2, r)
    rgb[m] = COLOURS[colour]
    return rgb


def render_video(shape: str, colour: str, direction: str, *, size: int = 32, frames: int = 8,
                 background: str = "black", offset: float = 0.0) -> np.ndarray:
    """uint8 RGB frames ``(frames, size, size, 3)``: ``shape`` sliding across the frame towards ``direction``.

    ``offset`` (pixels, applied across the motion) varies the rendering without changing the caption.
    """
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    r = size * 0.2
    lo, hi = r + 1, size - r - 1
    for t in range(frames):
        s = lo + (hi - lo) * t / max(frames - 1, 1)
        along = {"right": s, "left": size - s, "down": s, "up": size - s}[direction]
        across = size / 2 + offset
        cx, cy = (along, across) if direction in ("left", "right") else (across, along)
        out[t] = render_image(shape, colour, background, size=size, cx=cx, cy=cy, radius=r)
    return out


def render_audio(pitch: str, rhythm: str, *, seconds: float = 1.0, rate: int = AUDIO_RATE,
                 detune: float = 0.0) -> np.ndarray:
    """float32 mono samples ``(round(seconds * rate),)`` in [-0.5, 0.5]: a sine at ``pitch`` (× ``1 + detune``),
    steady or gated on/off 4 times per second (``beeping``)."""
    n = int(round(seconds * rate))
    t = np.arange(n, dtype=np.float64) / rate
    wave = 0.5 * np.sin(2 * np.pi * PITCHES[pitch] * (1.0 + detune) * t)
    if rhythm == "beeping":
        wave *= (np.floor(t * 8) % 2 == 0)
    elif rhythm != "steady":
        raise ValueError(f"unknown rhythm {rhythm!r}; use one of {RHYTHMS}")
    return wave.astype(np.float32)


# ---------------------------------------------------------------------------------------------- writers
def _image_writer() -> Any:
    try:
        from nextgpt_image.media import ImageIO

        return lambda rgb, path: ImageIO().write(rgb, path)
    except ImportError:  # the image plugin is optional; PIL is a core dependency
        from PIL import Image

        def write(rgb: np.ndarray, path: Path) -> Path:
            Image.fromarray(rgb, "RGB").save(path, format="PNG")
            return path

        return write


def _video_writer() -> Any:
    try:
        from nextgpt_video.media import Video, VideoIO
    except ImportError as exc:
        raise _Skip(f"video skipped: the video plugin (nextgpt-video) is not installed ({exc})") from None
    io = VideoIO()
    return lambda frames, path: io.write(Video(frames=frames, fps=8.0), path)


def _audio_writer() -> Any:
    try:
        from nextgpt_audio.media import Audio, AudioIO
    except ImportError as exc:
        raise _Skip(f"audio skipped: the audio plugin (nextgpt-audio) is not installed ({exc})") from None
    io = AudioIO()
    return lambda samples, path: io.write(Audio(samples=samples, sample_rate=AUDIO_RATE), path)


class _Skip(Exception):
    pass


def make_synthetic_dataset(
    folder: str | os.PathLike[str],
    n_per_modality: int = 8,
    seed: int = 0,
    modalities: Iterable[str] = ("image", "video", "audio"),
    *,
    image_size: int = 64,
    video_size: int = 32,
    video_frames: int = 8,
    audio_seconds: float = 1.0,
    caption_prompt: str = "generate a caption",
) -> SyntheticDataset:
    """Write ``n_per_modality`` captioned media per modality under ``folder/media`` and the dataset files.

    Args:
        folder: output folder (created).
        n_per_modality: items per modality; attribute combinations cycle in a seeded order, so with ``n`` at least
            the number of combinations (image 24, video 48, audio 6) every caption occurs.
        seed: everything (attribute order, positions, sizes, detuning) derives from it.
        modalities: any of ``"image"``, ``"video"``, ``"audio"``; one whose plugin is missing is skipped and said in
            ``skipped`` (images fall back to PIL).

    Returns:
        :class:`SyntheticDataset` with the paths written.
    """
    root = Path(folder)
    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = SyntheticDataset(root=root, media=media, jsonl=root / "synthetic.jsonl")
    for modality in modalities:
        if modality not in XCAPTION_FILES:
            raise ValueError(f"unknown synthetic modality {modality!r}; use image, video or audio")
        # one child generator per modality, so skipping one does not change the others
        sub = np.random.default_rng(rng.integers(2**63))
        try:
            items = _MAKERS[modality](media, n_per_modality, sub, image_size=image_size, video_size=video_size,
                                      video_frames=video_frames, audio_seconds=audio_seconds)
        except _Skip as exc:
            out.skipped[modality] = str(exc)
            continue
        out.items[modality] = items
        name, key = XCAPTION_FILES[modality]
        rows = [{"caption": it.caption, "id": f"{modality}_{i}", key: it.path.name} for i, it in enumerate(items)]
        if modality == "audio":  # audiocap's fields
            rows = [{"audio_id": r["id"], "audio_name": r[key], "caption": r["caption"]} for r in rows]
        out.xcaption[modality] = root / name
        (root / name).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    with open(out.jsonl, "w", encoding="utf-8") as fh:
        for modality, items in out.items.items():
            for i, it in enumerate(items):
                rel = it.path.relative_to(media).as_posix()
                fh.write(json.dumps({"id": f"{modality}_{i}_caption", "turns": [
                    {"role": "user", "parts": [{"media": rel, "modality": modality}, {"text": caption_prompt}]},
                    {"role": "assistant", "parts": [{"text": it.caption}]}]}) + "\n")
                fh.write(json.dumps({"id": f"{modality}_{i}_generate", "turns": [
                    {"role": "user", "parts": [{"text": f"Show me {it.caption}."}]},
                    {"role": "assistant", "parts": [{"text": f"Here is {it.caption}."},
                                                    {"generate": modality, "caption": it.caption, "media": rel}]}]})
                         + "\n")
    return out


def _combos(rng: np.random.Generator, *axes: Iterable[str]) -> list[tuple[str, ...]]:
    grid = [()]  # type: list[tuple[str, ...]]
    for axis in axes:
        grid = [g + (a,) for g in grid for a in axis]
    order = rng.permutation(len(grid))
    return [grid[i] for i in order]


def _make_images(media: Path, n: int, rng: np.random.Generator, *, image_size: int, **_: Any) -> list[SyntheticItem]:
    write = _image_writer()
    combos = _combos(rng, SHAPES, COLOURS, BACKGROUNDS)
    items = []
    for i in range(n):
        shape, colour, background = combos[i % len(combos)]
        s = image_size
        radius = float(rng.uniform(0.2, 0.32) * s)
        cx, cy = (float(v) for v in rng.uniform(radius + 1, s - radius - 1, size=2))
        path = write(render_image(shape, colour, background, size=s, cx=cx, cy=cy, radius=radius), media / f"image_{i:04d}.png")
        items.append(SyntheticItem("image", image_caption(shape, colour, background), Path(path),
                                   {"shape": shape, "colour": colour, "background": background}))
    return items


def _make_videos(media: Path, n: int, rng: np.random.Generator, *, video_size: int, video_frames: int,
                 **_: Any) -> list[SyntheticItem]:
    write = _video_writer()
    combos = _combos(rng, SHAPES, COLOURS, DIRECTIONS)
    items = []
    for i in range(n):
        shape, colour, direction = combos[i % len(combos)]
        offset = float(rng.uniform(-0.15, 0.15) * video_size)
        frames = render_video(shape, colour, direction, size=video_size, frames=video_frames, offset=offset)
        path = write(frames, media / f"video_{i:04d}.mp4")
        items.append(SyntheticItem("video", video_caption(shape, colour, direction), Path(path),
                                   {"shape": shape, "colour": colour, "direction": direction}))
    return items


def _make_audios(media: Path, n: int, rng: np.random.Generator, *, audio_seconds: float, **_: Any) -> list[SyntheticItem]:
    write = _audio_writer()
    combos = _combos(rng, PITCHES, RHYTHMS)
    items = []
    for i in range(n):
        pitch, rhythm = combos[i % len(combos)]
        detune = float(rng.uniform(-0.03, 0.03))
        path = write(render_audio(pitch, rhythm, seconds=audio_seconds, detune=detune), media / f"audio_{i:04d}.wav")
        items.append(SyntheticItem("audio", audio_caption(pitch, rhythm), Path(path), {"pitch": pitch, "rhythm": rhythm}))
    return items


_MAKERS = {"image": _make_images, "video": _make_videos, "audio": _make_audios}
