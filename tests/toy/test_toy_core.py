"""The toy world's core pieces on their own: dialogues and their splits, the composition a world writes, the
weights manifest, and where a build may write."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from nextgpt_registry import Registry

from nextgpt_core.errors import CheckpointError, WeightsNotFoundError
from nextgpt_core.plugins import DEFAULT_PLUGINS

REAL = ["image", "video", "audio", "depth"]


@pytest.fixture(scope="module")
def world():
    from nextgpt_core.toy.world import ToyWorld

    return ToyWorld.installed(Registry.load(DEFAULT_PLUGINS, allow=REAL))


@pytest.mark.parametrize("task", ["describe", "generate", "convert", "edit", "multi"])
def test_eval_dialogues_check_held_out_items_with_held_out_phrasings(world, task):
    from nextgpt_core.toy.dialogues import Given, Made, make_dialogues
    from nextgpt_core.toy.world import phrasings

    for split in ("train", "eval"):
        dialogues = make_dialogues(world, task, 12, split=split, seed=3)
        assert len(dialogues) == 12, (task, split)
        for d in dialogues:
            roles = [role for role, _ in d.turns]
            assert roles == ["user", "assistant"] * (len(roles) // 2) and d.checks
            checked = d.checks[0]
            assert world.is_held_out(checked.modality, checked.attributes) == (split == "eval")
            if split == "train":  # nothing in a training dialogue is held out
                for _, parts in d.turns:
                    for p in parts:
                        if isinstance(p, (Given, Made)):
                            assert not world.is_held_out(p.modality, p.attributes)
            user = " ".join(p for role, parts in d.turns if role == "user" for p in parts if isinstance(p, str))
            held_phrasings = [q for part in world.parts.values() for q in phrasings(part.describe_requests, "eval")]
            assert any(q in user for q in held_phrasings) == (split == "eval" and task == "describe") or task != "describe"
    assert make_dialogues(world, task, 5, split="train", seed=3)[0].turns == make_dialogues(world, task, 5, split="train", seed=3)[0].turns


def test_keywords_and_the_llm_text_of_a_turn():
    import numpy as np

    from nextgpt_core.toy.dialogues import Given, Made, keywords, text_of

    assert keywords("a large red circle on the left on a white background") == "large red circle left white"
    given = Given("image", {}, "a small blue square at the top on a black background")
    made = Made("image", {}, "a red circle")
    text = text_of([given, "What is this?"], np.random.default_rng(0), shuffle=0.0)
    assert text == "small blue square top black What is this?"
    assert text_of(["Here it is.", made], np.random.default_rng(0)) == "Here it is."


def test_parse_finds_the_longest_caption(world):
    part = world.parts["image"]
    pair = {"layout": "pair", "shape": "circle", "colour": "red", "relation": "left of", "shape2": "square",
            "colour2": "blue", "background": "black"}
    assert part.parse(f"Sure: {part.caption(pair)}.") == pair
    assert part.parse("nothing of the sort") is None


def test_the_world_composition_names_every_part_relative_to_itself(world):
    from nextgpt_core.toy.recipe import SCALES, composition_text

    data = tomllib.loads(composition_text(world, SCALES["full"], checkpoint=True))
    assert data["name"] == "toy" and data["checkpoint"] == "${COMPOSITION_DIR}/nextgpt"
    assert data["weights_manifest"] == "${COMPOSITION_DIR}/manifest.json" and data["llm"]["path"] == "${COMPOSITION_DIR}/llm"
    assert list(data["modalities"]) == list(world.parts)
    for key, m in data["modalities"].items():
        assert m["encoder"]["options"]["checkpoint"] == "${COMPOSITION_DIR}/imagebind.safetensors"
        assert ("decoder" in m) == world.parts[key].can_generate
        if "decoder" in m:
            assert m["decoder"]["options"]["path"] == f"${{COMPOSITION_DIR}}/decoders/{key}"


def test_weights_manifest_names_a_missing_altered_or_escaping_file(tmp_path):
    from nextgpt_core.weights_manifest import verify_weights_manifest, write_weights_manifest

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "w.bin").write_bytes(b"weights")
    manifest = write_weights_manifest(tmp_path, ["a/w.bin"], rebuild="make toy-world")
    assert verify_weights_manifest(manifest) == {"a/w.bin": json.loads(manifest.read_text())["files"]["a/w.bin"]}
    (tmp_path / "a" / "w.bin").write_bytes(b"weightz")
    with pytest.raises(CheckpointError, match=r"corrupted: .*w\.bin.*make toy-world"):
        verify_weights_manifest(manifest)
    (tmp_path / "a" / "w.bin").unlink()
    with pytest.raises(WeightsNotFoundError, match=r"missing: .*w\.bin.*make toy-world"):
        verify_weights_manifest(manifest)
    manifest.write_text(json.dumps({"files": {"../outside": "0" * 64}}))
    with pytest.raises(CheckpointError, match="outside"):
        verify_weights_manifest(manifest)
    manifest.write_text("{not json")
    with pytest.raises(CheckpointError, match="not a readable weights manifest"):
        verify_weights_manifest(manifest)


def test_a_build_writes_only_into_a_new_folder_or_an_earlier_world(tmp_path, monkeypatch):
    from nextgpt_core.folders import MARKER, TOY_WORLD, OutputFolderError, check_output_folder

    assert check_output_folder(tmp_path / "new", TOY_WORLD) == "absent"
    earlier = tmp_path / "earlier"
    (earlier / "logs").mkdir(parents=True)
    (earlier / "manifest.json").write_text(json.dumps({"format": "nextgpt-toy-world"}))
    with pytest.raises(OutputFolderError, match="--overwrite"):
        check_output_folder(earlier, TOY_WORLD, option="--out")
    assert check_output_folder(earlier, TOY_WORLD, overwrite=True) == "own"
    unfinished = tmp_path / "unfinished"  # a build killed before its manifest: recognised by its marker
    (unfinished / "work").mkdir(parents=True)
    (unfinished / MARKER).write_text(json.dumps({"format": "nextgpt-output", "kind": "toy-world", "files": []}))
    assert check_output_folder(unfinished, TOY_WORLD, overwrite=True) == "own"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match="not a folder nextgpt wrote"):
        check_output_folder(foreign, TOY_WORLD, overwrite=True)
    (earlier / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match="notes.txt"):
        check_output_folder(earlier, TOY_WORLD, overwrite=True)
    assert (earlier / "notes.txt").read_text() == "mine"
    with pytest.raises(OutputFolderError, match="input"):  # a world being reused is never the one replaced
        check_output_folder(unfinished, TOY_WORLD, overwrite=True, inputs=[unfinished])
    monkeypatch.chdir(unfinished)
    with pytest.raises(OutputFolderError, match="current folder"):
        check_output_folder(Path("."), TOY_WORLD, overwrite=True)


def test_a_decoder_is_trained_again_when_the_shared_training_loop_changes(world, monkeypatch, tmp_path):
    """``--reuse`` copies a decoder only when its fingerprint matches: the part's recipe and the core's training
    loops (nextgpt_core.toy.diffusion / optim) both go into it, so an edited loop is never silently reused."""
    from nextgpt_core.toy import recipe

    ctx = recipe._Context(out=tmp_path, settings=recipe.SCALES["mini"], keys=("image",))
    monkeypatch.setattr(ctx, "world", lambda: world)  # the real parts (the suite loads the fake plugin)
    before = recipe._fingerprint(recipe._decoder_inputs("image", ctx))
    assert recipe._fingerprint(recipe._decoder_inputs("image", ctx)) == before
    real_sources = recipe._sources

    def edited(*modules):
        out = real_sources(*modules)
        return {k: v + "\n# edited" if k == "nextgpt_core.toy.diffusion" else v for k, v in out.items()}

    monkeypatch.setattr(recipe, "_sources", edited)
    assert recipe._fingerprint(recipe._decoder_inputs("image", ctx)) != before


def test_the_denoiser_loop_draws_the_asked_share_of_the_noisiest_timesteps():
    """``high_noise_share``: that share of every batch comes from the last tenth of the schedule, the rest is
    uniform; the velocity weight there is 1 (min-SNR's would be ~0)."""
    import torch
    from diffusers import DDPMScheduler

    from nextgpt_core.toy.diffusion import train_denoiser

    class Recorder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))
            self.seen: list[torch.Tensor] = []

        def forward(self, x, t, **_):
            self.seen.append(t.clone())
            return type("Out", (), {"sample": x * self.scale})()

    schedule = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    text = torch.nn.Linear(1, 1)
    latents = torch.randn(16, 2, 4, 4)
    seen = {}
    for share in (0.0, 0.5, 1.0):
        unet = Recorder()
        train_denoiser(unet, text, lambda texts: {}, latents, ["a"] * 16, schedule, steps=40, batch_size=64,
                       high_noise_share=share, seed=0)
        t = torch.cat(unet.seen)
        seen[share] = float((t >= 900).float().mean())
    assert seen[1.0] == 1.0
    assert 0.05 < seen[0.0] < 0.15  # uniform: a tenth
    assert 0.5 < seen[0.5] < 0.6  # half of the batch, plus a tenth of the uniform half
