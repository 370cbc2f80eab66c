"""``nextgpt chat``: a multi-turn conversation with one loaded model in the terminal.

Each line you type is one user turn; the whole history (your text and attachments, the replies' text and the
media they generated) is sent with every request, so generated media are encoded again as inputs of the next
turn (see :mod:`nextgpt_core.conversation`). Reply text is printed as it streams; generated media are written
under ``--out`` (one folder per reply) and their paths printed.

Commands (a line starting with ``/``)::

    /attach PATH | MODALITY=PATH   attach a file to your next message (repeatable)
    /want MOD [MOD ...]            the replies must contain these output modalities (until /want none)
    /want                          show what is wanted;  /want none  clears it
    /seed N                        seed of the next reply (later replies count up from it)
    /reset                         forget the history and pending attachments
    /help                          this list
    /quit                          leave (end of input does the same)

``@PATH`` or ``@MODALITY=PATH`` inside a message attaches that file too: ``@cat.png what is this?``.
Bad input (an unknown command or modality, a missing or unreadable file) prints one ``error:`` line on stderr
and the chat goes on with its history unchanged.

This module imports no torch at import time (``nextgpt --help`` must stay fast); the model loads in :func:`chat`.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from .errors import NextGPTError

__all__ = ["ChatSession", "ChatInputError", "chat"]

_MODALITY_PREFIX = re.compile(r"^([a-z][a-z0-9_]*)=(.+)$")

HELP = """commands:
  /attach PATH | MODALITY=PATH   attach a file to your next message (or write @PATH in the message)
  /want MOD [MOD ...]            replies must contain these modalities (/want none clears, /want shows)
  /seed N                        seed of the next reply
  /reset                         forget the history
  /help                          this list
  /quit                          leave"""


class ChatInputError(NextGPTError):
    """A line the chat cannot act on (unknown command, bad argument); printed as one ``error:`` line."""


class ChatSession:
    """A terminal conversation over one loaded :class:`~nextgpt_core.model.NextGPT`.

    Args:
        model: the loaded model (anything with ``generate``, ``registry``, ``media_io``, ``input_modalities``
            and ``output_modalities``).
        out: folder for the replies; reply ``k`` (counted from 1 over the whole session) goes to ``out/reply_<k>``.
            It must be absent, empty, or an earlier chat's folder (replaced at the first reply when ``overwrite``);
            any other folder is refused (:class:`~nextgpt_core.folders.OutputFolderError`).
        seed: seed of the first reply; reply ``k`` then uses ``seed + k - 1``. ``None``: each reply draws one.
        max_new_tokens: override the composition's reply budget.
        echo / echo_err: where output and error lines go (``typer.echo`` by default).
    """

    def __init__(
        self,
        model: Any,
        out: Path,
        *,
        seed: Optional[int] = None,
        max_new_tokens: Optional[int] = None,
        echo: Callable[..., None] = typer.echo,
        overwrite: bool = False,
    ) -> None:
        from .conversation import Conversation

        self.model = model
        self.out = Path(out)
        self.next_seed = seed
        self.max_new_tokens = max_new_tokens
        self.echo = echo
        self.conversation = Conversation()
        self.pending: list[Any] = []  # Media attached for the next message
        self.want: list[str] = []
        self.replies = 0
        self.overwrite = overwrite
        self._saved: list[str] = []  # files of this session, relative to ``out`` (the folder's marker lists them)

    # ------------------------------------------------------------------ input lines
    def handle(self, line: str) -> bool:
        """Act on one input line; returns ``False`` when the chat should end.

        Raises:
            ChatInputError, NextGPTError, RegistryError: bad input; nothing has changed (the caller prints it).
        """
        text = line.strip()
        if not text:
            return True
        if text.startswith("/"):
            return self._command(text)
        self.send(text)
        return True

    def _command(self, text: str) -> bool:
        name, _, rest = text.partition(" ")
        rest = rest.strip()
        if name in ("/quit", "/exit"):
            return False
        if name == "/help":
            self.echo(HELP)
        elif name == "/attach":
            if not rest:
                raise ChatInputError("/attach needs a file: /attach PATH or /attach MODALITY=PATH")
            for word in _split(rest):
                self._attach(word)
        elif name == "/want":
            self.set_want(rest.split())
        elif name == "/seed":
            try:
                self.next_seed = int(rest)
            except ValueError:
                raise ChatInputError(f"/seed needs an integer, got {rest!r}") from None
            self.echo(f"seed: {self.next_seed}")
        elif name == "/reset":
            from .conversation import Conversation

            self.conversation = Conversation()
            self.pending = []
            self.echo("history cleared")
        else:
            raise ChatInputError(f"unknown command {name!r}; type /help for the list")
        return True

    def set_want(self, keys: list[str]) -> None:
        """The modalities every following reply must make (``/want image audio``); ``["none"]`` lets the model
        decide, ``[]`` only prints the current setting.

        Raises:
            ChatInputError: a key the model cannot generate.
        """
        if keys == ["none"]:
            self.want = []
        elif keys:
            outputs = self.model.output_modalities()
            for key in keys:
                if key not in outputs:
                    raise ChatInputError(
                        f"cannot generate {key!r}; outputs: {', '.join(outputs) or '(none)'}"
                    )
            self.want = list(dict.fromkeys(keys))
        self.echo(f"want: {', '.join(self.want) or '(nothing: the model decides)'}")

    def _attach(self, value: str) -> None:
        media = self._media(value)
        self.pending.append(media)
        self.echo(f"attached {media.modality}: {media.path}")

    def _media(self, value: str) -> Any:
        """A :class:`Media` for ``PATH`` or ``MODALITY=PATH``, read once here so a bad file fails now."""
        from .conversation import Media

        match = _MODALITY_PREFIX.match(value)
        if match and not Path(value).expanduser().exists():
            key: Optional[str] = match.group(1)
            path = Path(match.group(2)).expanduser()
        else:
            key, path = None, Path(value).expanduser()
        from .folders import not_a_file

        why = not_a_file(path)
        if why:
            raise ChatInputError(f"file not found: {str(path)!r}" if why == "not found" else f"{str(path)!r} {why}")
        registry = self.model.registry
        if key is not None:
            registry.modality(key)  # an unknown modality lists the registered ones
        else:
            key = registry.modality_for_path(path)
        inputs = self.model.input_modalities()
        if key not in inputs:
            raise ChatInputError(f"{key!r} is not an input of this model; inputs: {', '.join(inputs) or '(none)'}")
        self.model.media_io(key).read(path)  # MediaError (one line naming the file) for a corrupt file
        return Media.from_path(path, modality=key)

    # ------------------------------------------------------------------ one turn
    def send(self, text: str) -> Any:
        """Send one message (``@PATH`` words become attachments) with the pending attachments; prints the reply.

        Returns:
            The :class:`~nextgpt_core.conversation.Response`. On an error the history is left as it was before.
        """
        words: list[str] = []
        attached = []
        for word in text.split(" "):
            if word.startswith("@") and len(word) > 1:
                attached.append(self._media(word[1:]))
            else:
                words.append(word)
        prompt = " ".join(words).strip()
        media = [*self.pending, *attached]
        if not prompt and not media:
            raise ChatInputError("empty message")
        parts = [*media, *([prompt] if prompt else [])]  # media first, then text: the official layout
        self.conversation.user(*parts)
        seed = self.next_seed
        streamed: list[str] = []

        def on_text(piece: str) -> None:
            if not streamed:
                self.echo("nextgpt: ", nl=False)
            streamed.append(piece)
            self.echo(piece, nl=False)

        try:
            response = self.model.generate(
                self.conversation, want=self.want, seed=seed, max_new_tokens=self.max_new_tokens, on_text=on_text
            )
        except BaseException:
            self.conversation.turns.pop()
            if streamed:
                self.echo("")
            raise
        self.pending = []
        if self.next_seed is not None:
            self.next_seed += 1
        self.replies += 1
        if streamed:
            self.echo("")
        else:
            self.echo(f"nextgpt: {response.text}")
        paths = self._save(response)  # sets each media part's path
        for notice in response.notices:
            self.echo(f"note: {notice}", err=True)
        for part in response.media:
            self.echo(f"saved {part.modality}: {part.path}")
        self.echo(f"(seed {response.seed}; reply text in {paths[-1]})")
        self.conversation.add_response(response)  # generated media are inputs of the next turn
        return response

    def _save(self, response: Any) -> list[Path]:
        """Write reply ``k`` to ``out/reply_<k>`` (atomically) and list it in the session folder's marker; the
        session folder is checked (and, with ``overwrite``, an earlier chat's replaced) at the first reply."""
        from .folders import REPLIES, start_folder, write_marker

        if not self._saved:
            start_folder(self.out, REPLIES, overwrite=self.overwrite)
        name = f"reply_{self.replies}"
        paths = response.save(self.out / name, self.model.registry, overwrite=False)
        self._saved += [f"{name}/{p.relative_to(self.out / name).as_posix()}" for p in paths]
        self._saved.append(f"{name}/.nextgpt-output.json")
        write_marker(self.out, "replies", self._saved)
        return paths

    # ------------------------------------------------------------------ the loop
    def run(self, read_line: Callable[[str], str] = input) -> None:
        """Read lines until ``/quit`` or end of input; bad input prints one ``error:`` line and the chat goes on."""
        from nextgpt_registry import RegistryError

        while True:
            try:
                line = read_line("you> ")
            except (EOFError, KeyboardInterrupt):
                self.echo("")
                return
            try:
                if not self.handle(line):
                    return
            except (NextGPTError, RegistryError) as exc:
                self.echo(f"error: {exc}", err=True)
            except KeyboardInterrupt:
                self.echo("(interrupted; that message was dropped)", err=True)


def _split(rest: str) -> list[str]:
    try:
        return shlex.split(rest)
    except ValueError as exc:
        raise ChatInputError(f"cannot read {rest!r}: {exc}") from exc


def chat(
    composition: str = typer.Option("toy", "--composition", "-c", help="Built-in name (toy: the trained toy world; tiny: random weights) or TOML path."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Trained weights (a nextgpt checkpoint folder)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the first reply (later replies count up)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Override the composition's budget."),
    want: list[str] = typer.Option([], "--want", "-w", help="A modality every reply must contain (repeatable)."),
    out: Path = typer.Option(Path("outputs/chat"), "--out", "-o", help="Folder for the replies' text and media."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it holds an earlier chat's replies (never any other folder)."),
) -> None:
    """Chat in the terminal: multi-turn history, attachments (/attach PATH or @PATH), /want image, /reset, /quit."""
    from .composition import load_composition
    from .folders import REPLIES, check_output_folder

    load_composition(composition)  # a malformed composition fails before anything heavy loads
    if checkpoint is not None and not checkpoint.is_dir():
        from .folders import not_a_folder

        why = not_a_folder(checkpoint)
        raise ChatInputError(f"checkpoint folder not found: {str(checkpoint)!r}" if why == "not found"
                             else f"--checkpoint {str(checkpoint)!r} {why}")
    comp_file = Path(composition) if Path(composition).suffix == ".toml" or Path(composition).exists() else None
    check_output_folder(out, REPLIES, overwrite=overwrite, inputs=[checkpoint, comp_file], option="--out")
    from .model import NextGPT

    model = NextGPT.from_composition(composition, checkpoint=checkpoint)
    try:  # line editing and history at an interactive prompt
        import readline  # noqa: F401
    except ImportError:  # pragma: no cover - not on every platform
        pass
    session = ChatSession(model, out, seed=seed, max_new_tokens=max_new_tokens, overwrite=overwrite)
    if want:
        session.set_want(list(want))
    inputs = ", ".join(model.input_modalities()) or "(none)"
    outputs = ", ".join(model.output_modalities()) or "(none)"
    typer.echo(f"nextgpt chat: composition {model.composition.name!r}; inputs: text, {inputs}; outputs: text, {outputs}")
    typer.echo("type a message, /help for commands, /quit to leave")
    session.run()
