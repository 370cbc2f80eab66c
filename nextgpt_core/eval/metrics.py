"""The paper suites' metrics: captioning scores (pycocoevalcap), Fréchet distances, CLIP and CLAP scores, and a
bootstrap interval for the per-sample ones.

- :func:`caption_metrics`: BLEU-4, ROUGE-L and CIDEr(-D) with pycocoevalcap's pure-Python scorers on captions this
  module tokenises itself (:func:`tokenize_caption`: lower case, punctuation dropped, no Java); METEOR and SPICE
  only where ``java`` is on PATH (and, for SPICE, the Stanford CoreNLP jars are already in pycocoevalcap's
  ``spice/lib``: nothing is downloaded), otherwise the result says why they were not run.
- :func:`fid`: torchmetrics' ``FrechetInceptionDistance`` over a feature extractor loaded from a local TorchScript
  file (:func:`load_feature_extractor`; the Inception network of clean-fid / StyleGAN, ``inception-2015-12-05.pt``).
- :func:`frechet_distance`: the same distance between two sets of embeddings (the audio suite's FD).
- :class:`ClipScorer` and :class:`ClapScorer`: transformers ``CLIPModel`` / ``ClapModel`` from local folders;
  cosines of media and text embeddings. :func:`clip_score` is torchmetrics' convention, ``100 * max(cos, 0)``.
- :func:`bootstrap_ci`: the percentile bootstrap 95% interval of a mean.

The metric networks are named by :data:`METRIC_MODELS` and given as ``--metric-model NAME=PATH`` or an environment
variable (:func:`resolve_metric_models`); a missing one is one :class:`~nextgpt_core.errors.ConfigError` line
saying what to download and where to point it. Importing this module imports no torch.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "METRIC_MODELS",
    "ClapScorer",
    "ClipScorer",
    "FIDAccumulator",
    "MetricModel",
    "bootstrap_ci",
    "caption_metrics",
    "clip_score",
    "fid",
    "frechet_distance",
    "java_available",
    "load_feature_extractor",
    "parse_metric_models",
    "per_sample_metric",
    "prepare_images",
    "resample_audio",
    "resolve_metric_models",
    "tokenize_caption",
]


@dataclass(frozen=True)
class MetricModel:
    """A metric network the paper suites load from a local path: its option name, environment variable, what
    the path must be, and where to get it."""

    name: str
    env: str
    what: str
    download: str


#: the metric networks, by the NAME of ``--metric-model NAME=PATH``
METRIC_MODELS: dict[str, MetricModel] = {
    "inception": MetricModel(
        "inception", "NEXTGPT_EVAL_INCEPTION",
        "a TorchScript file of the FID Inception network (uint8 images (N, 3, H, W) -> (N, 2048) features)",
        "inception-2015-12-05.pt, the TorchScript file StyleGAN2-ADA, StyleGAN3 and clean-fid use "
        "(https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt)"),
    "clip": MetricModel(
        "clip", "NEXTGPT_EVAL_CLIP",
        "a transformers CLIPModel folder (config.json, weights, tokenizer, preprocessor_config.json)",
        "a local copy of openai/clip-vit-base-patch32 (huggingface-cli download openai/clip-vit-base-patch32 "
        "--local-dir DIR)"),
    "clap": MetricModel(
        "clap", "NEXTGPT_EVAL_CLAP",
        "a transformers ClapModel folder (config.json, weights, tokenizer, preprocessor_config.json)",
        "a local copy of laion/clap-htsat-unfused (huggingface-cli download laion/clap-htsat-unfused --local-dir DIR)"),
}

#: percentage of the bootstrap interval
_LEVEL = 0.95


# ---------------------------------------------------------------------------------------------- metric networks
def parse_metric_models(values: Sequence[str]) -> dict[str, Path]:
    """``["clip=/m/clip", ...]`` (the ``--metric-model`` options) -> ``{"clip": Path("/m/clip")}``.

    Raises:
        ConfigError: a value without ``=``, an unknown name, or a name given twice.
    """
    from ..errors import ConfigError

    out: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        name = name.strip().lower()
        if not sep or not path:
            raise ConfigError(f"--metric-model {value!r}: expected NAME=PATH, NAME one of {', '.join(METRIC_MODELS)}")
        if name not in METRIC_MODELS:
            raise ConfigError(f"--metric-model {value!r}: unknown name {name!r}; choose from {', '.join(METRIC_MODELS)}")
        if name in out:
            raise ConfigError(f"--metric-model {name} is given twice")
        out[name] = Path(path).expanduser()
    return out


def resolve_metric_models(given: Mapping[str, Path], needed: Sequence[str], *, suite: str) -> dict[str, Path]:
    """The local path of each metric network ``needed``: from ``given`` (``--metric-model``), else its
    environment variable. Checks that each path exists (a file for ``inception``, a folder with a
    ``config.json`` for ``clip`` / ``clap``); nothing is loaded here.

    Raises:
        ConfigError: one line naming the network, what to download and how to point at it.
    """
    from ..errors import ConfigError

    out: dict[str, Path] = {}
    for name in needed:
        spec = METRIC_MODELS[name]
        path = given.get(name)
        source = f"--metric-model {name}={path}"
        if path is None and os.environ.get(spec.env):
            path, source = Path(os.environ[spec.env]).expanduser(), f"{spec.env}={os.environ[spec.env]}"
        if path is None:
            raise ConfigError(f"--suite {suite} needs the {name} metric network, {spec.what}: download {spec.download}, "
                              f"then give --metric-model {name}=PATH or set {spec.env} (nextgpt never downloads weights)")
        if name == "inception":
            ok, wanted = path.is_file(), "no such file"
        else:
            ok, wanted = (path / "config.json").is_file(), ("no such folder" if not path.is_dir() else "no config.json in it")
        if not ok:
            raise ConfigError(f"{source}: {wanted}; the {name} metric network is {spec.what}: download {spec.download}")
        out[name] = Path(os.path.abspath(path))  # results.json records which network measured
    return out


# ---------------------------------------------------------------------------------------------- captioning
_WORD = re.compile(r"[a-z0-9]+|'[a-z]+")


def tokenize_caption(text: str) -> str:
    """A caption as the scorers compare it: lower case, words and clitics (``"man's"`` -> ``"man 's"``)
    separated by single spaces, punctuation and other symbols dropped (what the PTB tokenizer of the COCO
    toolkit does for plain English captions, without Java).

    >>> tokenize_caption("A man's dog, running -- FAST!")
    "a man 's dog running fast"
    """
    return " ".join(_WORD.findall(text.lower()))


def java_available() -> bool:
    """Whether a ``java`` executable is on PATH (METEOR and SPICE need one)."""
    return shutil.which("java") is not None


def _spice_jars_missing() -> list[str]:
    import pycocoevalcap.spice.spice as spice  # pycocoevalcap itself is a namespace package (no __file__)

    lib = Path(spice.__file__).parent / "lib"
    return [str(lib / j) for j in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
            if not (lib / j).is_file()]


def caption_metrics(candidates: Mapping[str, str], references: Mapping[str, Sequence[str]], *,
                    java: bool | None = None, spice: bool = True) -> dict[str, dict[str, Any]]:
    """Corpus captioning scores of ``candidates`` (``{id: caption}``) against ``references`` (``{id: [captions]}``,
    the same ids), every text through :func:`tokenize_caption` first.

    Returns ``{metric: {"value": float | None, "kind": "corpus", "n": int}}`` for ``BLEU-4``, ``ROUGE-L``,
    ``CIDEr`` (pycocoevalcap's CIDEr-D), ``METEOR``, ``SPICE`` and ``SPIDEr`` (the mean of SPICE and CIDEr); a
    metric that was not run has ``value`` ``None`` and ``not_run`` saying why. Values are on the toolkit's scale
    (BLEU 0..1, CIDEr 0..10; papers often print 100x). ``java``: whether to run the Java metrics (default: when
    ``java`` is on PATH); ``spice=False`` skips SPICE (it takes minutes to start).

    Raises:
        ConfigError: the ids of the candidates and references differ, an id has no reference, or pycocoevalcap
            is not installed.
    """
    from ..errors import ConfigError

    if set(candidates) != set(references):
        raise ConfigError("caption_metrics: the candidates and the references name different samples")
    if any(not list(refs) for refs in references.values()):
        raise ConfigError("caption_metrics: a sample has no reference caption")
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        raise ConfigError("the captioning suites need pycocoevalcap: pip install 'nextgpt-core[eval]'") from None
    ids = sorted(candidates)
    res = {i: [tokenize_caption(candidates[i])] for i in ids}
    gts = {i: [tokenize_caption(r) for r in references[i]] for i in ids}
    n = len(ids)
    out: dict[str, dict[str, Any]] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # the BLEU scorer prints its counts
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out["BLEU-4"] = {"value": float(bleu[3]), "kind": "corpus", "n": n}
    out["ROUGE-L"] = {"value": float(Rouge().compute_score(gts, res)[0]), "kind": "corpus", "n": n}
    out["CIDEr"] = {"value": float(Cider().compute_score(gts, res)[0]), "kind": "corpus", "n": n}
    java = java_available() if java is None else java
    if not java:
        for name in ("METEOR", "SPICE", "SPIDEr"):
            out[name] = {"value": None, "kind": "corpus", "n": n, "not_run": "java is not on PATH (METEOR and SPICE run in Java)"}
        return out
    try:
        from pycocoevalcap.meteor.meteor import Meteor

        meteor = Meteor()
        try:
            out["METEOR"] = {"value": float(meteor.compute_score(gts, res)[0]), "kind": "corpus", "n": n}
        finally:
            with contextlib.suppress(Exception):
                meteor.meteor_p.kill()
                meteor.meteor_p.wait()
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        out["METEOR"] = {"value": None, "kind": "corpus", "n": n, "not_run": f"the METEOR jar failed ({exc})".splitlines()[0]}
    missing = _spice_jars_missing()
    if not spice:
        out["SPICE"] = {"value": None, "kind": "corpus", "n": n, "not_run": "not asked for"}
    elif missing:
        out["SPICE"] = {"value": None, "kind": "corpus", "n": n, "not_run": (
            f"SPICE needs Stanford CoreNLP 3.6.0, absent: {', '.join(Path(m).name for m in missing)} in {Path(missing[0]).parent} "
            "(from https://nlp.stanford.edu/software/stanford-corenlp-full-2015-12-09.zip; nextgpt never downloads)")}
    else:
        try:
            from pycocoevalcap.spice.spice import Spice

            with contextlib.redirect_stdout(io.StringIO()):
                out["SPICE"] = {"value": float(Spice().compute_score(gts, res)[0]), "kind": "corpus", "n": n}
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            out["SPICE"] = {"value": None, "kind": "corpus", "n": n, "not_run": f"the SPICE jar failed ({exc})".splitlines()[0]}
    if out["SPICE"]["value"] is not None:
        out["SPIDEr"] = {"value": (out["SPICE"]["value"] + out["CIDEr"]["value"]) / 2, "kind": "corpus", "n": n}
    else:
        out["SPIDEr"] = {"value": None, "kind": "corpus", "n": n, "not_run": "needs SPICE"}
    return out


# ---------------------------------------------------------------------------------------------- intervals
def bootstrap_ci(values: Sequence[float], *, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """The percentile bootstrap 95% interval of the mean of ``values`` (``(n,)``), ``resamples`` resamplings
    drawn with ``seed``: ``(low, high)``; ``(v, v)`` for one value.

    Raises:
        ValueError: no values.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_ci of no values")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - _LEVEL) / 2, 1 - (1 - _LEVEL) / 2])
    return float(low), float(high)


def per_sample_metric(values: Sequence[float], *, seed: int) -> dict[str, Any]:
    """``{"value": mean, "ci95": [low, high], "kind": "per-sample", "n"}`` of per-sample scores ``(n,)``."""
    low, high = bootstrap_ci(values, seed=seed)
    return {"value": float(np.mean(values)), "ci95": [round(low, 6), round(high, 6)], "kind": "per-sample", "n": len(values)}


# ---------------------------------------------------------------------------------------------- Fréchet distances
def frechet_distance(a: Any, b: Any) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets ``a`` ``(N, D)`` and ``b`` ``(M, D)``
    (N, M >= 2): ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, unbiased covariances, float64 (the
    trace of the root from the eigenvalues of ``S_a S_b``, as torchmetrics computes it).

    Raises:
        ValueError: fewer than two rows in a set, or different widths.
    """
    import torch

    x = torch.as_tensor(np.asarray(a), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"frechet_distance needs (N, D) and (M, D) features, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("frechet_distance needs at least two samples in each set")
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = torch.cov(x.T).reshape(x.shape[1], -1), torch.cov(y.T).reshape(y.shape[1], -1)
    root = torch.linalg.eigvals(cov_x @ cov_y).sqrt().real.sum()
    return float((mu_x - mu_y).square().sum() + cov_x.trace() + cov_y.trace() - 2 * root)


def load_feature_extractor(path: Path, *, size: int = 299) -> Any:
    """The FID feature network from a TorchScript file, as an ``nn.Module`` that maps uint8 images
    ``(N, 3, size, size)`` to float ``(N, D)`` features and has ``num_features`` (``D``, found by running a black
    image through it). A network whose ``forward`` takes ``return_features`` (the clean-fid / StyleGAN Inception)
    is called with ``return_features=True``.

    Raises:
        ConfigError: the file is not a TorchScript module, or it does not map an image batch to ``(N, D)``.
    """
    import torch

    from ..errors import ConfigError

    try:
        net = torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, ValueError, OSError) as exc:
        raise ConfigError(f"inception metric network {path}: not a TorchScript file ({str(exc).splitlines()[0]})") from exc
    schema = str(getattr(getattr(net, "forward", None), "schema", ""))

    class _Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.keyword = "return_features" in schema

        def forward(self, images: Any) -> Any:
            out = self.net(images, return_features=True) if self.keyword else self.net(images)
            return out.reshape(out.shape[0], -1).float()

    module = _Features().eval()
    try:
        with torch.no_grad():
            probe = module(torch.zeros(2, 3, size, size, dtype=torch.uint8))
    except RuntimeError as exc:
        raise ConfigError(f"inception metric network {path}: fails on a (2, 3, {size}, {size}) uint8 batch "
                          f"({str(exc).splitlines()[0]})") from exc
    if probe.shape[0] != 2:
        raise ConfigError(f"inception metric network {path}: gives {tuple(probe.shape)} for 2 images, not (2, D)")
    module.num_features = int(probe.shape[1])
    return module


def prepare_images(images: Sequence[Any], size: int = 299) -> Any:
    """Images (each uint8 ``(H, W, 3)`` or a PIL image) -> a uint8 tensor ``(N, 3, size, size)``: the centre square
    of each, resized to ``size`` (bicubic), as every FID image of the suites is prepared."""
    import torch
    from PIL import Image

    out = []
    for image in images:
        pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
        pil = pil.convert("RGB")
        side = min(pil.size)
        left, top = (pil.width - side) // 2, (pil.height - side) // 2
        pil = pil.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy()).permute(2, 0, 1))
    return torch.stack(out) if out else torch.zeros(0, 3, size, size, dtype=torch.uint8)


class FIDAccumulator:
    """torchmetrics' ``FrechetInceptionDistance`` over a feature network (:func:`load_feature_extractor`): add
    real and generated images as they come (:meth:`add`), read the distance at the end (:meth:`compute`)."""

    def __init__(self, extractor: Any, *, size: int = 299, device: Any = "cpu") -> None:
        from ..errors import ConfigError

        try:
            from torchmetrics.image.fid import FrechetInceptionDistance
        except ImportError:
            raise ConfigError("FID needs torchmetrics: pip install 'nextgpt-core[eval]'") from None
        self.size, self.device = size, device
        self.metric = FrechetInceptionDistance(feature=extractor, normalize=False).to(device)
        self.counts = {True: 0, False: 0}

    def add(self, images: Sequence[Any], *, real: bool) -> None:
        """Images (uint8 ``(H, W, 3)`` arrays or PIL images) of the reference set (``real``) or the generated one."""
        import torch

        if not len(images):
            return
        with torch.no_grad():
            self.metric.update(prepare_images(images, self.size).to(self.device), real=real)
        self.counts[real] += len(images)

    def compute(self) -> float:
        """The FID of the generated images against the reference ones (each set needs at least two)."""
        if min(self.counts.values()) < 2:
            raise ValueError(f"FID needs at least two images in each set, got {self.counts[True]} real and {self.counts[False]} generated")
        return float(self.metric.compute())


def fid(real: Sequence[Any], fake: Sequence[Any], extractor: Any, *, size: int = 299) -> float:
    """The FID of images ``fake`` against ``real`` (each a sequence of uint8 ``(H, W, 3)`` arrays or PIL images,
    at least two) with the feature network ``extractor`` (:func:`load_feature_extractor`, or any ``nn.Module``
    mapping uint8 ``(N, 3, size, size)`` to ``(N, D)``), through torchmetrics' ``FrechetInceptionDistance``."""
    acc = FIDAccumulator(extractor, size=size)
    acc.add(list(real), real=True)
    acc.add(list(fake), real=False)
    return acc.compute()


# ---------------------------------------------------------------------------------------------- CLIP and CLAP
def clip_score(cosines: Any) -> Any:
    """torchmetrics' CLIP score of cosine similarities ``(N,)``: ``100 * max(cos, 0)``, per sample."""
    return 100.0 * np.maximum(np.asarray(cosines, dtype=np.float64), 0.0)


def _pooled(out: Any) -> Any:
    """transformers 5 returns a model output whose ``pooler_output`` is the projected embedding; 4.x a tensor."""
    return out if hasattr(out, "ndim") else out.pooler_output


def _normalised(x: Any) -> Any:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _load_hf(folder: Path, name: str, model_class: Any) -> Any:
    from ..errors import ConfigError
    from ..hf_loading import quiet_transformers

    try:
        with quiet_transformers():
            return model_class.from_pretrained(str(folder), local_files_only=True).eval()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{name} metric network {folder}: cannot load it as a {model_class.__name__} "
                          f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc


def _load_processor(folder: Path, cls: Any) -> Any:
    from ..errors import ConfigError
    from ..hf_loading import quiet_transformers

    try:
        with quiet_transformers():
            return cls.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"metric network {folder}: no usable {cls.__name__} files "
                          f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc


class _TextTower:
    """The text side both contrastive scorers share: ``model.get_text_features`` on tokenised texts.
    Subclasses set ``model``, ``tokenizer``, ``max_length`` and ``device``."""

    model: Any
    tokenizer: Any
    max_length: int
    device: Any

    def text_embeddings(self, texts: Sequence[str]) -> Any:
        """Texts (cut to the model's context, e.g. 77 tokens for CLIP) -> L2-normalised float ``(N, D)`` tensor."""
        import torch

        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.no_grad():
            out = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                               attention_mask=tokens["attention_mask"].to(self.device))
        return _normalised(_pooled(out).float())


class ClipScorer(_TextTower):
    """A transformers ``CLIPModel`` from a local folder (with its tokenizer and image processor): the cosine of
    image and text embeddings. Runs on ``device``."""

    def __init__(self, folder: Path, *, device: Any = "cpu") -> None:
        import transformers
        from transformers import AutoTokenizer, CLIPModel

        # the PIL image processor where transformers has one (the default one wants torchvision)
        image_processor = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
        self.device = device
        self.model = _load_hf(folder, "clip", CLIPModel).to(device)
        self.tokenizer = _load_processor(folder, AutoTokenizer)
        self.processor = _load_processor(folder, image_processor)
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    def image_embeddings(self, images: Sequence[Any]) -> Any:
        """Images (uint8 ``(H, W, 3)`` or PIL) -> L2-normalised float ``(N, D)`` tensor."""
        import torch

        pixels = self.processor(images=[np.asarray(i, dtype=np.uint8) for i in images], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            return _normalised(_pooled(self.model.get_image_features(pixel_values=pixels.to(self.device))).float())

    def cosines(self, images: Sequence[Any], texts: Sequence[str]) -> Any:
        """Cosine of image ``i`` and text ``i``: float64 array ``(N,)``."""
        pairs = (self.image_embeddings(images) * self.text_embeddings(texts)).sum(-1)
        return pairs.double().cpu().numpy()


def resample_audio(samples: Any, rate: int, target: int) -> Any:
    """Mono float32 ``(n,)`` at ``target`` Hz from samples ``(n,)`` or ``(n, channels)`` at ``rate`` (channels
    averaged; polyphase resampling, scipy)."""
    from math import gcd

    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if rate == target:
        return x
    from scipy.signal import resample_poly

    g = gcd(int(rate), int(target))
    return resample_poly(x, int(target) // g, int(rate) // g).astype(np.float32)


class ClapScorer(_TextTower):
    """A transformers ``ClapModel`` from a local folder (with its tokenizer and feature extractor): audio and text
    embeddings and their cosines. Audio is made mono, resampled to the extractor's rate and cut to its first
    ``max_length_s`` seconds (so no random crop: the same clip gives the same embedding)."""

    def __init__(self, folder: Path, *, device: Any = "cpu") -> None:
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        self.device = device
        self.model = _load_hf(folder, "clap", ClapModel).to(device)
        self.tokenizer = _load_processor(folder, AutoTokenizer)
        self.extractor = _load_processor(folder, ClapFeatureExtractor)
        self.max_length = int(self.model.config.text_config.max_position_embeddings) - 2  # RoBERTa's position offset

    def audio_embeddings(self, clips: Sequence[tuple[Any, int]]) -> Any:
        """``[(samples (n,) or (n, ch), sample_rate), ...]`` -> L2-normalised float ``(N, D)`` tensor."""
        import torch

        rate = int(self.extractor.sampling_rate)
        longest = int(self.extractor.nb_max_samples)
        waves = [resample_audio(s, r, rate)[:longest] for s, r in clips]
        fusion = bool(getattr(self.model.config.audio_config, "enable_fusion", False))
        # clips are cut to the extractor's length already: "rand_trunc" only pads (no random crop)
        feats = self.extractor(waves, sampling_rate=rate, return_tensors="pt", truncation="fusion" if fusion else "rand_trunc")
        kwargs = {"input_features": feats["input_features"].to(self.device)}
        if fusion:
            kwargs["is_longer"] = feats["is_longer"].to(self.device)
        with torch.no_grad():
            return _normalised(_pooled(self.model.get_audio_features(**kwargs)).float())

    def cosines(self, clips: Sequence[tuple[Any, int]], texts: Sequence[str]) -> Any:
        """Cosine of clip ``i`` and text ``i``: float64 array ``(N,)``."""
        pairs = (self.audio_embeddings(clips) * self.text_embeddings(texts)).sum(-1)
        return pairs.double().cpu().numpy()
