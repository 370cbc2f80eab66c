"""Readers of the paper suites' local data: the COCO Karpathy test split, the MSR-VTT test split, the AudioCaps
test set. Nothing is downloaded; each reader checks the folder it is given and says, in one line, what is missing
and where to get it.

Layouts (docs/evaluation.md has them with the download steps):

- **COCO** (``NEXTGPT_EVAL_COCO``): ``dataset_coco.json`` (Karpathy's split: ``images[].split == "test"``, 5000
  images, each with ``cocoid``, ``filename`` and optionally ``filepath`` and ``sentences``),
  ``annotations/captions_val2014.json`` (the reference captions by ``image_id``; an image it lacks takes its
  Karpathy ``sentences``), and the images under ``val2014/`` (or ``<filepath>/`` as Karpathy's file names them).
- **MSR-VTT** (``NEXTGPT_EVAL_MSRVTT``): ``test_videodatainfo.json`` (the test release) or ``MSRVTT_data.json`` /
  ``videodatainfo.json`` (all splits; ``videos[].split == "test"`` is taken, 2990 videos), with ``sentences[]``
  of ``{video_id, caption}``; the videos as ``<video_id>.mp4`` in ``TestVideo/``, ``videos/all/`` or ``videos/``.
- **AudioCaps** (``NEXTGPT_EVAL_AUDIOCAPS``): ``test.csv`` (``audiocap_id,youtube_id,start_time,caption``;
  975 clips, 5 captions each) and the clips in ``test/``, ``wav/``, ``audio/test/`` or ``audio/`` named
  ``<youtube_id>.wav``, ``Y<youtube_id>.wav``, ``<youtube_id>_<start_time>.wav`` or ``<audiocap_id>.wav`` (or
  ``.flac``). Clips missing from the folder are skipped and listed (YouTube clips vanish; every copy of AudioCaps
  lacks some); a folder with none of them is an error.

Selection: :func:`select_samples` takes ``limit`` samples of a split at random with ``seed`` (the same seed and
limit give the same samples), in the split's order; their files are checked then (:func:`check_media`), so a
partial copy serves a ``--limit`` run of the files it has only if those are the ones drawn. Importing this module
imports no torch.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetSpec",
    "PaperSample",
    "check_media",
    "read_audiocaps_test",
    "read_coco_karpathy_test",
    "read_dataset",
    "read_msrvtt_test",
    "select_samples",
]


@dataclass(frozen=True)
class PaperSample:
    """One item of a split: its id (``"coco:391895"``), its media file and its reference captions (the first one
    is the prompt of the text -> media suites)."""

    sample_id: str
    media: Path
    references: tuple[str, ...]


@dataclass(frozen=True)
class Dataset:
    """A split read from a local folder: ``samples`` in the split's order, ``skipped`` the ids whose media file is
    absent (AudioCaps only; empty elsewhere)."""

    name: str
    split: str
    root: Path
    modality: str
    samples: tuple[PaperSample, ...]
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """How to find one dataset: its environment variable, what to download, the reader, its docs anchor."""

    key: str
    title: str
    env: str
    download: str
    anchor: str
    reader: Callable[[Path], Dataset]


def _fail(message: str) -> Exception:
    from ..errors import ConfigError

    return ConfigError(message)


def _json(root: Path, name: str, what: str, spec: "DatasetSpec") -> Any:
    path = root / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(f"{spec.title} data folder {root}: missing {name} ({what}; {spec.download}; "
                    f"layout in docs/evaluation.md#{spec.anchor})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(f"{path}: not a JSON file ({exc})".splitlines()[0]) from exc
    except OSError as exc:
        raise _fail(f"{path}: cannot read it ({exc.strerror or exc})") from exc


def _first_dir(root: Path, names: Sequence[str]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


# ---------------------------------------------------------------------------------------------- COCO
def read_coco_karpathy_test(root: Path) -> Dataset:
    """The COCO Karpathy test split (5000 val2014 images) with its reference captions.

    Raises:
        ConfigError: a missing or malformed ``dataset_coco.json`` / ``annotations/captions_val2014.json``, no
            ``val2014/`` folder, no test image, or a test image with no caption.
    """
    spec = DATASETS["coco"]
    karpathy = _json(root, "dataset_coco.json", "Karpathy's split of COCO", spec)
    annotations = _json(root, "annotations/captions_val2014.json", "the 2014 caption annotations", spec)
    if not isinstance(karpathy, dict) or not isinstance(karpathy.get("images"), list):
        raise _fail(f"{root / 'dataset_coco.json'}: no 'images' list (is it Karpathy's dataset_coco.json?)")
    if not isinstance(annotations, dict) or not isinstance(annotations.get("annotations"), list):
        raise _fail(f"{root / 'annotations' / 'captions_val2014.json'}: no 'annotations' list (is it the COCO captions file?)")
    captions: dict[int, list[str]] = {}
    for a in annotations["annotations"]:
        if isinstance(a, dict) and isinstance(a.get("caption"), str) and "image_id" in a:
            captions.setdefault(int(a["image_id"]), []).append(a["caption"].strip())
    images = _first_dir(root, ["val2014", "images/val2014"])
    if images is None:
        raise _fail(f"{spec.title} data folder {root}: missing val2014/ (the 2014 Val images; {spec.download}; "
                    f"layout in docs/evaluation.md#{spec.anchor})")
    samples = []
    for entry in karpathy["images"]:
        if not isinstance(entry, dict) or entry.get("split") != "test":
            continue
        name = str(entry.get("filename", ""))
        cocoid = entry.get("cocoid")
        if cocoid is None:
            digits = re.findall(r"(\d+)\.\w+$", name)
            cocoid = int(digits[0]) if digits else None
        if not name or cocoid is None:
            raise _fail(f"{root / 'dataset_coco.json'}: a test image without 'filename' or 'cocoid'")
        refs = captions.get(int(cocoid)) or [str(s.get("raw", "")).strip() for s in entry.get("sentences", [])
                                             if isinstance(s, dict) and s.get("raw")]
        if not refs:
            raise _fail(f"{spec.title}: test image {name} has no caption in annotations/captions_val2014.json nor in dataset_coco.json")
        where = root / str(entry["filepath"]) / name if entry.get("filepath") else images / name
        if not where.is_file() and (images / name).is_file():
            where = images / name
        samples.append(PaperSample(f"coco:{int(cocoid)}", where, tuple(refs)))
    if not samples:
        raise _fail(f"{root / 'dataset_coco.json'}: no image with split 'test' (is it Karpathy's dataset_coco.json?)")
    return Dataset("coco", "karpathy-test", root, "image", tuple(samples))


# ---------------------------------------------------------------------------------------------- MSR-VTT
_MSRVTT_JSON = ("test_videodatainfo.json", "MSRVTT_data.json", "videodatainfo.json")
_MSRVTT_VIDEOS = ("TestVideo", "videos/all", "videos", "test")
_VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv")


def read_msrvtt_test(root: Path) -> Dataset:
    """The MSR-VTT test split (2990 videos, 20 captions each) with its captions.

    Raises:
        ConfigError: no annotation file (one of :data:`_MSRVTT_JSON`), a malformed one, no video folder, no test
            video, or a test video with no caption.
    """
    spec = DATASETS["msrvtt"]
    found = next((root / n for n in _MSRVTT_JSON if (root / n).is_file()), None)
    if found is None:
        raise _fail(f"{spec.title} data folder {root}: missing test_videodatainfo.json (or MSRVTT_data.json / "
                    f"videodatainfo.json; {spec.download}; layout in docs/evaluation.md#{spec.anchor})")
    data = _json(root, found.name, "the MSR-VTT annotations", spec)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list) or not isinstance(data.get("sentences"), list):
        raise _fail(f"{found}: needs 'videos' and 'sentences' lists (the MSR-VTT videodatainfo format)")
    folder = _first_dir(root, _MSRVTT_VIDEOS)
    if folder is None:
        raise _fail(f"{spec.title} data folder {root}: missing the videos (TestVideo/, videos/all/ or videos/ holding "
                    f"<video_id>.mp4; {spec.download}; layout in docs/evaluation.md#{spec.anchor})")
    captions: dict[str, list[str]] = {}
    for s in data["sentences"]:
        if isinstance(s, dict) and isinstance(s.get("caption"), str) and "video_id" in s:
            captions.setdefault(str(s["video_id"]), []).append(s["caption"].strip())
    test_only = found.name == "test_videodatainfo.json"
    samples = []
    for v in data["videos"]:
        if not isinstance(v, dict) or "video_id" not in v or (v.get("split", "test") != "test" and not test_only):
            continue
        vid = str(v["video_id"])
        if not captions.get(vid):
            raise _fail(f"{found}: test video {vid} has no caption")
        path = next((folder / f"{vid}{s}" for s in _VIDEO_SUFFIXES if (folder / f"{vid}{s}").is_file()), folder / f"{vid}.mp4")
        samples.append(PaperSample(f"msrvtt:{vid}", path, tuple(captions[vid])))
    if not samples:
        raise _fail(f"{found}: no video with split 'test'")
    return Dataset("msrvtt", "test", root, "video", tuple(samples))


# ---------------------------------------------------------------------------------------------- AudioCaps
_AUDIOCAPS_AUDIO = ("test", "wav", "audio/test", "audio", "waveforms")
_AUDIO_SUFFIXES = (".wav", ".flac")


def read_audiocaps_test(root: Path) -> Dataset:
    """The AudioCaps test set (975 clips, 5 captions each), the clips found in the audio folder (the rest are
    ``skipped``).

    Raises:
        ConfigError: no ``test.csv`` or one without the AudioCaps columns, no audio folder, or none of the test
            clips in it.
    """
    spec = DATASETS["audiocaps"]
    table = root / "test.csv"
    if not table.is_file():
        raise _fail(f"{spec.title} data folder {root}: missing test.csv ({spec.download}; layout in docs/evaluation.md#{spec.anchor})")
    try:
        with table.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _fail(f"{table}: cannot read it as CSV ({exc})".splitlines()[0]) from exc
    columns = {"audiocap_id", "youtube_id", "start_time", "caption"}
    if not rows or not columns <= set(rows[0]):
        raise _fail(f"{table}: needs the columns {', '.join(sorted(columns))} (the AudioCaps test.csv)")
    folder = _first_dir(root, _AUDIOCAPS_AUDIO)
    if folder is None:
        raise _fail(f"{spec.title} data folder {root}: missing the audio folder (test/, wav/ or audio/ holding "
                    f"<youtube_id>.wav; {spec.download}; layout in docs/evaluation.md#{spec.anchor})")
    present = {p.name for p in folder.iterdir()}
    clips: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        clips.setdefault(r["youtube_id"].strip(), []).append(r)
    samples, skipped = [], []
    for yid, group in clips.items():
        start = group[0]["start_time"].strip()
        stems = [yid, f"Y{yid}", f"{yid}_{start}", *(g["audiocap_id"].strip() for g in group)]
        name = next((f"{s}{x}" for s in stems for x in _AUDIO_SUFFIXES if f"{s}{x}" in present), None)
        if name is None:
            skipped.append(f"audiocaps:{yid}")
            continue
        samples.append(PaperSample(f"audiocaps:{yid}", folder / name, tuple(g["caption"].strip() for g in group)))
    if not samples:
        raise _fail(f"{spec.title} data folder {root}: none of the {len(clips)} test clips of test.csv is in {folder} "
                    "(names: <youtube_id>.wav, Y<youtube_id>.wav, <youtube_id>_<start_time>.wav or <audiocap_id>.wav)")
    return Dataset("audiocaps", "test", root, "audio", tuple(samples), tuple(skipped))


#: the datasets of the paper suites, by key
DATASETS: dict[str, DatasetSpec] = {
    "coco": DatasetSpec("coco", "COCO", "NEXTGPT_EVAL_COCO",
                        "the 2014 Val images and 2014 Train/Val annotations from https://cocodataset.org/#download, "
                        "Karpathy's dataset_coco.json from https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip",
                        "coco", read_coco_karpathy_test),
    "msrvtt": DatasetSpec("msrvtt", "MSR-VTT", "NEXTGPT_EVAL_MSRVTT",
                          "the MSR-VTT test videos and test_videodatainfo.json from the dataset's release "
                          "(https://www.microsoft.com/en-us/research/publication/msr-vtt-a-large-video-description-dataset-for-bridging-video-and-language/)",
                          "msr-vtt", read_msrvtt_test),
    "audiocaps": DatasetSpec("audiocaps", "AudioCaps", "NEXTGPT_EVAL_AUDIOCAPS",
                             "test.csv from https://github.com/cdjkim/audiocaps (dataset/test.csv) and its clips cut "
                             "from YouTube as WAV",
                             "audiocaps", read_audiocaps_test),
}


def read_dataset(key: str, root: Path | None, *, suite: str) -> Dataset:
    """Read dataset ``key`` from ``root`` (``--data``), else from its environment variable.

    Raises:
        ConfigError: no folder given nor set, not a folder, or what the reader refuses.
    """
    spec = DATASETS[key]
    source = "--data"
    if root is None and os.environ.get(spec.env):
        root, source = Path(os.environ[spec.env]), spec.env
    if root is None:
        raise _fail(f"--suite {suite} needs a local copy of {spec.title}: download {spec.download}, then give --data DIR "
                    f"or set {spec.env} (layout in docs/evaluation.md#{spec.anchor})")
    root = Path(os.path.abspath(Path(root).expanduser()))  # results.json records where the data was
    if not root.is_dir():
        raise _fail(f"{source} {root}: no such folder (a local copy of {spec.title}; layout in docs/evaluation.md#{spec.anchor})")
    return spec.reader(root)


def select_samples(dataset: Dataset, limit: int | None, seed: int) -> list[PaperSample]:
    """``limit`` samples of the split drawn at random with ``seed`` (all if ``limit`` is ``None`` or larger),
    kept in the split's order."""
    samples = list(dataset.samples)
    if limit is None or limit >= len(samples):
        return samples
    picked = np.random.default_rng(seed).choice(len(samples), size=limit, replace=False)
    return [samples[i] for i in sorted(int(i) for i in picked)]


def check_media(dataset: Dataset, samples: Sequence[PaperSample]) -> None:
    """Every selected sample's media file exists.

    Raises:
        ConfigError: one line naming the first missing file and how many are missing.
    """
    missing = [s for s in samples if not s.media.is_file()]
    if missing:
        spec = DATASETS[dataset.name]
        raise _fail(f"{spec.title} data folder {dataset.root}: {len(missing)} of the {len(samples)} selected files are "
                    f"missing, first {missing[0].media} ({spec.download}; layout in docs/evaluation.md#{spec.anchor})")
