"""Retrieval as an output modality: a gallery indexed once with the composition's own encoder (refused for another),
exact and FAISS search, a composition offering generation and retrieval for the same modality with the reply saying
which made each item, stage 2's L2 against the encoder's embedding of the target media, and bad input as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from nextgpt_core import Conversation, NextGPT
from nextgpt_core.composition import resolve_composition
from nextgpt_core.errors import CheckpointError, CompositionError, ConversationError, GalleryIndexError
from nextgpt_core.plugins import DEFAULT_PLUGINS
from nextgpt_core.retrieval import GalleryIndex, RetrievalDecoder, build_index, faiss_available, make_search
from nextgpt_core.retrieval.model_encoder import composition_encoder
from nextgpt_core.testing import DecoderTesterMixin
from nextgpt_core.training.collate import SignalSpan
from nextgpt_core.training.data import Target, target_id
from nextgpt_core.training.losses import l2_loss, signal_l2_losses
from nextgpt_core.training.targets import TargetCache, build_decoders, cache_targets, media_target_encoders
from nextgpt_registry import Registry

COLOURS = [(220, 30, 30), (30, 180, 40), (30, 60, 220), (230, 210, 20), (240, 240, 240), (20, 20, 20)]


def _tiny(**image: Any) -> dict[str, Any]:
    return {"name": "retrieval-test", "llm": {"tiny": {}}, "generation": {"max_new_tokens": 24},
            "modalities": {"image": {"preset": "tiny", **image}}}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load(DEFAULT_PLUGINS, allow=["image"])


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six pictures (one colour and a stripe each) in two sub-folders, plus files the index must leave out."""
    root = tmp_path_factory.mktemp("gallery")
    for i, colour in enumerate(COLOURS):
        pixels = np.zeros((48, 64, 3), np.uint8)
        pixels[:] = colour
        pixels[8 * i : 8 * i + 6] = 255 - np.asarray(colour, np.uint8)
        folder = root / ("warm" if i < 3 else "cool")
        folder.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(folder / f"p{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "notes.txt").write_text("not a picture\n")
    (root / ".hidden").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / ".hidden" / "secret.png")
    return root


@pytest.fixture(scope="module")
def index(gallery: Path, registry: Registry) -> Path:
    encoder, component, media_io, spec = composition_encoder(_tiny(), "image", registry)
    folder, facts = build_index(gallery, encoder, modality="image", component=component, media_io=media_io,
                                extensions=spec.extensions, batch_size=4)
    assert facts["items"] == 6 and facts["skipped"] == 1 and facts["items_per_second"] > 0
    return folder


def _retrieval(index: Path, **route: Any) -> dict[str, Any]:
    return {"extra_decoders": [{"decoder": {"id": "image/retrieval", "options": {"index": str(index)}},
                                "output_projector": "linear-out", **route}]}


# ---------------------------------------------------------------------------------------------- the index
def test_index_lists_the_gallery_and_skips_what_it_cannot_read(index: Path, gallery: Path) -> None:
    assert index == gallery / ".nextgpt-index" / "image"
    opened = GalleryIndex.open(index)
    assert [i.path for i in opened.items] == ["cool/p3.png", "cool/p4.png", "cool/p5.png", "warm/p0.png", "warm/p1.png", "warm/p2.png"]
    assert opened.modality == "image" and opened.dim == 32 and opened.gallery == gallery.resolve()
    np.testing.assert_allclose(np.linalg.norm(opened.embeddings, axis=1), 1.0, rtol=1e-5)
    skipped = opened.manifest["skipped"]
    assert [s["path"] for s in skipped] == ["broken.png"] and "broken.png" in skipped[0]["reason"]
    assert opened.identity.component == "image/imagebind" and len(opened.identity.probe) == 32


@pytest.mark.parametrize("kind", ["exact", "faiss-hnsw"])
def test_every_item_finds_itself_first(index: Path, kind: str) -> None:
    opened = GalleryIndex.open(index)
    scores, ids = make_search(opened.embeddings, kind).search(opened.embeddings * 3.0, 2)  # queries need no unit norm
    assert ids[:, 0].tolist() == list(range(6))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert (scores[:, 1] < scores[:, 0]).all()


def test_faiss_is_installed_by_the_ann_extra_and_named_when_missing(index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert faiss_available()  # `make install` installs nextgpt-core[ann]
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if the extra were not installed
    with pytest.raises(GalleryIndexError, match=r"faiss-cpu package: pip install 'nextgpt-core\[ann\]'"):
        make_search(GalleryIndex.open(index).embeddings, "faiss-hnsw")


def test_index_is_refused_for_another_encoder(index: Path, registry: Registry) -> None:
    other, component, media_io, _ = composition_encoder({**_tiny(), "seed": 1}, "image", registry)  # other weights
    decoder = RetrievalDecoder.from_options({"index": str(index)})
    with pytest.raises(GalleryIndexError, match="was built with encoder image/imagebind .* not with this model's .*other weights") as info:
        decoder.attach_encoder(other, component=component, media_io=media_io)
    assert "\n" not in str(info.value)
    same, component, media_io, _ = composition_encoder(_tiny(), "image", registry)
    decoder.attach_encoder(same, component=component, media_io=media_io)  # the encoder that built it: accepted


def test_bad_index_folders_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(GalleryIndexError, match="no gallery index at .*nextgpt index build"):
        RetrievalDecoder.from_options({"index": str(tmp_path / "none")}).conditioning_inputs
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(GalleryIndexError, match="not a nextgpt gallery index"):
        GalleryIndex.open(tmp_path / "bad")


# ---------------------------------------------------------------------------------------------- the decoder contract
class TestRetrievalDecoder(DecoderTesterMixin):
    component_class = RetrievalDecoder

    @pytest.fixture(autouse=True)
    def _index(self, index: Path) -> None:
        self.index = index

    def get_init_dict(self) -> dict[str, Any]:
        return {"index": str(self.index)}

    def get_decode_options(self) -> dict[str, Any]:
        return {"top_k": 2}


# ---------------------------------------------------------------------------------------------- in a composition
def test_composition_offers_generation_and_retrieval_and_the_reply_says_which(index: Path, registry: Registry, tmp_path: Path) -> None:
    resolved = resolve_composition(_tiny(**_retrieval(index)), registry).modalities["image"]
    assert list(resolved.routes) == ["image/sd-1.5", "image/retrieval"] and resolved.decode_with == ("image/sd-1.5",)
    query = resolved.routes["image/retrieval"].output_projectors[0]
    assert (query.fills, query.options["out_len"], query.options["out_dim"]) == ("query_embeds", 1, 32)

    model = NextGPT.from_composition(_tiny(**_retrieval(index)), registry=registry)
    assert set(model.output_projectors["image"]) == {"prompt_embeds", "query_embeds"}
    conversation = Conversation().user("Show me a picture.")
    default = model.generate(conversation, want=["image"], seed=3)
    assert [p.produced_by for p in default.media] == ["image/sd-1.5"]
    both = model.generate(conversation, want=["image"], seed=3, decoders={"image": ["image/sd-1.5", "image/retrieval"]},
                          decode_options={"image/retrieval": {"top_k": 4}})
    assert [p.produced_by for p in both.media] == ["image/sd-1.5", "image/retrieval"]
    np.testing.assert_array_equal(np.asarray(both.media[0].data), np.asarray(default.media[0].data))  # same seed, same picture
    found = both.media[1]
    assert found.details["gallery_item"] in [i.path for i in GalleryIndex.open(index).items]
    assert len(found.details["neighbours"]) == 4 and found.details["search"] == "exact"
    with Image.open(found.details["file"]) as original:
        np.testing.assert_array_equal(np.asarray(found.data), np.asarray(original.convert("RGB")))
    written = both.save(tmp_path / "reply", model.registry)
    sources = json.loads((tmp_path / "reply" / "sources.json").read_text())
    assert [s["produced_by"] for s in sources] == ["image/sd-1.5", "image/retrieval"] and tmp_path / "reply" / "sources.json" in written
    assert sources[1]["details"]["gallery_item"] == found.details["gallery_item"]
    with pytest.raises(ConversationError, match="choose distinct ones of image/sd-1.5, image/retrieval"):
        model.generate(conversation, want=["image"], decoders={"image": ["image/sd-2"]})


def test_retrieval_alone_and_composition_errors(index: Path, registry: Registry) -> None:
    only = {"decoder": {"id": "image/retrieval", "options": {"index": str(index)}}, "output_projector": "linear-out"}
    model = NextGPT.from_composition(_tiny(**only), registry=registry)
    reply = model.generate(Conversation().user("Find one."), want=["image"], seed=0)
    assert [p.produced_by for p in reply.media] == ["image/retrieval"]
    with pytest.raises(CompositionError, match="decode_with .* must name distinct decoders of the modality"):
        resolve_composition(_tiny(**_retrieval(index), decode_with=["image/retrieval", "image/nope"]), registry)
    with pytest.raises(CompositionError, match="decoder 'image/sd-1.5' is listed twice"):
        resolve_composition(_tiny(extra_decoders=[{"decoder": {"id": "image/sd-1.5", "options": {"tiny": True}},
                                                   "output_projector": "linear-out"}]), registry)
    with pytest.raises(CompositionError, match="dim 7, but the index .* holds 32-d"):
        resolve_composition(_tiny(extra_decoders=[{"decoder": {"id": "image/retrieval", "options": {"index": str(index), "dim": 7}},
                                                   "output_projector": "linear-out"}]), registry)


# ---------------------------------------------------------------------------------------------- stage 2
def test_stage_two_trains_the_query_against_the_target_media_embedding(index: Path, gallery: Path, registry: Registry) -> None:
    model = NextGPT.from_composition(_tiny(**_retrieval(index)), registry=registry)
    n, hidden = len(model.tokens.signals["image"]), model.llm.config.hidden_size
    target = gallery / "warm" / "p1.png"
    span = SignalSpan("image", 2, 2 + n, target_id("image", "a green picture"), "a green picture", target)
    batch = SimpleNamespace(signal_spans=[[span]])
    torch.manual_seed(0)
    states = torch.randn(1, 2 + n + 3, hidden)
    cached = {span.target_id: {"prompt_embeds": torch.zeros(77, 32)}}  # the caption target of the generator
    expected_target = GalleryIndex.open(index).embeddings[4]  # warm/p1.png, as the index embedded it
    np.testing.assert_allclose(model.media_target("image", target)[0].numpy(), expected_target, rtol=1e-5, atol=1e-6)

    proj = model.output_projectors["image"]["query_embeds"]
    proj.requires_grad_(True)
    optimizer = torch.optim.Adam(proj.parameters(), lr=0.05)
    first = None
    for _ in range(25):
        losses = signal_l2_losses(model, states, batch, cached)
        signal = model.llm.get_input_embeddings()(torch.tensor(model.tokens.signals["image"])).unsqueeze(0).detach()
        with torch.no_grad():
            caption_part = l2_loss(model.output_projectors["image"]["prompt_embeds"](states[:, 2 : 2 + n], signal), torch.zeros(1, 77, 32))
        query_part = losses["image"].detach() - caption_part
        first = float(query_part) if first is None else first
        optimizer.zero_grad()
        losses["image"].backward()
        optimizer.step()
    assert float(query_part) < 0.5 * first, (first, float(query_part))  # the projector learns the media's embedding
    without_media = SimpleNamespace(signal_spans=[[SignalSpan("image", 2, 2 + n, span.target_id, span.caption, None)]])
    torch.testing.assert_close(signal_l2_losses(model, states, without_media, cached)["image"].detach(), caption_part)


def test_cache_targets_leaves_retrieval_modalities_to_the_encoder(index: Path, registry: Registry, tmp_path: Path) -> None:
    only = {"decoder": {"id": "image/retrieval", "options": {"index": str(index)}}, "output_projector": "linear-out"}
    decoders = build_decoders(resolve_composition(_tiny(**only), registry))
    target = SimpleNamespace(modality="image", caption="a green picture", target_id=target_id("image", "a green picture"))
    assert cache_targets([target], decoders, tmp_path / "targets") == {}


def _spans_batch(model: NextGPT, targets: list[Target]) -> tuple[SimpleNamespace, torch.Tensor]:
    """One signal span per row (one row per target) and seeded hidden states for them."""
    n, hidden = len(model.tokens.signals["image"]), model.llm.config.hidden_size
    spans = [[SignalSpan("image", 2, 2 + n, t.target_id, t.caption, t.media_path)] for t in targets]
    torch.manual_seed(0)
    return SimpleNamespace(signal_spans=spans), torch.randn(len(targets), 2 + n + 3, hidden)


def test_cache_targets_embeds_the_target_media_once_and_the_loss_reads_the_same_numbers(
        index: Path, gallery: Path, registry: Registry, tmp_path: Path) -> None:
    composition = _tiny(**_retrieval(index))  # sd-1.5 generates (caption targets), retrieval beside it (media targets)
    resolved = resolve_composition(composition, registry)
    files = [gallery / "warm" / "p1.png", gallery / "cool" / "p4.png", gallery / "warm" / "p1.png", None]
    captions = ["a green picture", "a white picture", "green again", "no file named"]
    targets = [Target("image", c, f, 1, 1) for c, f in zip(captions, files)]
    encoders = media_target_encoders(resolved, registry)
    assert list(encoders) == ["image"] and encoders["image"][1] == "image/imagebind"
    assert cache_targets(targets, build_decoders(resolved), tmp_path / "targets", media_encoders=encoders) == {"image": 4}
    cache = TargetCache(tmp_path / "targets")
    assert len(cache) == 4 and cache.media_counts() == {"image": 2}  # p1.png embedded once; not a caption target
    assert (tmp_path / "targets" / "media-embeddings" / "image.safetensors").is_file()

    model = NextGPT.from_composition(composition, registry=registry)
    for path in files[:2]:
        np.testing.assert_allclose(cache.media_target(model, "image", path).numpy(),
                                   model.media_target("image", path).numpy(), rtol=1e-5, atol=1e-6)
    assert (cache.media_hits, cache.media_misses) == (2, 0)

    batch, states = _spans_batch(model, targets)
    on_the_fly = {tid: cache[tid] for tid in cache}  # the same caption targets, no media embeddings: computed
    for reduction in ("mean", "sum"):
        cached = signal_l2_losses(model, states, batch, cache, reduction=reduction)["image"]
        computed = signal_l2_losses(model, states, batch, on_the_fly, reduction=reduction)["image"]
        torch.testing.assert_close(cached, computed, rtol=1e-5, atol=1e-6)
    assert (cache.media_hits, cache.media_misses) == (2 + 2 * 3, 0)  # every media target came from the cache


def test_cached_media_targets_follow_the_file_and_refuse_another_encoder(
        index: Path, gallery: Path, registry: Registry, tmp_path: Path) -> None:
    composition = _tiny(**_retrieval(index))
    resolved = resolve_composition(composition, registry)
    picture = tmp_path / "target.png"
    picture.write_bytes((gallery / "warm" / "p1.png").read_bytes())
    targets = [Target("image", "a picture", picture, 1, 1)]
    cache_targets(targets, build_decoders(resolved), tmp_path / "targets", media_encoders=media_target_encoders(resolved, registry))
    cache = TargetCache(tmp_path / "targets")
    model = NextGPT.from_composition(composition, registry=registry)
    assert cache.media_target(model, "image", picture) is not None

    picture.write_bytes((gallery / "cool" / "p4.png").read_bytes())  # changed since caching: embedded as it now is
    os.utime(picture, ns=(1, 1))
    assert cache.media_target(model, "image", picture) is None and cache.media_misses == 1
    batch, states = _spans_batch(model, targets)
    model.encoder_cache.max_items = 0
    torch.testing.assert_close(signal_l2_losses(model, states, batch, cache)["image"],
                               signal_l2_losses(model, states, batch, {t: cache[t] for t in cache})["image"])

    other = NextGPT.from_composition({**composition, "seed": 1}, registry=registry)  # another image encoder
    with pytest.raises(CheckpointError, match=r"its image target media were embedded with encoder image/imagebind .* "
                                              r"not with this model's .*other weights.*cache-targets") as info:
        signal_l2_losses(other, states, batch, cache)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- the command line
@pytest.mark.subprocess
def test_cache_targets_command_embeds_retrieval_targets_and_train_reads_them(gallery: Path, index: Path, tmp_path: Path) -> None:
    env = {**os.environ, "NEXTGPT_LOAD_PLUGINS": "image", "OMP_NUM_THREADS": "1"}
    composition = tmp_path / "c.toml"
    composition.write_text(
        'name = "cli-retrieval"\n[llm.tiny]\n[modalities.image]\npreset = "tiny"\n'
        f'[[modalities.image.extra_decoders]]\ndecoder = {{ id = "image/retrieval", options = {{ index = "{index}" }} }}\n'
        'output_projector = "linear-out"\n')
    rows = [{"turns": [{"role": "user", "parts": [{"text": f"show me picture {i}"}]},
                       {"role": "assistant", "parts": [{"generate": "image", "caption": f"picture {i}", "media": str(path)}]}]}
            for i, path in enumerate(sorted(gallery.glob("*/p*.png")))]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nextgpt_core.cli", *args], env=env, capture_output=True, text=True, timeout=300)

    cache = ["cache-targets", "--data", str(data), "-c", str(composition), "--out", str(tmp_path / "targets")]
    done = run(*cache)
    assert done.returncode == 0, done.stderr
    assert "cached 6 targets (image 6)" in done.stdout and "embedded 6 target media file(s) (image 6)" in done.stdout
    trained = run("train", "--stage", "2", "--data", str(data), "-c", str(composition), "--targets", str(tmp_path / "targets"),
                  "--out", str(tmp_path / "run"), "--steps", "1", "--batch-size", "2")
    assert trained.returncode == 0, trained.stderr
    assert "media targets: image (6 files) read from the target cache" in trained.stderr
    again = run(*cache, "--overwrite")  # the media embeddings are the cache's own files: replaced as a whole
    assert again.returncode == 0, again.stderr



@pytest.mark.subprocess
def test_index_build_then_generate_with_retrieval_on_the_command_line(gallery: Path, index: Path, tmp_path: Path) -> None:
    env = {**os.environ, "NEXTGPT_LOAD_PLUGINS": "image", "OMP_NUM_THREADS": "1"}
    composition = tmp_path / "c.toml"
    composition.write_text(
        'name = "cli-retrieval"\n[llm.tiny]\n[generation]\nmax_new_tokens = 16\n[modalities.image]\npreset = "tiny"\n'
        f'[[modalities.image.extra_decoders]]\ndecoder = {{ id = "image/retrieval", options = {{ index = "{tmp_path / "idx"}" }} }}\n'
        'output_projector = "linear-out"\n')

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nextgpt_core.cli", *args], env=env, capture_output=True, text=True, timeout=300)

    built = run("index", "build", str(gallery), "-m", "image", "-c", "tiny", "-o", str(tmp_path / "idx"))
    assert built.returncode == 0, built.stderr
    assert "indexed 6 image item(s)" in built.stdout and "skipped 1 unreadable file(s)" in built.stderr
    reply = run("generate", "-p", "show me", "-w", "image", "-c", str(composition), "--seed", "0",
                "--decoder", "image=image/retrieval", "-o", str(tmp_path / "out"))
    assert reply.returncode == 0, reply.stderr
    assert "(image/retrieval: gallery item " in reply.stdout
    refused = run("index", "build", str(gallery), "-m", "image", "-c", "tiny", "-o", str(tmp_path / "idx"))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--overwrite" in refused.stderr
    bad = run("generate", "-p", "x", "-c", str(composition), "--decoder", "image", "-o", str(tmp_path / "o2"))
    assert bad.returncode == 2 and "write MODALITY=DECODER" in bad.stderr
