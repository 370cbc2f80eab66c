"""No command destroys what a user had (nextgpt_core.folders): every folder-writing command refuses a user's folder,
the current folder, a parent of it, a folder holding an input and a file; replaces its own kind of artifact only
with --overwrite (and only when every file in it is its own); a killed write leaves the old or the new folder,
never half of one, and the next write removes the leftovers; folders follow the umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nextgpt_core import folders
from nextgpt_core.cli import app
from nextgpt_core.folders import OutputFolderError, atomic_directory, check_output_folder, clean_stale_siblings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def data(tmp_path, registry):
    """A dataset (JSONL + one media file) in its own folder: one stage-2 row and one stage-1 row."""
    from nextgpt_fake.media import FakeImageIO

    folder = tmp_path / "data"
    folder.mkdir()
    FakeImageIO().write(np.full((8, 8), 0.5, dtype=np.float32), folder / "m0.fimg")
    rows = [
        {"id": "g", "turns": [{"role": "user", "parts": [{"text": "show me a red square"}]},
                              {"role": "assistant", "parts": [{"generate": "fake_image", "caption": "a red square"}]}]},
        {"id": "c", "turns": [{"role": "user", "parts": [{"media": "m0.fimg"}, {"text": "caption"}]},
                              {"role": "assistant", "parts": [{"text": "a red square"}]}]},
    ]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "data.jsonl"


#: every folder-writing command of the fake-plugin CLI: (argument list for --out D, stdin)
COMMANDS = {
    "generate": (lambda data, out: ["generate", "-c", "tiny", "-p", "hi", "--max-new-tokens", "4", "--seed", "1", "--out", out], None),
    "demo": (lambda data, out: ["demo", "-c", "tiny", "--out", out], None),
    "chat": (lambda data, out: ["chat", "-c", "tiny", "--max-new-tokens", "4", "--seed", "1", "--out", out], "hi\n"),
    "cache-targets": (lambda data, out: ["cache-targets", "--data", str(data), "--out", out], None),
    "train": (lambda data, out: ["train", "--stage", "1", "--data", str(data), "--steps", "1", "--out", out], None),
}


def _run(command: str, data: Path, out: "str | Path", *extra: str):
    args, stdin = COMMANDS[command]
    return CliRunner().invoke(app, [*args(data, str(out)), *extra], input=stdin)


def _error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _snapshot(folder: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every path under ``folder`` (the folder itself included) -> (bytes or None for folders, mode)."""
    out = {".": (None, folder.stat().st_mode)}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder))] = (p.read_bytes() if p.is_file() else None, p.stat().st_mode)
    return out


def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.txt").write_text("three years of work")
    (path / "figures").mkdir()
    (path / "figures" / "plot.png").write_bytes(b"\x89PNG user data")
    return path


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_users_folder_is_refused_and_untouched(command, data, tmp_path):
    user = _user_folder(tmp_path / "mine")
    before = _snapshot(user)
    for extra in ((), ("--overwrite",)):
        line = _error_line(_run(command, data, user, *extra))
        assert f"--out {user}: is not empty (figures, thesis.txt) and not a folder nextgpt wrote" in line
        assert _snapshot(user) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "mine"], "no temporary folder left beside it"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_the_current_folder_its_parents_and_inputs_are_refused(command, data, tmp_path, monkeypatch):
    work = data.parent
    monkeypatch.chdir(work)
    before = _snapshot(tmp_path)
    for out, what in ((".", "is the current folder"), (str(work), "is the current folder"),
                      ("..", "contains the current folder"), ("/", "contains the current folder")):
        line = _error_line(_run(command, data, out, "--overwrite"))
        assert f"--out {out}: {what}; nextgpt never replaces it" in line
    assert _snapshot(tmp_path) == before
    monkeypatch.chdir(tmp_path)
    if command in ("cache-targets", "train"):  # they read a dataset: its folder is an input
        line = _error_line(_run(command, data, work, "--overwrite"))
        assert f"--out {work}: contains the input {data}" in line
    assert _snapshot(tmp_path) == before


def test_an_input_file_of_generate_is_protected(registry, fake_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    result = CliRunner().invoke(app, ["generate", "-c", "tiny", "-p", "x", "-i", str(fake_files["image"]), "--out", str(tmp_path), "--overwrite"])
    assert f"contains the input {fake_files['image']}" in _error_line(result)
    assert fake_files["image"].is_file()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_file_is_refused(command, data, tmp_path):
    target = tmp_path / "notes.md"
    target.write_text("keep me")
    line = _error_line(_run(command, data, target, "--overwrite"))
    assert f"--out {target}: exists and is not a folder" in line
    assert target.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.md"]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_own_kind_is_replaced_only_with_overwrite_and_only_when_all_of_it_is_ours(command, data, tmp_path):
    out = tmp_path / "out"
    first = _run(command, data, out)
    assert first.exit_code == 0, first.output
    hint = "pass --resume to continue it or --overwrite" if command == "train" else "pass --overwrite to replace it"
    line = _error_line(_run(command, data, out))
    assert f"--out {out}: already holds a nextgpt " in line and hint in line
    again = _run(command, data, out, "--overwrite")
    assert again.exit_code == 0, again.output
    (out / "my-notes.txt").write_text("mine")
    before = _snapshot(out)
    line = _error_line(_run(command, data, out, "--overwrite"))
    assert "but also my-notes.txt, which nextgpt did not write" in line
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out"]


def test_overwrite_replaces_the_whole_earlier_output(registry, tmp_path):
    """A second `generate --overwrite` leaves only its own reply (no file of the first reply survives)."""
    out = tmp_path / "out"
    runner = CliRunner()
    assert runner.invoke(app, ["generate", "-c", "tiny", "-p", "x", "-w", "fake_image", "-w", "fake_audio", "--seed", "1", "--out", str(out)]).exit_code == 0
    assert (out / "fake_audio_0.faud").is_file()
    assert runner.invoke(app, ["generate", "-c", "tiny", "-p", "x", "-w", "fake_image", "--seed", "1", "--out", str(out), "--overwrite"]).exit_code == 0
    assert not (out / "fake_audio_0.faud").exists() and (out / "fake_image_0.fimg").is_file()


def test_another_kind_of_nextgpt_folder_is_named_and_refused(data, tmp_path):
    run = tmp_path / "run"
    assert _run("train", data, run).exit_code == 0
    line = _error_line(_run("cache-targets", data, run, "--overwrite"))
    assert f"--out {run}: holds a nextgpt training run, not a nextgpt target cache" in line
    assert (run / "step-1" / "manifest.json").is_file()


def test_train_resume_keeps_the_run_and_resume_with_overwrite_is_refused(data, tmp_path):
    run = tmp_path / "run"
    assert _run("train", data, run).exit_code == 0
    assert "exclude each other" in _error_line(_run("train", data, run, "--resume", "--overwrite"))
    result = CliRunner().invoke(app, ["train", "--stage", "1", "--data", str(data), "--steps", "2", "--out", str(run), "--resume"])
    assert result.exit_code == 0, result.output
    assert (run / "step-1").is_dir() and (run / "step-2").is_dir()


def test_api_writers_never_replace_a_foreign_folder(tmp_path, tiny_model):
    user = _user_folder(tmp_path / "mine")
    before = _snapshot(user)
    with pytest.raises(OutputFolderError, match="not a folder nextgpt wrote"):
        tiny_model.save_checkpoint(user)
    with pytest.raises(OutputFolderError, match="not a folder nextgpt wrote"):
        tiny_model.input_projectors[next(iter(tiny_model.input_projectors))].save_pretrained(user)
    assert _snapshot(user) == before
    ckpt = tiny_model.save_checkpoint(tmp_path / "ckpt")
    tiny_model.save_checkpoint(ckpt)  # the API replaces its own kind by default
    with pytest.raises(OutputFolderError, match="already holds a nextgpt checkpoint; pass --overwrite"):
        from nextgpt_core.checkpoint import save_checkpoint

        save_checkpoint(tiny_model, ckpt, overwrite=False)


def test_folders_follow_the_umask(tmp_path, tiny_model, data):
    old = os.umask(0o027)
    try:
        ckpt = tiny_model.save_checkpoint(tmp_path / "ckpt")
        result = CliRunner().invoke(app, ["cache-targets", "--data", str(data), "--out", str(tmp_path / "cache")])
        assert result.exit_code == 0, result.output
        run = _run("train", data, tmp_path / "run")
        assert run.exit_code == 0, run.output
    finally:
        os.umask(old)
    for root in (ckpt, tmp_path / "cache", tmp_path / "run"):
        for p in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(p.stat().st_mode)
            if p.is_dir():
                assert mode == 0o750, (p, oct(mode))  # mkdtemp made 0o700
            else:
                assert mode & 0o027 == 0 and mode & 0o400, (p, oct(mode))


# ---------------------------------------------------------------------------------------------- kills
_WRITER = textwrap.dedent("""
    import os, shutil, signal, sys, json
    from pathlib import Path
    from nextgpt_core import folders

    target, kill_at, version, exchange = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
    events = [0]

    def tick():
        events[0] += 1
        if events[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    if not exchange:
        folders._exchange = lambda a, b: False
    real_rename, real_exchange, real_rmtree = os.rename, folders._exchange, shutil.rmtree
    def rename(a, b):
        tick(); real_rename(a, b); tick()
    def exchange_(a, b):
        tick(); done = real_exchange(a, b); tick(); return done
    def rmtree(path, ignore_errors=False):
        files = sorted(Path(path).rglob("*.safetensors"))
        if files:
            files[0].unlink()   # part of the tree gone, then (maybe) killed
            tick()
        real_rmtree(path, ignore_errors=ignore_errors)
    folders.os.rename = rename
    folders._exchange = exchange_
    folders.shutil.rmtree = rmtree
    with folders.atomic_directory(target, folders.TARGET_CACHE) as tmp:
        tick()
        (tmp / "m").mkdir()
        for i in range(4):
            (tmp / "m" / f"{i}.safetensors").write_text(f"{version} {i}")
            tick()
        (tmp / "manifest.json").write_text(json.dumps({"format": "nextgpt-target-cache", "counts": {"m": 4},
                                                       "version": version}))
        tick()
    print("events", events[0])
""")


def _write(target: Path, kill_at: int, version: str, exchange: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", _WRITER, str(target), str(kill_at), version, "1" if exchange else "0"],
                          capture_output=True, text=True, env=env, timeout=60)


def _version(folder: Path) -> str:
    """'old' or 'new' when ``folder`` is one complete version; fails on anything half-written."""
    manifest = json.loads((folder / "manifest.json").read_text())
    files = sorted(p.name for p in (folder / "m").iterdir())
    assert files == [f"{i}.safetensors" for i in range(4)], files
    assert {(folder / "m" / f).read_text().split()[0] for f in files} == {manifest["version"]}
    return manifest["version"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_write_killed_at_any_point_leaves_the_old_or_the_new_folder(tmp_path, exchange):
    target = tmp_path / "cache"
    assert _write(target, 0, "old", exchange).returncode == 0
    _write(tmp_path / "count", 0, "x", exchange)
    total = int(_write(tmp_path / "count", 0, "y", exchange).stdout.split()[-1])  # events of a write over a folder
    assert total >= 9
    seen = set()
    for kill_at in range(1, total + 1):
        assert _write(target, 0, "old", exchange).returncode == 0  # reset, and clean what the last kill left
        proc = _write(target, kill_at, "new", exchange)
        assert proc.returncode == -9, (kill_at, proc.stderr)
        if exchange:
            assert target.is_dir(), "with renameat2 the target is never missing"
        else:  # a kill between the two renames leaves no target: the next run puts the previous one back first
            clean_stale_siblings(target)
        seen.add(_version(target))
        assert _write(target, 0, "next", exchange).returncode == 0, "the next run writes after a kill"
        assert _version(target) == "next"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "count"], f"leftovers after a kill at {kill_at}"
    assert seen == {"old", "new"}, seen  # kills before the swap keep the old one, after it the new one


def test_stale_temporaries_are_cleaned_and_a_live_ones_kept(tmp_path):
    target = tmp_path / "ckpt"
    dead = 2**22 + 12345  # above the default pid_max: no such process
    for name in (f".ckpt.nextgpt-tmp-{dead}-0123abcd", ".ckpt.tmp-a1b2c3d4", f".ckpt.old-{dead}",
                 f".ckpt.nextgpt-tmp-{os.getppid()}-0123abcd", ".other.nextgpt-tmp-1-0123abcd", "ckpt-notes"):
        (tmp_path / name).mkdir()
    (tmp_path / f".ckpt.nextgpt-old-{dead}-0123abcd").mkdir()
    (tmp_path / f".ckpt.nextgpt-old-{dead}-0123abcd" / "llm.safetensors").write_text("previous")
    # the target is missing: the previous version a kill left aside comes back; the other stale folders go
    clean_stale_siblings(target)
    assert (target / "llm.safetensors").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".other.nextgpt-tmp-1-0123abcd", f".ckpt.nextgpt-tmp-{os.getppid()}-0123abcd", "ckpt", "ckpt-notes"])


def test_check_output_folder_states(tmp_path):
    assert check_output_folder(tmp_path / "new", folders.CHECKPOINT) == "absent"
    (tmp_path / "empty").mkdir()
    assert check_output_folder(tmp_path / "empty", folders.CHECKPOINT) == "empty"
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "empty")
    assert check_output_folder(link, folders.CHECKPOINT) == "empty"
    with atomic_directory(link, folders.COMPONENT) as tmp:
        (tmp / "config.json").write_text('{"target": "a:B", "config": {}}')
    assert link.is_symlink() and (tmp_path / "empty" / "config.json").is_file(), "the folder a link names is replaced"
