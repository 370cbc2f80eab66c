"""The toy world end to end at the miniature scale (`nextgpt toy build --scale mini`: every phase, tiny sizes, a few
steps), what it ships, and the rules that make its numbers honest (nothing held out is ever trained on)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nextgpt_registry import Registry

from nextgpt_core.plugins import DEFAULT_PLUGINS

REAL = ["image", "video", "audio", "depth"]
ENV = {**os.environ, "NEXTGPT_LOAD_PLUGINS": ",".join(REAL)}


@pytest.fixture(scope="module")
def real_registry():
    return Registry.load(DEFAULT_PLUGINS, allow=REAL)


@pytest.fixture(scope="module")
def world(real_registry):
    from nextgpt_core.toy.world import ToyWorld

    return ToyWorld.installed(real_registry)


def _nextgpt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nextgpt_core.cli", *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=900)


def test_every_plugin_offers_a_part_and_holds_out_at_least_a_tenth(world):
    assert list(world.parts) == sorted(REAL)  # registration order: entry points sorted by name
    for key, part in world.parts.items():
        captions = [part.caption(c) for c in world.combinations(key)]
        assert len(set(captions)) == len(captions), f"{key}: two combinations share a caption"
        assert world.held_out_fraction(key) >= 0.10, key
        assert world.combinations(key, "train") and world.combinations(key, "held_out")
    assert len(world.combinations("image")) >= 300 and len(world.combinations("video")) >= 100
    assert len(world.combinations("audio")) >= 50


def test_nothing_held_out_reaches_any_training_file(world, real_registry, tmp_path):
    """No held-out caption and no held-out phrasing appears in the stage files or in the LLM's corpus."""
    from nextgpt_core.composition import PromptSettings
    from nextgpt_core.toy.data import write_training_data
    from nextgpt_core.toy.language import LanguageSettings, pretraining_texts
    from nextgpt_core.toy.world import phrasings

    files = write_training_data(world, tmp_path, registry=real_registry, renders={k: 1 for k in world.parts},
                                dialogues={"describe": 60, "generate": 60, "convert": 40, "edit": 60, "multi": 30, "t2m": 20})
    held = {world.parts[k].caption(c) for k in world.parts for c in world.combinations(k, "held_out")}
    train = {world.parts[k].caption(c) for k in world.parts for c in world.combinations(k, "train")}
    assert not held & train
    captions: list[str] = []
    texts: list[str] = []
    for path in [*files.xcaption.values(), *files.t2m.values(), files.mosit]:
        rows = json.loads(Path(path).read_text())
        for row in rows:
            captions += [row["caption"]] if "caption" in row else []
            for key in world.parts:
                captions += [item["caption"] for item in row.get(f"{key}_list", [])]
            for turn in row.get("conversation", []):
                texts.append(turn["value"])
                if turn.get("caption"):
                    captions.append(turn["caption"])
    assert captions and set(captions) <= train
    corpus = pretraining_texts(world, PromptSettings(), LanguageSettings(dialogues=40, copies=1))
    for text in texts + corpus:
        assert not any(h in text for h in held), text
    for part in world.parts.values():
        for request in phrasings(part.describe_requests, "eval"):
            assert not any(request in t for t in texts + corpus), request


@pytest.fixture(scope="module")
def mini_world(tmp_path_factory):
    """`nextgpt toy build --scale mini`, as a user runs it (every phase; a couple of steps each)."""
    out = tmp_path_factory.mktemp("toy") / "world"
    done = _nextgpt("toy", "build", "--scale", "mini", "--out", str(out), "--jobs", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_mini_build_writes_a_world_every_phase_logged(mini_world):
    manifest = json.loads((mini_world / "manifest.json").read_text())
    assert manifest["format"] == "nextgpt-toy-world" and manifest["rebuild"] == "make toy-world"
    assert set(manifest["modalities"]) == set(REAL)
    for phase in ("data", "encoders", "language", "decoder-image", "decoder-video", "decoder-audio", "compose",
                  "targets", "stage1", "stage2", "stage3", "package"):
        assert phase in manifest["phases"], phase
        assert (mini_world / "logs" / f"{phase}.log").is_file(), phase
    shipped = set(manifest["files"])
    assert "imagebind.safetensors" in shipped and "nextgpt/manifest.json" in shipped and "llm/config.json" in shipped
    assert any(f.startswith("decoders/video/unet/") for f in shipped)
    assert not any(f.startswith(("work/", "logs/")) for f in shipped)
    assert manifest["versions"]["torch"] and manifest["settings"]["scale"] == "mini"


def test_mini_world_answers_through_the_public_api(mini_world, real_registry, tmp_path):
    from nextgpt_core import Conversation, Media, NextGPT

    model = NextGPT.from_composition(mini_world / "toy.toml", registry=real_registry)
    assert model.composition.name == "toy" and model.composition.checkpoint is not None
    picture = tmp_path / "in.png"
    model.media_io("image").write(model.media_io("image").example(), picture)
    conversation = Conversation.from_prompt("What is in this picture?", [Media.from_path(picture)])
    reply = model.generate(conversation, want=["video"], seed=0, max_new_tokens=40)  # a video run is 24 signal tokens
    assert [m.modality for m in reply.media] == ["video"]
    assert reply.media[0].data.frames.shape == (8, 32, 32, 3)


def test_a_missing_or_corrupted_weights_file_is_one_line_naming_it(mini_world, tmp_path):
    world = tmp_path / "copy"
    shutil.copytree(mini_world, world, ignore=shutil.ignore_patterns("work", "logs"))
    unet = next((world / "decoders" / "image" / "unet").glob("*.safetensors"))
    unet.write_bytes(unet.read_bytes()[:-10] + b"0123456789")
    done = _nextgpt("generate", "--composition", str(world / "toy.toml"), "--prompt", "hi", "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "corrupted" in done.stderr and unet.name in done.stderr and "make toy-world" in done.stderr
    unet.unlink()
    done = _nextgpt("generate", "--composition", str(world / "toy.toml"), "--prompt", "hi", "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "missing" in done.stderr and unet.name in done.stderr, done.stderr


def test_mini_eval_writes_results_and_report(mini_world, tmp_path):
    out = tmp_path / "eval"
    done = _nextgpt("eval", "--composition", str(mini_world / "toy.toml"), "--out", str(out), "--limit", "1",
                    "--variant", "model", "--variant", "ceiling")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert {"describe/image", "generate/video", "multi"} <= set(results["tasks"])
    for task, entry in results["tasks"].items():
        assert entry["model"]["n"] == 1 and 0 <= entry["model"]["accuracy"] <= 1
    assert "| task |" in (out / "report.md").read_text()
    done = _nextgpt("eval", "compare", str(out), str(out / "results.json"))  # a run against itself: nothing flips
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.split() and line.split()[0] in {*results["tasks"], "all"}]
    assert len(rows) == len(results["tasks"]) + 1 and all(line.endswith("same") for line in rows), done.stdout


_INTERRUPTED = """
import atexit, sys
from nextgpt_core.eval import toy
real, calls = toy._Runner.run, []
def run(self, sample):
    calls.append(sample.sample_id)
    if len(calls) == STOP_AT:
        raise KeyboardInterrupt  # a user's Ctrl-C on the STOP_AT-th sample
    real(self, sample)
toy._Runner.run = run
atexit.register(lambda: print("RUNS", len(calls)))
from nextgpt_core.cli import main
sys.argv = ["nextgpt", *sys.argv[1:]]
sys.exit(main())
"""


def test_an_interrupted_eval_resumes_without_rerunning_a_finished_sample(mini_world, tmp_path):
    """Ctrl-C on the 4th sample: no results folder, a journal of the 3 finished ones; --resume runs only the rest
    and gives the numbers of an uninterrupted run; the journal goes when the results land."""
    from nextgpt_core.eval.journal import journal_path

    def run(out: Path, *extra: str, stop_at: int = 0) -> subprocess.CompletedProcess[str]:
        args = ["eval", "--composition", str(mini_world / "toy.toml"), "--out", str(out), "--limit", "1",
                "--variant", "model", *extra]
        return subprocess.run([sys.executable, "-c", _INTERRUPTED.replace("STOP_AT", str(stop_at)), *args],
                              capture_output=True, text=True, env=ENV, timeout=900)

    out = tmp_path / "eval"
    done = run(out, stop_at=4)
    assert done.returncode != 0 and not out.exists()
    journal = journal_path(out)
    assert len((journal / "journal.jsonl").read_text().splitlines()) == 1 + 3  # the header and 3 samples
    done = run(out, "--limit", "2", "--resume")  # other options: refused, nothing changed
    assert done.returncode == 2 and "--resume" in done.stderr and "per_task" in done.stderr, done.stderr
    done = run(out, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.loads((out / "results.json").read_text())
    total = sum(entry["model"]["n"] for entry in resumed["tasks"].values())
    assert "resuming: 3 finished samples" in done.stdout and f"RUNS {total - 3}" in done.stdout
    assert resumed["resumed"] == {"model": 3} and not journal.exists()
    clean = tmp_path / "clean"
    assert run(clean).returncode == 0
    assert json.loads((clean / "results.json").read_text())["tasks"] == resumed["tasks"]
    assert (out / "examples.png").is_file()


def test_a_custom_jsonl_suite_scores_each_row_by_its_checks(mini_world, tmp_path):
    """An integrator's suite on the mini world: rows whose checks must hold (a wanted modality is made; a word
    that no reply contains is missing) and a read-back check; a bad file is one line before the model loads."""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "black.png")
    rows = [
        {"id": "draw", "task": "made", "turns": ["Draw a red circle."], "want": ["image"],
         "expect": {"modalities": ["image"], "not_contains": ["zzqqxx"]}},
        {"id": "look", "task": "made", "turns": [{"text": "What is in this picture?", "media": ["black.png"]}],
         "expect": {"not_contains": ["zzqqxx"]}},
        {"id": "word", "task": "words", "turns": ["Hello."], "expect": {"contains": ["zzqqxx"]}},
        {"id": "paint", "task": "words", "turns": ["Draw a blue square.", "Now make it green."], "want": ["image"],
         "expect": {"read_back": {"image": {"background": "white"}}}},
    ]
    suite = tmp_path / "suite.jsonl"
    suite.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval"
    done = _nextgpt("eval", "--suite", str(suite), "--composition", str(mini_world / "toy.toml"), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["suite"] == "file:suite.jsonl" and results["protocol"]["suite"] == str(suite)
    assert results["tasks"]["made"]["model"]["accuracy"] == 1.0
    by_id = {s["id"]: s for s in results["samples"]["model"]}
    assert by_id["word"]["correct"] is False and by_id["word"]["attributes"] == {"contains:zzqqxx": False}
    (read,) = by_id["paint"]["read_back"]
    assert by_id["paint"]["attributes"] == {"image.background": read.get("background") == "white"}
    assert "rows of" in (out / "report.md").read_text()
    suite.write_text('{"turns": ["hi"], "expect": {"contians": ["x"]}}\n')
    done = _nextgpt("eval", "--suite", str(suite), "--composition", str(mini_world / "toy.toml"), "--out", str(tmp_path / "e2"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "unknown check(s) contians" in done.stderr


def test_retrieval_beside_generation_is_built_with_the_projects_commands_and_scored(mini_world, tmp_path):
    """`nextgpt toy retrieval` on the mini world: a gallery of every combination per generated modality, indexed
    with the world's encoder; a stage-2 run trains the query projectors; `nextgpt eval --variant retrieval` scores
    the items the gallery returns, read back like generated ones."""
    out = tmp_path / "retrieval"
    done = _nextgpt("toy", "retrieval", str(mini_world), "--out", str(out), "--steps", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads((out / "retrieval.json").read_text())
    assert sorted(facts["modalities"]) == ["audio", "image", "video"] and facts["stage2"]["steps"] == 2
    assert sorted(facts["target_media"]) == ["audio", "image", "video"]  # cached once by `nextgpt cache-targets`
    assert "media targets: " in (log := (out / "retrieval.log").read_text()) and "read from the target cache" in log
    assert "at every step" not in log
    assert facts["gallery_image"] == 768 and len(list((out / "gallery" / "image").iterdir())) == 768
    text = (out / "toy-retrieval.toml").read_text()
    assert 'id = "image/retrieval"' in text and 'checkpoint = "${COMPOSITION_DIR}/nextgpt"' in text
    evaluation = tmp_path / "eval"
    done = _nextgpt("eval", "--composition", str(out / "toy-retrieval.toml"), "--out", str(evaluation), "--limit", "1",
                    "--variant", "retrieval")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((evaluation / "results.json").read_text())
    assert results["variants"] == ["retrieval"]
    scored = results["samples"]["retrieval"]
    assert {s["task"] for s in scored} >= {"generate/image", "generate/video", "generate/audio"}
    assert all(s["read_back"] and "background" in s["read_back"][0] for s in scored if s["task"] == "generate/image")
    done = _nextgpt("toy", "retrieval", str(mini_world), "--out", str(out))  # not a new folder
    assert done.returncode == 2 and "not empty" in done.stderr


def test_build_never_writes_into_a_folder_it_did_not_make(tmp_path, mini_world):
    (tmp_path / "mine.txt").write_text("keep me")
    done = _nextgpt("toy", "build", "--scale", "mini", "--out", str(tmp_path), "--overwrite")
    assert done.returncode == 2 and "not a folder nextgpt wrote" in done.stderr, done.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    done = _nextgpt("toy", "build", "--scale", "mini", "--out", ".", cwd=tmp_path)
    assert done.returncode == 2 and "current folder" in done.stderr
    done = _nextgpt("toy", "build", "--scale", "mini", "--out", str(mini_world))  # its own kind: needs --overwrite
    assert done.returncode == 2 and "--overwrite" in done.stderr and (mini_world / "manifest.json").is_file()


def test_install_copies_only_what_ships_and_refuses_a_world_over_the_size_limits(mini_world, tmp_path, monkeypatch):
    """`nextgpt toy install` copies the shipped files (no work/ or logs/) and verifies them; a world with a file
    over the repository's per-file limit is refused and the installed world is left as it was."""
    from nextgpt_core.errors import ConfigError
    from nextgpt_core.toy import recipe

    target = tmp_path / "toy"
    recipe.install_world(mini_world, target)
    assert sorted(p.name for p in target.iterdir()) == sorted(n for n in recipe.SHIPPED if (mini_world / n).exists())
    before = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
    monkeypatch.setattr(recipe, "MAX_FILE_BYTES", 1024)
    with pytest.raises(ConfigError, match=r"keeps each file under .* MiB.*imagebind.safetensors"):
        recipe.install_world(mini_world, target)
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == before
    assert not any(p.name.startswith(".toy.") for p in tmp_path.iterdir())
