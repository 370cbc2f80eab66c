"""The NExT-GPT paper's evaluation protocols on local data (``nextgpt eval --suite coco-caption`` and the rest).

Suites (:data:`SUITES`):

- ``coco-caption``, ``msrvtt-caption``, ``audiocaps-caption`` (media -> text): each test item with the captioning
  request (default ``"generate a caption"``, the official stage-1 instruction); the reply's text scored against the
  item's reference captions with BLEU-4, ROUGE-L, CIDEr (and METEOR, SPICE, SPIDEr where Java can run them).
- ``coco-t2i`` (text -> image): one request per COCO Karpathy test image, from its first caption; FID of the made
  images against the test images, and the CLIP score of each made image with its caption.
- ``msrvtt-t2v`` (text -> video): one request per MSR-VTT test video, from its first caption; frame FID (every
  made frame against as many evenly spaced frames of the test video) and CLIPSIM (the mean CLIP cosine of a made
  video's frames with its caption).
- ``audiocaps-t2a`` (text -> audio): one request per AudioCaps test clip, from its first caption; the Fréchet
  distance of the made clips' CLAP audio embeddings to the test clips', and the CLAP score of each with its caption.

The model answers through the public API (``NextGPT.generate``); input media go through the plugins' files
(``Media.from_path``) as a user's would; every sample has its own seed (:func:`~nextgpt_core.eval.toy.sample_seed`).
The made media are saved under ``<out>/media/``. Corpus metrics (BLEU, ROUGE, CIDEr, FID, FD) have no interval;
per-sample ones (CLIP score, CLIPSIM, CLAP score) a 95% bootstrap interval. Importing this module imports no torch.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["PAPER_NUMBERS", "PaperRun", "PaperSuite", "SUITES", "prepare_paper_suite", "run_paper_eval", "run_paper_suite"]


@dataclass(frozen=True)
class PaperSuite:
    """One protocol: its dataset, direction (``caption``: media -> text; ``generate``: text -> media), the
    modality, the metric networks it needs and its default request (a generation request holds ``{caption}``)."""

    name: str
    dataset: str
    direction: str
    modality: str
    metric_models: tuple[str, ...]
    prompt: str
    metrics: tuple[str, ...]


_CAPTION_METRICS = ("BLEU-4", "ROUGE-L", "CIDEr", "METEOR", "SPICE", "SPIDEr")

#: the paper suites, by ``--suite`` name
SUITES: dict[str, PaperSuite] = {
    "coco-caption": PaperSuite("coco-caption", "coco", "caption", "image", (), "generate a caption", _CAPTION_METRICS),
    "msrvtt-caption": PaperSuite("msrvtt-caption", "msrvtt", "caption", "video", (), "generate a caption", _CAPTION_METRICS),
    "audiocaps-caption": PaperSuite("audiocaps-caption", "audiocaps", "caption", "audio", (), "generate a caption",
                                    _CAPTION_METRICS),
    "coco-t2i": PaperSuite("coco-t2i", "coco", "generate", "image", ("inception", "clip"),
                           "Generate an image: {caption}", ("FID", "CLIP score")),
    "msrvtt-t2v": PaperSuite("msrvtt-t2v", "msrvtt", "generate", "video", ("inception", "clip"),
                             "Generate a video: {caption}", ("frame FID", "CLIPSIM")),
    "audiocaps-t2a": PaperSuite("audiocaps-t2a", "audiocaps", "generate", "audio", ("clap",),
                                "Generate a sound: {caption}", ("FD (CLAP)", "CLAP score")),
}

#: what the NExT-GPT paper reports per suite and metric, as far as this project could check (recalled from arXiv
#: v1, not verified against the PDF: docs/evaluation.md); ``None``: look it up in the table named in the docs
PAPER_NUMBERS: dict[str, dict[str, str]] = {
    "coco-caption": {"BLEU-4": "45.1 (x100)", "METEOR": "34.1 (x100)", "CIDEr": "158.3 (x100)"},
    "msrvtt-caption": {"BLEU-4": "58.4 (x100)", "METEOR": "38.5 (x100)"},
    "audiocaps-caption": {"SPIDEr": "0.521", "CIDEr": "0.802"},
    "coco-t2i": {"FID": "11.28"},
    "msrvtt-t2v": {"frame FID": "13.04", "CLIPSIM": "0.3085"},
    "audiocaps-t2a": {"FD (CLAP)": "23.58 (PANNs features, not CLAP: not comparable)"},
}

#: images are centre-cropped and resized to this side before the FID network
FID_IMAGE_SIZE = 299


@dataclass
class PaperRun:
    """A suite checked and ready to run (:func:`prepare_paper_suite`): the dataset, the drawn samples, the metric
    networks' paths, the request."""

    suite: PaperSuite
    dataset: Any
    samples: list[Any]
    metric_models: dict[str, Path]
    prompt: str
    limit: int | None
    seed: int
    fid_size: int = FID_IMAGE_SIZE
    inputs: list[Path] = field(default_factory=list)

    def protocol(self, composition: Any, checkpoint: Any) -> dict[str, Any]:
        """What results.json records as the protocol (the same protocol gives the same samples and seeds)."""
        out = {"suite": self.suite.name, "composition": str(composition), "checkpoint": str(checkpoint) if checkpoint else None,
               "data": str(self.dataset.root), "dataset": f"{self.dataset.name} {self.dataset.split}",
               "limit": self.limit, "seed": self.seed, "prompt": self.prompt,
               "metric_models": {k: str(v) for k, v in self.metric_models.items()},
               "selection": "limit samples drawn at random with the seed (all without --limit), in the split's order"}
        if "inception" in self.suite.metric_models:
            out["fid_images"] = f"centre square, resized to {self.fid_size} (bicubic), uint8"
        return out


def prepare_paper_suite(name: str, *, data: Path | None = None, metric_models: Mapping[str, Path] | None = None,
                        limit: int | None = None, seed: int = 0, prompt: str | None = None,
                        fid_size: int = FID_IMAGE_SIZE) -> PaperRun:
    """Check everything a paper suite needs before any model loads: the data folder (``data`` or the dataset's
    environment variable), the drawn samples' files, the metric networks' paths (``metric_models`` or their
    environment variables) and the request.

    Raises:
        ConfigError: an unknown suite, missing data or metric network (one line naming what to download and
            where to point it), or a generation request without ``{caption}``.
    """
    from ..errors import ConfigError
    from .metrics import resolve_metric_models
    from .paper_data import check_media, read_dataset, select_samples

    suite = SUITES.get(name)
    if suite is None:
        raise ConfigError(f"unknown paper suite {name!r}; available: {', '.join(SUITES)}")
    if limit is not None and limit < 1:
        raise ConfigError("--limit must be at least 1")
    prompt = prompt if prompt is not None else suite.prompt
    if suite.direction == "generate" and "{caption}" not in prompt:
        raise ConfigError(f"--prompt for --suite {name} must hold {{caption}} (where the test caption goes), e.g. {suite.prompt!r}")
    if suite.direction == "caption" and not prompt.strip():
        raise ConfigError("--prompt must not be empty")
    dataset = read_dataset(suite.dataset, data, suite=name)
    models = resolve_metric_models(dict(metric_models or {}), suite.metric_models, suite=name)
    samples = select_samples(dataset, limit, seed)
    check_media(dataset, samples)
    return PaperRun(suite, dataset, samples, models, prompt, limit, seed, fid_size,
                    inputs=[dataset.root, *models.values()])


# ---------------------------------------------------------------------------------------------- media as arrays
def _image(data: Any) -> np.ndarray:
    """A decoded image (PIL or array) -> uint8 ``(H, W, 3)``."""
    if hasattr(data, "convert"):
        data = data.convert("RGB")
    return np.asarray(data, dtype=np.uint8)


def _frames(data: Any) -> np.ndarray:
    """A decoded video (an object with ``frames``, or an array) -> uint8 ``(T, H, W, 3)``."""
    return np.asarray(getattr(data, "frames", data), dtype=np.uint8)


def _clip(data: Any) -> tuple[np.ndarray, int]:
    """A decoded audio clip -> ``(samples (n,) or (n, ch) float32, sample_rate)``."""
    return np.asarray(data.samples, dtype=np.float32), int(data.sample_rate)


def _even(frames: np.ndarray, count: int) -> np.ndarray:
    """``count`` evenly spaced frames of ``(T, H, W, 3)`` (all of them if there are fewer)."""
    if frames.shape[0] <= count:
        return frames
    return frames[np.linspace(0, frames.shape[0] - 1, count).round().astype(int)]


def _file_name(sample_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", sample_id)


def _metric_device(model: Any) -> Any:
    device = getattr(model, "device", None)
    return device if getattr(device, "type", "cpu") == "cuda" else "cpu"


# ---------------------------------------------------------------------------------------------- running
def run_paper_suite(run: PaperRun, composition: Any = "toy", *, checkpoint: Any = None, out: Path | None = None,
                    model: Any = None, registry: Any = None,
                    progress: Callable[[str, int, int, float], None] | None = None) -> dict[str, Any]:
    """Generate for every drawn sample through ``NextGPT.generate`` and score the outputs; returns the results
    (``metrics``, per-sample records under ``samples["model"]``, ``timings``, ``data``). The made media are saved
    under ``out/media`` when ``out`` is given. ``model``: an already built model (else built from
    ``composition`` / ``checkpoint`` / ``registry``). ``progress(variant, done, total, running)`` after each sample.

    Raises:
        ConfigError: the model has no input (captioning) or output (generation) of the suite's modality, or a
            metric network that does not load.
    """
    from ..conversation import Conversation, Media
    from ..errors import ConfigError
    from ..model import NextGPT
    from .toy import sample_seed

    suite = run.suite
    if model is None:
        model = NextGPT.from_composition(composition, checkpoint=checkpoint, registry=registry)
    have = model.input_modalities() if suite.direction == "caption" else model.output_modalities()
    if suite.modality not in have:
        side = "input" if suite.direction == "caption" else "output"
        raise ConfigError(f"--suite {suite.name} needs a composition with {suite.modality} as an {side}; "
                          f"{composition} has {', '.join(have) or 'none'}")
    scorer = _Scorer(run, model)
    media_dir = out / "media" if out is not None else None
    records: list[dict[str, Any]] = []
    generation = 0.0
    for i, sample in enumerate(run.samples):
        seed = sample_seed(sample.sample_id, run.seed)
        record: dict[str, Any] = {"id": sample.sample_id, "task": suite.name, "input": str(sample.media.relative_to(run.dataset.root))
                                  if sample.media.is_relative_to(run.dataset.root) else str(sample.media),
                                  "seed": seed}
        started = time.perf_counter()
        if suite.direction == "caption":
            conversation = Conversation().user(Media.from_path(sample.media, modality=suite.modality), run.prompt)
            reply = model.generate(conversation, seed=seed)
            generation += time.perf_counter() - started
            record.update(reply=reply.text, references=list(sample.references))
        else:
            caption = sample.references[0]
            reply = model.generate(run.prompt.format(caption=caption), want=[suite.modality], seed=seed)
            generation += time.perf_counter() - started
            made = next((m for m in reply.media if m.modality == suite.modality), None)
            record.update(caption=caption, reply=reply.text, output=None)
            if made is not None:
                if media_dir is not None:
                    spec = model.registry.modality(suite.modality)
                    path = media_dir / f"{_file_name(sample.sample_id)}{spec.output_extension or spec.extensions[0]}"
                    media_dir.mkdir(parents=True, exist_ok=True)
                    model.media_io(suite.modality).write(made.data, path)
                    record["output"] = str(path.relative_to(out))
                record.update(scorer.add(sample, caption, made.data))
        records.append(record)
        if progress:
            progress("model", i + 1, len(run.samples), scorer.running())
    started = time.perf_counter()
    if suite.direction == "caption":
        from .metrics import caption_metrics

        metrics = caption_metrics({r["id"]: r["reply"] for r in records}, {s.sample_id: s.references for s in run.samples})
    else:
        metrics = scorer.finish()
    missing = [r["id"] for r in records if suite.direction == "generate" and not r.get("made")]
    return {
        "suite": suite.name, "per_task": None, "seed": run.seed, "limit": run.limit, "tasks": {},
        "metrics": {k: metrics[k] for k in suite.metrics if k in metrics},
        "samples": {"model": records},
        "timings": {"model": round(generation, 1), "metrics": round(scorer.seconds + time.perf_counter() - started, 1)},
        "data": {"dataset": run.dataset.name, "split": run.dataset.split, "root": str(run.dataset.root),
                 "in_split": len(run.dataset.samples), "selected": len(run.samples),
                 "skipped_missing_media": list(run.dataset.skipped)},
        "no_output": missing,  # generation requests whose reply held no item of the modality (scored as absent)
        "paper": PAPER_NUMBERS.get(suite.name, {}),
        "metric_versions": _metric_versions(),
    }


class _Scorer:
    """The generation suites' metrics, fed one made item at a time (so no media is held): FID / FD features, CLIP
    and CLAP cosines."""

    def __init__(self, run: PaperRun, model: Any) -> None:
        self.run, self.model, self.seconds = run, model, 0.0
        self.per_sample: list[float] = []
        self.real: list[np.ndarray] = []
        self.fake: list[np.ndarray] = []
        started = time.perf_counter()
        device = _metric_device(model)
        names = run.suite.metric_models
        self.fid = self.clip = self.clap = None
        if "inception" in names:
            from .metrics import FIDAccumulator, load_feature_extractor

            self.fid = FIDAccumulator(load_feature_extractor(run.metric_models["inception"], size=run.fid_size),
                                      size=run.fid_size, device=device)
        if "clip" in names:
            from .metrics import ClipScorer

            self.clip = ClipScorer(run.metric_models["clip"], device=device)
        if "clap" in names:
            from .metrics import ClapScorer

            self.clap = ClapScorer(run.metric_models["clap"], device=device)
        self.seconds += time.perf_counter() - started

    def running(self) -> float:
        return float(np.mean(self.per_sample)) if self.per_sample else 0.0

    def add(self, sample: Any, caption: str, data: Any) -> dict[str, Any]:
        """Score one made item against its sample; returns what the sample's record keeps."""
        started = time.perf_counter()
        modality = self.run.suite.modality
        reference = self.model.media_io(modality).read(sample.media)
        out: dict[str, Any] = {"made": True}
        if modality == "image":
            image = _image(data)
            self.fid.add([image], real=False)
            self.fid.add([_image(reference)], real=True)
            cos = float(self.clip.cosines([image], [caption])[0])
            from .metrics import clip_score

            score = float(clip_score([cos])[0])
            out.update(clip_cosine=round(cos, 6), clip_score=round(score, 4))
        elif modality == "video":
            frames = _frames(data)
            self.fid.add(list(frames), real=False)
            self.fid.add(list(_even(_frames(reference), frames.shape[0])), real=True)
            cosines = self.clip.cosines(list(frames), [caption] * frames.shape[0])
            score = float(np.mean(cosines))
            out.update(frames=int(frames.shape[0]), clipsim=round(score, 6))
        else:
            from .metrics import clip_score

            made, ref = self.clap.audio_embeddings([_clip(data), _clip(reference)])
            text = self.clap.text_embeddings([caption])[0]
            self.fake.append(made.double().cpu().numpy())
            self.real.append(ref.double().cpu().numpy())
            cos = float((made * text).sum())
            score = float(clip_score([cos])[0])
            out.update(clap_cosine=round(cos, 6), clap_score=round(score, 4))
        self.per_sample.append(score)
        self.seconds += time.perf_counter() - started
        return out

    def finish(self) -> dict[str, Any]:
        from .metrics import frechet_distance, per_sample_metric

        started = time.perf_counter()
        suite, n = self.run.suite, len(self.per_sample)
        distance_name, sample_name = suite.metrics
        too_few = {"value": None, "kind": "corpus", "n": n, "not_run": "needs at least two made items"}
        if suite.modality in ("image", "video"):
            try:
                distance = {"value": self.fid.compute(), "kind": "corpus", "n": n,
                            "images": {"made": self.fid.counts[False], "reference": self.fid.counts[True]}}
            except ValueError:
                distance = too_few
        else:
            distance = ({"value": frechet_distance(np.stack(self.real), np.stack(self.fake)), "kind": "corpus", "n": n}
                        if n >= 2 else too_few)
        per_sample = (per_sample_metric(self.per_sample, seed=self.run.seed) if n else
                      {"value": None, "kind": "per-sample", "n": 0, "not_run": "no item was made"})
        self.seconds += time.perf_counter() - started
        return {distance_name: distance, sample_name: per_sample}


def _metric_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("pycocoevalcap", "torchmetrics", "scipy", "transformers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_paper_eval(name: str, out: Path, *, composition: Any = "toy", checkpoint: Any = None, data: Path | None = None,
                   metric_models: Mapping[str, Path] | None = None, limit: int | None = None, seed: int = 0,
                   prompt: str | None = None, model: Any = None, registry: Any = None,
                   progress: Callable[[str, int, int, float], None] | None = None,
                   prepared: PaperRun | None = None) -> dict[str, Any]:
    """Check, run and write a paper suite: ``out/results.json``, ``out/report.md`` and the made media under
    ``out/media`` (``out`` is written into as it is: the CLI gives a fresh folder). Returns the results.

    Raises:
        ConfigError: see :func:`prepare_paper_suite` and :func:`run_paper_suite`.
    """
    from .report import write_results

    run = prepared or prepare_paper_suite(name, data=data, metric_models=metric_models, limit=limit, seed=seed, prompt=prompt)
    results = run_paper_suite(run, composition, checkpoint=checkpoint, out=out, model=model, registry=registry,
                              progress=progress)
    write_results(results, out, protocol=run.protocol(composition, checkpoint), variants=["model"])
    return results


def format_metric(name: str, entry: Mapping[str, Any]) -> str:
    """One metric as the CLI prints it: ``"CIDEr: 0.1234 (n=2)"``, with its interval or why it was not run."""
    if entry.get("value") is None:
        return f"{name}: not run ({entry.get('not_run', '?')})"
    ci = entry.get("ci95")
    interval = f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
    return f"{name}: {entry['value']:.4g}{interval} (n={entry['n']})"
