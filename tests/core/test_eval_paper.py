"""The paper suites of `nextgpt eval` (coco-caption, msrvtt-caption, audiocaps-caption, coco-t2i, msrvtt-t2v,
audiocaps-t2a): the metrics against hand computations, and each suite end to end on a tiny fake copy of its
dataset written here in the documented layout, on the `tiny` composition with the real image/video/audio plugins.
Metric networks are tiny random ones saved to tmp folders and loaded back from there; nothing is downloaded.
The metric packages (pycocoevalcap, torchmetrics, scipy: the `eval` extra) are imported, not skipped when absent.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nextgpt_core.errors import ConfigError
from nextgpt_core.eval import metrics as M
from nextgpt_core.eval.paper import SUITES, prepare_paper_suite, run_paper_eval

REAL = ["image", "video", "audio"]


# ---------------------------------------------------------------------------------------------- tiny metric networks
class _TinyFeatures(torch.nn.Module):
    """uint8 (N, 3, H, W) -> (N, 12): a random conv, ReLU, 2x2 average pool."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 5, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x.float() / 255.0))
        return torch.nn.functional.adaptive_avg_pool2d(y, 2).flatten(1)


class _TinyInceptionLike(torch.nn.Module):
    """The clean-fid / StyleGAN Inception's call: ``forward(x, return_features=...)``."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = _TinyFeatures()

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        y = self.inner(x)
        return y if return_features else y[:, :1]


def _tiny_tokenizer():
    from nextgpt_core.tiny_clip import tiny_clip_text_parts

    return tiny_clip_text_parts(8)[1]


@pytest.fixture(scope="module")
def metric_models(tmp_path_factory):
    """A TorchScript feature network, a CLIPModel folder and a ClapModel folder, tiny and random, saved to disk."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, ClapConfig, ClapFeatureExtractor, ClapModel

    root = tmp_path_factory.mktemp("metric-models")
    import warnings

    with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit.script; the real FID network is TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_TinyFeatures()).save(str(root / "features.pt"))
        torch.jit.script(_TinyInceptionLike()).save(str(root / "inception-like.pt"))
    tok = _tiny_tokenizer()
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=77, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                           patch_size=8),
        projection_dim=8))
    clip.save_pretrained(root / "clip")
    tok.save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    clap = ClapModel(ClapConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
                         vocab_size=len(tok), max_position_embeddings=16 + 2, projection_dim=8),
        audio_config=dict(window_size=4, spec_size=64, num_mel_bins=16, patch_embeds_hidden_size=8, depths=(1, 1),
                          num_attention_heads=(2, 2), hidden_size=16, num_hidden_layers=2, projection_dim=8),
        projection_dim=8))
    clap.save_pretrained(root / "clap")
    tok.save_pretrained(root / "clap")
    ClapFeatureExtractor(feature_size=16, sampling_rate=16000, max_length_s=1, fft_window_size=256, hop_length=80,
                         truncation="rand_trunc").save_pretrained(root / "clap")
    return {"inception": root / "features.pt", "inception-like": root / "inception-like.pt", "clip": root / "clip",
            "clap": root / "clap"}


# ---------------------------------------------------------------------------------------------- captioning metrics
def test_tokenisation_is_lower_case_words_without_punctuation():
    import doctest

    assert doctest.testmod(M).failed == 0
    assert M.tokenize_caption("A man's dog, running -- FAST!") == "a man 's dog running fast"
    assert M.tokenize_caption("\x00\x11 ??") == ""


def test_identical_captions_score_one_and_rouge_l_matches_its_formula():
    refs = {"a": ["A cat sits on a mat."], "b": ["Two dogs run in the park"]}
    same = M.caption_metrics({"a": "a cat sits on a mat", "b": "two dogs run in the park!"}, refs, java=False)
    assert same["BLEU-4"]["value"] == pytest.approx(1.0, abs=1e-6)
    assert same["ROUGE-L"]["value"] == pytest.approx(1.0)
    # ROUGE-L by hand: candidate "a cat on a mat" vs "a cat sits on a mat": LCS 5, P = 5/5, R = 5/6, beta = 1.2
    p, r, beta = 1.0, 5 / 6, 1.2
    f = (1 + beta**2) * p * r / (r + beta**2 * p)
    got = M.caption_metrics({"a": "a cat on a mat"}, {"a": ["a cat sits on a mat"]}, java=False)
    assert got["ROUGE-L"]["value"] == pytest.approx(f, abs=1e-9)
    assert got["BLEU-4"]["kind"] == "corpus" and "ci95" not in got["BLEU-4"]


def _cider_d(candidates: dict[str, str], references: dict[str, list[str]], sigma: float = 6.0) -> float:
    """CIDEr-D from its definition (Vedantam et al. 2015, as the COCO toolkit computes it): per n = 1..4, TF-IDF
    vectors (document frequency over the images' reference sets, log(N_images) - log(df)), the clipped dot product
    divided by both norms, times a Gaussian length penalty exp(-(len_c - len_r)^2 / (2 sigma^2)), averaged over the
    references; the mean over n times 10, averaged over the images."""
    from collections import Counter

    def grams(text: str, n: int) -> Counter:
        words = text.split()
        return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))

    ids = sorted(candidates)
    scores = []
    for i in ids:
        per_n = []
        for n in range(1, 5):
            df = Counter(g for j in ids for g in set().union(*(grams(r, n) for r in references[j])))
            idf = {g: math.log(len(ids)) - math.log(max(1.0, df[g])) for g in df}

            def vec(text: str, n: int = n, idf: dict = idf) -> dict:
                # raw n-gram counts times the idf (an n-gram no reference has: df 0 -> log N)
                return {g: k * idf.get(g, math.log(len(ids))) for g, k in grams(text, n).items()}

            vc = vec(candidates[i])
            norm_c = math.sqrt(sum(v * v for v in vc.values()))
            total = 0.0
            for r in references[i]:
                vr = vec(r)
                norm_r = math.sqrt(sum(v * v for v in vr.values()))
                dot = sum(min(vc[g], vr[g]) * vr[g] for g in vc if g in vr)
                delta = len(candidates[i].split()) - len(r.split())
                value = dot / (norm_c * norm_r) if norm_c and norm_r else 0.0
                total += value * math.exp(-(delta**2) / (2 * sigma**2))
            per_n.append(total / len(references[i]))
        scores.append(10 * sum(per_n) / 4)
    return sum(scores) / len(scores)


def test_cider_equals_its_formula_computed_here():
    refs = {"a": ["a cat sits on a mat", "a cat on the mat"], "b": ["a dog runs in the park"],
            "c": ["two birds sit on a wire", "birds on a wire"]}
    cands = {"a": "a cat on a mat", "b": "a dog runs in the park", "c": "a bird on the wire"}
    got = M.caption_metrics(cands, refs, java=False)["CIDEr"]["value"]
    assert got == pytest.approx(_cider_d(cands, refs), rel=1e-9)
    # an identical candidate whose n-grams no other image has: every idf is log 2, the vectors are equal -> 10
    two = {"a": ["a cat sits on a mat"], "b": ["dogs run in parks"]}
    assert M.caption_metrics({"a": "x y", "b": "dogs run in parks"}, two, java=False)["CIDEr"]["value"] == pytest.approx(5.0)


def test_meteor_and_spice_are_reported_as_not_run_without_java(monkeypatch):
    """Without java on PATH the Java metrics are named as not run, with the reason. (With Java, METEOR runs on
    pycocoevalcap's bundled jar: about 20 s of JVM start-up, too slow for this suite; see the report.)"""
    monkeypatch.setattr(M.shutil, "which", lambda name: None)
    got = M.caption_metrics({"a": "a cat sits on a mat"}, {"a": ["a cat sits on a mat"]})
    for name in ("METEOR", "SPICE", "SPIDEr"):
        assert got[name]["value"] is None and "java is not on PATH" in got[name]["not_run"]


def test_caption_metrics_refuse_mismatched_ids():
    with pytest.raises(ConfigError, match="different samples"):
        M.caption_metrics({"a": "x"}, {"b": ["x"]}, java=False)


# ---------------------------------------------------------------------------------------------- Fréchet distances
def _closed_form(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.linalg import sqrtm

    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root))


def test_frechet_distance_is_the_closed_form_of_two_gaussians():
    rng = np.random.default_rng(0)
    d = 4
    mu1, mu2 = np.zeros(d), np.array([1.0, -2.0, 0.5, 0.0])
    s1 = np.diag([1.0, 2.0, 0.5, 1.5])
    q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    s2 = q @ np.diag([0.3, 1.0, 2.0, 0.7]) @ q.T
    a = rng.multivariate_normal(mu1, s1, size=4000)
    b = rng.multivariate_normal(mu2, s2, size=4000)
    assert M.frechet_distance(a, b) == pytest.approx(_closed_form(a, b), rel=1e-7)  # the sample Gaussians, exactly
    from scipy.linalg import sqrtm

    population = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real))
    assert M.frechet_distance(a, b) == pytest.approx(population, rel=0.05)  # and near the population's
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="two samples"):
        M.frechet_distance(a[:1], b)


def _images(seed: int, n: int, shift: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(rng.integers(0, 200, (24 + i % 3, 30, 3)) + shift, 0, 255).astype(np.uint8) for i in range(n)]


def test_fid_through_torchmetrics_is_zero_on_itself_and_the_closed_form_otherwise(metric_models):
    extractor = M.load_feature_extractor(metric_models["inception"], size=32)
    assert extractor.num_features == 12
    real, fake = _images(0, 40), _images(1, 40, shift=40)
    assert M.fid(real, real, extractor, size=32) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        fa = extractor(M.prepare_images(real, 32)).double().numpy()
        fb = extractor(M.prepare_images(fake, 32)).double().numpy()
    assert M.fid(real, fake, extractor, size=32) == pytest.approx(_closed_form(fa, fb), rel=1e-5)
    assert M.fid(real, fake, extractor, size=32) == pytest.approx(M.frechet_distance(fa, fb), rel=1e-6)
    # the clean-fid / StyleGAN network is called with return_features=True
    like = M.load_feature_extractor(metric_models["inception-like"], size=32)
    assert like.num_features == 12 and like.keyword


def test_a_file_that_is_not_torchscript_is_one_error(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a TorchScript file") as caught:
        M.load_feature_extractor(tmp_path / "bad.pt")
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------------------------------------- CLIP / CLAP / bootstrap
def test_clip_score_is_100_times_the_clipped_cosine_computed_by_hand(metric_models):
    from transformers import CLIPImageProcessor, CLIPModel

    scorer = M.ClipScorer(metric_models["clip"])
    images = _images(3, 4)
    texts = ["a cat", "the dog and the cat", "of", "a red square on a white background"]
    got = M.clip_score(scorer.cosines(images, texts))
    model = CLIPModel.from_pretrained(metric_models["clip"]).eval()
    tok = _tiny_tokenizer()
    pixels = CLIPImageProcessor.from_pretrained(metric_models["clip"])(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        img = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        ids = tok(texts, padding=True, return_tensors="pt")
        txt = model.text_projection(model.text_model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).pooler_output)
    cos = torch.nn.functional.cosine_similarity(img, txt).double().numpy()
    assert got == pytest.approx(100 * np.maximum(cos, 0), abs=1e-4)
    assert M.clip_score([-0.2, 0.3]).tolist() == pytest.approx([0.0, 30.0])


def test_clap_cosines_match_the_model_and_the_audio_is_cut_deterministically(metric_models):
    scorer = M.ClapScorer(metric_models["clap"])
    tone = (np.sin(np.arange(24000) / 7.0) * 0.5).astype(np.float32)
    a = scorer.audio_embeddings([(tone, 16000), (tone[::2].copy(), 8000)])
    b = scorer.audio_embeddings([(tone, 16000)])
    assert a.shape == (2, 8) and torch.allclose(a[0], b[0])  # the same clip, the same embedding (no random crop)
    assert torch.allclose(a.norm(dim=-1), torch.ones(2), atol=1e-5)
    cos = scorer.cosines([(tone, 16000)], ["a dog barks"])
    assert cos[0] == pytest.approx(float((b[0] * scorer.text_embeddings(["a dog barks"])[0]).sum()), abs=1e-6)


def test_bootstrap_interval_brackets_the_mean_and_is_seeded():
    values = np.random.default_rng(0).normal(5, 1, size=200)
    low, high = M.bootstrap_ci(values, seed=1)
    assert low < values.mean() < high and high - low == pytest.approx(2 * 1.96 / math.sqrt(200), rel=0.2)
    assert M.bootstrap_ci(values, seed=1) == (low, high)
    assert M.bootstrap_ci([3.0, 3.0], seed=0) == (3.0, 3.0)


# ---------------------------------------------------------------------------------------------- fake datasets
def _write_coco(root: Path, n: int = 3) -> Path:
    from PIL import Image

    (root / "val2014").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, annotations = [], []
    for i in range(1, n + 2):
        name = f"COCO_val2014_{i:012d}.jpg"
        split = "train" if i == n + 1 else "test"
        Image.fromarray(_images(i, 1)[0]).resize((40, 30)).save(root / "val2014" / name)
        images.append({"filepath": "val2014", "filename": name, "cocoid": i, "split": split,
                       "sentences": [{"raw": f"karpathy caption {i}"}]})
        annotations += [{"image_id": i, "id": 10 * i + k, "caption": f"A picture number {i}, take {k}."} for k in range(2)]
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps({"annotations": annotations, "images": []}))
    return root


def _write_msrvtt(root: Path, model, n: int = 3) -> Path:
    (root / "TestVideo").mkdir(parents=True)
    io = model.media_io("video")
    example = io.example()
    videos, sentences = [], []
    for i in range(n):
        vid = f"video{7010 + i}"
        example.frames = example.frames[: 4 + i]
        io.write(example, root / "TestVideo" / f"{vid}.mp4")
        videos.append({"video_id": vid, "split": "test", "id": i})
        sentences += [{"video_id": vid, "caption": f"a square slides right {k}", "sen_id": 20 * i + k} for k in range(3)]
    (root / "test_videodatainfo.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    return root


def _write_audiocaps(root: Path, model, n: int = 3) -> Path:
    (root / "test").mkdir(parents=True)
    io = model.media_io("audio")
    rows = []
    for i in range(n + 1):
        yid = f"yt{i:03d}"
        if i < n:  # the last clip is "gone from YouTube": skipped and listed
            io.write(io.example(), root / "test" / (f"{yid}.wav" if i % 2 else f"Y{yid}.wav"))
        rows += [{"audiocap_id": str(100 * i + k), "youtube_id": yid, "start_time": "30", "caption": f"a tone {i} {k}"}
                 for k in range(2)]
    with (root / "test.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["audiocap_id", "youtube_id", "start_time", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def real_model():
    from nextgpt_registry import Registry

    from nextgpt_core import NextGPT
    from nextgpt_core.plugins import DEFAULT_PLUGINS

    return NextGPT.from_composition("tiny", registry=Registry.load(DEFAULT_PLUGINS, allow=REAL))


@pytest.fixture(scope="module")
def datasets(real_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("paper-data")
    return {"coco": _write_coco(root / "coco"), "msrvtt": _write_msrvtt(root / "msrvtt", real_model),
            "audiocaps": _write_audiocaps(root / "audiocaps", real_model)}


def test_readers_take_the_test_split_and_its_references(datasets):
    from nextgpt_core.eval.paper_data import read_dataset, select_samples

    coco = read_dataset("coco", datasets["coco"], suite="coco-caption")
    assert [s.sample_id for s in coco.samples] == ["coco:1", "coco:2", "coco:3"]  # the train image is not in it
    assert coco.samples[0].references == ("A picture number 1, take 0.", "A picture number 1, take 1.")
    msrvtt = read_dataset("msrvtt", datasets["msrvtt"], suite="msrvtt-t2v")
    assert len(msrvtt.samples) == 3 and len(msrvtt.samples[0].references) == 3
    audio = read_dataset("audiocaps", datasets["audiocaps"], suite="audiocaps-t2a")
    assert [s.media.name for s in audio.samples] == ["Yyt000.wav", "yt001.wav", "Yyt002.wav"]
    assert audio.skipped == ("audiocaps:yt003",)
    picked = select_samples(coco, 2, seed=5)
    assert picked == select_samples(coco, 2, seed=5) and len(picked) == 2
    assert [s.sample_id for s in picked] == sorted(s.sample_id for s in picked)


@pytest.mark.parametrize("name", list(SUITES))
def test_each_suite_end_to_end_on_tiny_data(name, real_model, datasets, metric_models, tmp_path, monkeypatch):
    monkeypatch.setattr(M.shutil, "which", lambda name: None)  # METEOR's JVM takes ~20 s to start; its absence is reported
    suite = SUITES[name]
    models = {k: metric_models[k] for k in suite.metric_models}
    run = prepare_paper_suite(name, data=datasets[suite.dataset], metric_models=models, limit=2, seed=0)
    run.fid_size = 32  # the tiny feature network
    results = run_paper_eval(name, tmp_path, model=real_model, composition="tiny", prepared=run)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["suite"] == name and saved["protocol"]["limit"] == 2 and saved["protocol"]["seed"] == 0
    assert saved["protocol"]["prompt"] == suite.prompt and saved["commit"] and "torchmetrics" in saved["versions"]
    records = saved["samples"]["model"]
    assert [r["id"] for r in records] == [s.sample_id for s in run.samples] and len(records) == 2
    assert set(saved["metrics"]) == set(suite.metrics) and saved["timings"]["model"] >= 0
    report = (tmp_path / "report.md").read_text()
    assert f"# `{name}` suite" in report and "| metric | value | 95% CI | n | kind | paper (NExT-GPT) |" in report
    if suite.direction == "caption":
        assert all(isinstance(r["reply"], str) and r["references"] for r in records)
        for metric in ("BLEU-4", "ROUGE-L", "CIDEr"):
            assert saved["metrics"][metric]["value"] is not None and saved["metrics"][metric]["n"] == 2
            assert f"| {metric} |" in report
        assert "not run: java is not on PATH" in report
    else:
        distance, per_sample = suite.metrics
        assert all(r["made"] and (tmp_path / r["output"]).is_file() for r in records)
        assert saved["metrics"][distance]["value"] is not None and "ci95" not in saved["metrics"][distance]
        low, high = saved["metrics"][per_sample]["ci95"]
        assert low <= saved["metrics"][per_sample]["value"] <= high
        assert f"| {distance} |" in report and f"| {per_sample} |" in report
    if name == "audiocaps-t2a" or name == "audiocaps-caption":
        assert saved["data"]["skipped_missing_media"] == ["audiocaps:yt003"] and "left out" in report
    assert results["metrics"].keys() == saved["metrics"].keys()


# ---------------------------------------------------------------------------------------------- one-line errors
def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_missing_data_is_one_line_naming_what_to_download(tmp_path, monkeypatch, datasets, metric_models):
    monkeypatch.delenv("NEXTGPT_EVAL_COCO", raising=False)
    with pytest.raises(ConfigError) as caught:
        prepare_paper_suite("coco-caption")
    text = _one_line(caught)
    assert "COCO" in text and "--data" in text and "NEXTGPT_EVAL_COCO" in text and "cocodataset.org" in text
    monkeypatch.setenv("NEXTGPT_EVAL_COCO", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="NEXTGPT_EVAL_COCO .*nowhere: no such folder") as caught:
        prepare_paper_suite("coco-caption")
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "dataset_coco.json").write_text('{"images": []}')
    with pytest.raises(ConfigError, match="missing annotations/captions_val2014.json") as caught:
        prepare_paper_suite("coco-caption", data=tmp_path / "coco")
    _one_line(caught)
    with pytest.raises(ConfigError, match="missing test_videodatainfo.json"):
        prepare_paper_suite("msrvtt-caption", data=tmp_path / "coco")
    with pytest.raises(ConfigError, match="missing test.csv"):
        prepare_paper_suite("audiocaps-caption", data=tmp_path / "coco")
    # a selected image that is not there: named, with how many are missing
    broken = _write_coco(tmp_path / "broken")
    (broken / "val2014" / "COCO_val2014_000000000002.jpg").unlink()
    with pytest.raises(ConfigError, match=r"1 of the 3 selected files are missing, first .*COCO_val2014_000000000002.jpg"):
        prepare_paper_suite("coco-caption", data=broken)


def test_missing_metric_network_is_one_line_naming_it(monkeypatch, datasets, metric_models, tmp_path):
    for env in ("NEXTGPT_EVAL_INCEPTION", "NEXTGPT_EVAL_CLIP", "NEXTGPT_EVAL_CLAP"):
        monkeypatch.delenv(env, raising=False)
    with pytest.raises(ConfigError) as caught:
        prepare_paper_suite("coco-t2i", data=datasets["coco"], metric_models={"clip": metric_models["clip"]})
    text = _one_line(caught)
    assert "inception" in text and "--metric-model inception=PATH" in text and "NEXTGPT_EVAL_INCEPTION" in text
    with pytest.raises(ConfigError, match="clap metric network") as caught:
        prepare_paper_suite("audiocaps-t2a", data=datasets["audiocaps"])
    assert "laion/clap-htsat-unfused" in _one_line(caught)
    monkeypatch.setenv("NEXTGPT_EVAL_CLIP", str(tmp_path))
    with pytest.raises(ConfigError, match=r"NEXTGPT_EVAL_CLIP=.*: no config.json in it"):
        prepare_paper_suite("msrvtt-t2v", data=datasets["msrvtt"], metric_models={"inception": metric_models["inception"]})
    with pytest.raises(ConfigError, match="must hold {caption}"):
        prepare_paper_suite("coco-t2i", data=datasets["coco"], prompt="Draw something")
    with pytest.raises(ConfigError, match="unknown name 'fid'"):
        M.parse_metric_models(["fid=/x"])


def test_the_cli_refuses_before_loading_anything(datasets, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from nextgpt_core.cli import app

    monkeypatch.delenv("NEXTGPT_EVAL_INCEPTION", raising=False)
    runner = CliRunner()
    cases = [
        (["--suite", "coco-t2i", "--data", str(datasets["coco"])], "--metric-model inception=PATH"),
        (["--suite", "audiocaps-caption", "--data", str(tmp_path / "none")], "no such folder"),
        (["--suite", "coco-caption", "--data", str(datasets["coco"]), "--variant", "ceiling"], "scores the model only"),
        (["--suite", "toy", "--data", str(datasets["coco"])], "--data: for the paper suites"),
        (["--suite", "cocoa"], "coco-caption, msrvtt-caption"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["eval", *args, "--out", str(tmp_path / "out")])
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, result.stderr)
    assert not (tmp_path / "out").exists()


def test_the_cli_writes_a_paper_suite_like_the_others(datasets, real_model, tmp_path, monkeypatch):
    """`nextgpt eval --suite coco-caption --data DIR --limit 2`: the results folder with its marker, the metrics printed
    one per line (the model is the module's tiny one: the CLI would build the same from `--composition tiny`)."""
    from typer.testing import CliRunner

    from nextgpt_core.cli import app
    from nextgpt_core.model import NextGPT

    monkeypatch.setattr(M.shutil, "which", lambda name: None)
    monkeypatch.setattr(NextGPT, "from_composition", classmethod(lambda cls, *a, **k: real_model))
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "--suite", "coco-caption", "--composition", "tiny", "--data",
                                      str(datasets["coco"]), "--limit", "2", "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "BLEU-4: " in result.stdout and "METEOR: not run (java is not on PATH" in result.stdout
    saved = json.loads((out / "results.json").read_text())
    assert saved["protocol"]["data"] == str(datasets["coco"]) and saved["protocol"]["seed"] == 3
    assert len(saved["samples"]["model"]) == 2 and (out / ".nextgpt-output.json").is_file()
    again = CliRunner().invoke(app, ["eval", "--suite", "coco-caption", "--data", str(datasets["coco"]), "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.stderr  # an earlier evaluation is replaced only when asked


def test_compare_refuses_paper_results_in_one_line(tmp_path):
    from nextgpt_core.eval.compare import compare_results

    paper = {"suite": "coco-t2i", "metrics": {"FID": {"value": 1.0}}, "samples": {"model": [{"id": "coco:1"}]}}
    with pytest.raises(ConfigError, match="no paired test"):
        compare_results(paper, paper)
