"""Folders nextgpt writes, and the one rule for all of them: nothing a user had is lost.

Every command that writes a folder (``convert official``, ``cache-targets``, ``train``, ``generate``, ``demo``,
``chat``) and every API that writes one (:func:`~nextgpt_core.checkpoint.save_checkpoint`,
``Component.save_pretrained``, the trainer's ``step-<k>``) goes through this module:

* :func:`check_output_folder` decides, before any work, whether a target may be written. It refuses the current
  folder or a parent of it, a folder that is or holds an input, a file, and an existing non-empty folder that is
  not this command's own kind of artifact (a :class:`FolderKind`, recognised by its manifest or marker). An
  artifact of its own kind is replaced only with ``overwrite`` (``--overwrite``), and only when every file in it
  is one nextgpt wrote (a user's file dropped into a checkpoint folder is never deleted).
* :func:`atomic_directory` writes a whole folder into a temporary sibling and swaps it into place at the end
  (``renameat2(RENAME_EXCHANGE)`` where Linux has it, else two renames): a process killed at any point leaves the
  target as it was (absent or the previous version) or complete, never half-written. Temporary siblings are named
  ``.<name>.nextgpt-tmp-<pid>-<token>`` / ``.<name>.nextgpt-old-<pid>-<token>``; the next write of the same target
  removes those whose process is gone (and puts back a previous version a crash left aside with no target).
* Folders are made with ``mkdir`` and follow the umask (``tempfile.mkdtemp`` made them 0700).

This module imports no torch: the CLI runs these checks before anything heavy loads.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal

from .errors import NextGPTError

__all__ = [
    "CHECKPOINT",
    "COMPONENT",
    "EVAL_RESULTS",
    "GALLERY_INDEX",
    "KINDS",
    "MARKER",
    "REPLIES",
    "TARGET_CACHE",
    "TINY_WORLD",
    "TOY_WORLD",
    "TRAIN_RUN",
    "FolderKind",
    "OutputFolderError",
    "atomic_directory",
    "check_output_folder",
    "clean_stale_siblings",
    "start_folder",
    "swap_in",
    "temporary_sibling",
    "list_files",
    "not_a_file",
    "not_a_folder",
    "write_marker",
]

#: The marker file of folders without a manifest of their own (reply folders, training runs).
MARKER = ".nextgpt-output.json"
MARKER_FORMAT = "nextgpt-output"
_LIST = 3  # names shown in one error line


class OutputFolderError(NextGPTError):
    """A folder nextgpt was asked to write would destroy something: one line names the folder and why."""


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def list_files(folder: Path) -> list[str]:
    """Every file and link under ``folder`` (not following links), as sorted posix paths relative to it."""
    out = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        rel = Path(root).relative_to(folder)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            out.append((rel / name).as_posix())
    return sorted(out)


@dataclass(frozen=True)
class FolderKind:
    """One kind of folder nextgpt writes.

    Attributes:
        name: what a user calls it ("nextgpt checkpoint"), used in messages.
        recognise: ``folder -> bool``: the folder holds this kind (its manifest or marker says so).
        owned: ``(folder, relative posix path) -> bool``: nextgpt wrote this file as part of the artifact; a
            folder of this kind holding any other file is not replaced (the file is named in the error).
        resume_hint: the option that continues such a folder instead of replacing it (``--resume``), if any.
    """

    name: str
    recognise: Callable[[Path], bool]
    owned: Callable[[Path, str], bool]
    resume_hint: str = ""

    def foreign(self, folder: Path) -> list[str]:
        """Files in ``folder`` that nextgpt did not write as part of this artifact."""
        return [rel for rel in list_files(folder) if not self.owned(folder, rel)]


def _manifest_kind(name: str, format_: str, manifest: str, owned: Callable[[Path, str, dict], bool]) -> FolderKind:
    def recognise(folder: Path) -> bool:
        data = _read_json(folder / manifest)
        return data is not None and data.get("format") == format_

    def is_owned(folder: Path, rel: str) -> bool:
        if rel == manifest:
            return True
        data = _read_json(folder / manifest) or {}
        return bool(owned(folder, rel, data))

    return FolderKind(name=name, recognise=recognise, owned=is_owned)


def _checkpoint_owned(folder: Path, rel: str, manifest: dict) -> bool:
    files = manifest.get("files")
    if isinstance(files, dict) and rel in files:
        return True
    # a trainer step folder also holds the trainer state next to the checkpoint (nextgpt_core.training.trainer)
    return rel in ("trainer_state/state.pt", "trainer_state/state.json")


def _target_cache_owned(folder: Path, rel: str, manifest: dict) -> bool:
    parts = rel.split("/")
    counts, media = manifest.get("counts"), manifest.get("media")
    if len(parts) != 2 or not parts[1].endswith(".safetensors"):
        return False
    if parts[0] == "media-embeddings":  # training.targets.MEDIA_FOLDER: one file per modality with media targets
        return isinstance(media, dict) and parts[1].removesuffix(".safetensors") in media
    return isinstance(counts, dict) and parts[0] in counts


def _component_recognise(folder: Path) -> bool:
    data = _read_json(folder / "config.json")
    return data is not None and isinstance(data.get("target"), str) and "config" in data


CHECKPOINT = _manifest_kind("nextgpt checkpoint", "nextgpt-checkpoint", "manifest.json", _checkpoint_owned)
TARGET_CACHE = _manifest_kind("nextgpt target cache", "nextgpt-target-cache", "manifest.json", _target_cache_owned)
TINY_WORLD = _manifest_kind("tiny-world weights", "nextgpt-tiny-world", "manifest.json",
                            lambda folder, rel, m: rel == "llm.safetensors")
GALLERY_INDEX = _manifest_kind("nextgpt gallery index", "nextgpt-gallery-index", "manifest.json",
                               lambda folder, rel, m: rel == "embeddings.safetensors")
COMPONENT = FolderKind(
    name="saved nextgpt component",
    recognise=_component_recognise,
    owned=lambda folder, rel: rel in ("config.json", "model.safetensors"),
)


def _marker(folder: Path) -> dict | None:
    data = _read_json(folder / MARKER)
    return data if data is not None and data.get("format") == MARKER_FORMAT else None


def _replies_owned(folder: Path, rel: str) -> bool:
    if rel == MARKER:
        return True
    files = (_marker(folder) or {}).get("files")
    return isinstance(files, list) and rel in files


_STEP = re.compile(r"^step-\d+$")


def _train_run_recognise(folder: Path) -> bool:
    marker = _marker(folder)
    if marker is not None:
        return marker.get("kind") == "train-run"
    return (folder / "trainable.json").is_file()  # runs written before the marker existed


def _train_run_owned(folder: Path, rel: str) -> bool:
    marker = _marker(folder) or {}
    top = rel.split("/")[0]
    if rel in (MARKER, "trainable.json", marker.get("metrics_file", "metrics.jsonl")):
        return True
    if top == marker.get("tracker_project", "nextgpt") and "/" in rel:
        return True  # tracker logs (accelerate's project_dir/<project>)
    if _STEP.match(top) and "/" in rel:
        step = folder / top
        return CHECKPOINT.recognise(step) and CHECKPOINT.owned(step, rel.split("/", 1)[1])
    return _is_our_temp(top)


#: A folder of replies written by ``generate``, ``demo`` or ``chat`` (its marker lists the files).
REPLIES = FolderKind(name="nextgpt output folder", recognise=lambda f: (_marker(f) or {}).get("kind") == "replies",
                     owned=_replies_owned)
#: A training run's ``--out``: ``trainable.json``, the metrics, ``step-<k>/`` checkpoints.
TRAIN_RUN = FolderKind(name="nextgpt training run", recognise=_train_run_recognise, owned=_train_run_owned,
                       resume_hint="--resume to continue it")
#: A toy world (``nextgpt toy build``): its shipped files, its logs and work, recognised by its manifest or, while it
#: is being written, by its marker (kind ``toy-world``).
_TOY_WORLD_TOP = ("toy.toml", "manifest.json", "imagebind.safetensors", "llm", "decoders", "nextgpt", "logs", "work")
TOY_WORLD = FolderKind(
    name="toy world",
    recognise=lambda f: (_read_json(f / "manifest.json") or {}).get("format") == "nextgpt-toy-world"
    or (_marker(f) or {}).get("kind") == "toy-world",
    owned=lambda folder, rel: rel == MARKER or rel.split("/")[0] in _TOY_WORLD_TOP,
)
#: The results of ``nextgpt eval`` (its marker lists the files).
EVAL_RESULTS = FolderKind(name="nextgpt evaluation", recognise=lambda f: (_marker(f) or {}).get("kind") == "eval",
                          owned=_replies_owned)
KINDS: tuple[FolderKind, ...] = (CHECKPOINT, TARGET_CACHE, TRAIN_RUN, REPLIES, COMPONENT, TINY_WORLD, GALLERY_INDEX,
                                 TOY_WORLD, EVAL_RESULTS)


def write_marker(folder: Path, kind: str, files: Iterable[str] = (), **extra: object) -> None:
    """Write ``folder/.nextgpt-output.json``: ``{"format", "kind", "files", ...}`` (files relative to ``folder``)."""
    payload = {"format": MARKER_FORMAT, "kind": kind, "files": sorted(set(files)), **extra}
    (Path(folder) / MARKER).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def not_a_file(path: "str | os.PathLike[str]") -> str | None:
    """Why ``path`` is not a readable file: ``"not found"``, ``"is a folder, not a file"`` or ``"is not a regular
    file"`` (a device, a socket, a FIFO); ``None`` when it is a file (or a link to one). For one-line errors of every
    reader: a folder given where a file is expected is named as a folder."""
    p = Path(path)
    if p.is_file():
        return None
    if p.is_dir():
        return "is a folder, not a file"
    if os.path.lexists(p) and not p.exists():
        return "not found (a broken symbolic link)"
    return "is not a regular file" if p.exists() else "not found"


def not_a_folder(path: "str | os.PathLike[str]") -> str | None:
    """Why ``path`` is not a folder: ``"not found"`` or ``"is a file, not a folder"``; ``None`` for a folder."""
    p = Path(path)
    if p.is_dir():
        return None
    return "is a file, not a folder" if p.exists() else "not found"


# ---------------------------------------------------------------------------------------------- checks
def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _show(path: "str | os.PathLike[str]", option: str | None) -> str:
    return f"{option} {os.fspath(path)}" if option else os.fspath(path)


def _listing(names: list[str]) -> str:
    more = f" and {len(names) - _LIST} more" if len(names) > _LIST else ""
    return ", ".join(names[:_LIST]) + more


State = Literal["absent", "empty", "own"]


def check_output_folder(
    target: "str | os.PathLike[str]",
    kind: FolderKind | None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Iterable["str | os.PathLike[str] | None"] = (),
    option: str | None = None,
) -> State:
    """May ``target`` be written as a ``kind`` folder? Returns ``"absent"``, ``"empty"`` or ``"own"`` (an artifact
    of this kind that ``overwrite`` or ``resume`` allows), else raises :class:`OutputFolderError`.

    Refused whatever the options: the current folder or a parent of it; a folder that is an input or holds one
    (``inputs``: files or folders the command reads); a path that exists and is not a folder; a non-empty folder
    that is not of ``kind`` (``kind=None``: every non-empty folder); a folder of ``kind`` holding files nextgpt
    did not write. Refused without ``overwrite`` (or ``resume``): a folder of ``kind``.

    First, the leftovers of an earlier write of ``target`` that was killed are cleaned
    (:func:`clean_stale_siblings`), so a previous version it had moved aside is judged, not lost.

    Args:
        option: the command-line option to name in the message (``"--out"``); messages name the path alone
            without it.
    """
    shown = _show(target, option)
    path = Path(os.path.abspath(os.fspath(target)))
    real = path.resolve()
    clean_stale_siblings(real)  # what a killed earlier write left: its previous version is put back first
    cwd = Path.cwd().resolve()
    if _is_within(cwd, real):
        what = "is the current folder" if real == cwd else "contains the current folder"
        raise OutputFolderError(f"{shown}: {what}; nextgpt never replaces it (choose a new folder)")
    for item in inputs:
        if item is None or str(item) == "":
            continue
        source = Path(os.path.abspath(os.fspath(item))).resolve()
        if _is_within(source, real):
            what = "is" if source == real else "contains"
            raise OutputFolderError(f"{shown}: {what} the input {os.fspath(item)}; choose a folder that holds no input")
    if not os.path.lexists(path):
        return "absent"
    if not real.is_dir():
        raise OutputFolderError(f"{shown}: exists and is not a folder; nextgpt does not replace it (choose a new folder)")
    try:
        entries = [e for e in os.listdir(real)]
    except OSError as exc:
        raise OutputFolderError(f"{shown}: cannot be listed ({exc.strerror or exc})") from exc
    if not entries:
        return "empty"
    if kind is None or not kind.recognise(real):
        other = next((k for k in KINDS if k is not kind and k.recognise(real)), None)
        if other is not None:
            want = f", not a {kind.name}" if kind is not None else ""
            raise OutputFolderError(f"{shown}: holds a {other.name}{want}; refusing to write there (choose another folder)")
        raise OutputFolderError(
            f"{shown}: is not empty ({_listing(sorted(entries))}) and not a folder nextgpt wrote; refusing to "
            "write there (choose a new or empty folder)"
        )
    foreign = kind.foreign(real)
    if foreign:
        raise OutputFolderError(
            f"{shown}: holds a {kind.name} but also {_listing(foreign)}, which nextgpt did not write; refusing to "
            "replace it (move those files out, or choose another folder)"
        )
    if overwrite or resume:
        return "own"
    hint = f"pass {kind.resume_hint} or --overwrite to replace it" if kind.resume_hint else "pass --overwrite to replace it"
    raise OutputFolderError(f"{shown}: already holds a {kind.name}; {hint} (or choose another folder)")


# ---------------------------------------------------------------------------------------------- temporary siblings
_TEMP = re.compile(r"^\.(?P<name>.+)\.nextgpt-(?P<what>tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$")
_LEGACY_TMP = re.compile(r"^\.(?P<name>.+)\.tmp-[a-z0-9_]{8}$")  # tempfile.mkdtemp names of earlier versions
_LEGACY_OLD = re.compile(r"^\.(?P<name>.+)\.old-(?P<pid>\d+)$")


def _is_our_temp(name: str) -> bool:
    return bool(_TEMP.match(name) or _LEGACY_TMP.match(name) or _LEGACY_OLD.match(name))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sibling(target: Path, what: str) -> Path:
    return target.with_name(f".{target.name}.nextgpt-{what}-{os.getpid()}-{secrets.token_hex(4)}")


def temporary_sibling(target: "str | os.PathLike[str]") -> Path:
    """A new, empty hidden folder beside ``target`` named as this module's temporaries (a killed writer's are
    removed by the next write of ``target``), for writers that manage the swap themselves (:func:`swap_in`)."""
    path = Path(os.path.abspath(os.fspath(target))).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    os.mkdir(tmp)
    return tmp


def clean_stale_siblings(target: "str | os.PathLike[str]") -> list[Path]:
    """Remove the temporary siblings of ``target`` that an earlier, killed run left (their process is gone).

    A previous version moved aside by a run killed between its two renames is put back as ``target`` when
    ``target`` is missing. Returns the paths removed or restored. Only names of nextgpt's own pattern are touched.
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return []
    touched = []
    for entry in sorted(parent.iterdir()):
        match = _TEMP.match(entry.name) or _LEGACY_TMP.match(entry.name) or _LEGACY_OLD.match(entry.name)
        if match is None or match.group("name") != target.name or entry.is_symlink() or not entry.is_dir():
            continue
        pid = match.groupdict().get("pid")
        if pid is not None and _alive(int(pid)):
            continue
        is_old = match.groupdict().get("what") == "old" or _LEGACY_OLD.match(entry.name) is not None
        try:
            if is_old and not os.path.lexists(target):
                os.rename(entry, target)  # a kill between "target -> old" and "tmp -> target": the old one comes back
            else:
                shutil.rmtree(entry)
        except OSError:  # another process cleaned it first
            continue
        touched.append(entry)
    return touched


# ---------------------------------------------------------------------------------------------- atomic swap
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc: object | None = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); ``False`` where unavailable."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            _libc = False
    fn = getattr(_libc, "renameat2", None) if _libc else None
    if fn is None:
        return False
    res = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if res == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # the file system does not support the flag
    raise OSError(err, os.strerror(err), os.fspath(b))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(dirpath))


def _swap_in(tmp: Path, target: Path) -> None:
    """Put the complete ``tmp`` at ``target``; the previous ``target`` (if any) is removed afterwards."""
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    if _exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous version
        return
    old = _sibling(target, "old")
    os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def swap_in(tmp: "str | os.PathLike[str]", target: "str | os.PathLike[str]") -> None:
    """Put the complete folder ``tmp`` (a :func:`temporary_sibling`) at ``target`` in one step, fsynced; the previous
    ``target`` is removed afterwards."""
    tmp_path = Path(tmp)
    path = Path(os.path.abspath(os.fspath(target))).resolve()
    _fsync_tree(tmp_path)
    _swap_in(tmp_path, path)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_directory(
    target: "str | os.PathLike[str]",
    kind: FolderKind | None = None,
    *,
    overwrite: bool = True,
    inputs: Iterable["str | os.PathLike[str] | None"] = (),
    option: str | None = None,
) -> Iterator[Path]:
    """Yield an empty temporary sibling folder that replaces ``target`` only if the block succeeds.

    ``target`` is checked with :func:`check_output_folder` before the block (so a refused target costs no work)
    and again just before the swap. A crash or an exception inside the block leaves ``target`` exactly as it was
    (absent or the previous version); the temporary folder is removed on the way out, and a killed process's
    leftovers are removed by the next write of the same target (:func:`clean_stale_siblings`).

    Args:
        kind: the kind of folder written; an existing ``target`` of another kind, or with files nextgpt did not
            write, is never replaced. ``None``: only an absent or empty ``target`` is written.
        overwrite: replace an existing ``target`` of ``kind`` (the API's default); the CLI passes ``--overwrite``.
        inputs: paths the writer reads; ``target`` may not be or contain one.
        option: the command-line option named in errors.
    """
    inputs = tuple(inputs)
    path = Path(os.path.abspath(os.fspath(target))).resolve()
    check_output_folder(target, kind, overwrite=overwrite, inputs=inputs, option=option)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    os.mkdir(tmp)  # mode 0o777 minus the umask
    try:
        yield tmp
        _fsync_tree(tmp)
        check_output_folder(target, kind, overwrite=overwrite, inputs=inputs, option=option)
        _swap_in(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def start_folder(
    target: "str | os.PathLike[str]",
    kind: FolderKind,
    *,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Iterable["str | os.PathLike[str] | None"] = (),
    option: str | None = None,
) -> State:
    """Prepare a folder that is written incrementally (a training run, a chat session).

    Checks ``target`` (:func:`check_output_folder`), then: absent -> created (following the umask); ``"own"`` with
    ``resume`` -> kept as it is; ``"own"`` with ``overwrite`` (and not ``resume``) -> the previous artifact is
    moved aside and removed, and an empty folder takes its place. Returns the state found.
    """
    state = check_output_folder(target, kind, overwrite=overwrite, resume=resume, inputs=inputs, option=option)
    path = Path(os.path.abspath(os.fspath(target))).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    if state == "own" and not resume:
        old = _sibling(path, "old")
        os.rename(path, old)
        os.mkdir(path)
        shutil.rmtree(old, ignore_errors=True)
    elif state == "absent":
        os.mkdir(path)
    return state
