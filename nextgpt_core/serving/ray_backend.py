"""``nextgpt serve --backend ray``: the same HTTP API, with the model split into Ray Serve deployments.

- ``language`` (:class:`LanguageStage`): encoders, input and output projectors, the LLM. It answers a
  conversation with the reply's text (streamed) and, for each completed signal run, the decoder's conditioning
  (the output projectors' tensors) and seed: a :class:`PendingDecode`. It never decodes.
- ``decoder-<modality>`` (:class:`DecoderStage`), one per output modality: only that modality's decoder, built
  from the composition as the in-process model builds it (same seed, same weights). It turns a conditioning into
  the medium (a decoded object: a picture, a clip, samples; no file in between).

The HTTP front (the FastAPI app of :mod:`.app`: admission, limits, timeouts, files, streaming) runs in the
``nextgpt serve`` process and talks to the deployments through Serve handles (:class:`RayModel` stands in for the
in-process ``NextGPT``), so a text-only reply never reaches a decoder replica and each stage has its own replica
count and ``num_cpus`` / ``num_gpus``. A decoder replica that dies during a call is retried once on another (or
the restarted) replica; a second failure is a 503 ``decoder_unavailable``.

``build_app(args)`` is a Serve application builder, so the deployments can also be started with a Serve config
file (``serve deploy``, see docs/serving.md) and the front attached to them with ``--ray-address``.

Requires the ``ray`` extra (``pip install 'nextgpt-core[ray]'``); importing this module imports Ray.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ray import serve

from ..conversation import Conversation, Media, Response, Text, Turn
from ..errors import ConfigError, ConversationError, NextGPTError
from .errors import ServingError
from .stages import LANGUAGE, StageSpec, parse_stage_settings

__all__ = ["APP_NAME", "DecoderStage", "LanguageStage", "PendingDecode", "RayModel", "StageSpec", "build_app",
           "parse_stage_settings"]

#: the Serve application's name
APP_NAME = "nextgpt"


@dataclass
class PendingDecode:
    """A run the language stage completed: the decoder conditioning (CPU tensors), the decoder's seed and options,
    and the decoder's component id (``None``: the modality's first decoder, the one its deployment holds)."""

    modality: str
    conditioning: dict[str, Any]
    seed: int
    options: dict[str, Any] | None = None
    decoder: str | None = None


def _plugins_env() -> dict[str, str]:
    return {k: os.environ[k] for k in ("NEXTGPT_LOAD_PLUGINS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if k in os.environ}


# ---------------------------------------------------------------------------------------------- the deployments
class LanguageStage:
    """Encoders, projectors and the LLM of a composition (no decoder is ever loaded here)."""

    def __init__(self, composition: str, checkpoint: str | None = None) -> None:
        from ..model import NextGPT

        self.model = NextGPT.from_composition(composition, checkpoint=checkpoint)

    def describe(self) -> dict[str, Any]:
        """What the front needs to check requests: modalities, signal-run lengths, the EOS id, the budget."""
        m = self.model
        return {"inputs": list(m.input_modalities()), "outputs": list(m.output_modalities()),
                "signals": {k: len(v) for k, v in m.tokens.signals.items()}, "eos": m.tokenizer.eos_token_id,
                "max_new_tokens": m.composition.generation.max_new_tokens}

    async def generate(self, conversation: Conversation, params: dict[str, Any]) -> Any:
        """Stream ``("text", piece)`` events while the LLM generates, then ``("done", Response)`` whose media are
        :class:`PendingDecode` placeholders (``("error", exc)`` for an input error). A cancelled call (the client
        went away, a timeout) stops the LLM at its next step."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def pending(key: str, conditioning: dict[str, Any], seed: int, options: Mapping[str, Any] | None,
                    decoder: str | None = None) -> Media:
            first = self.model.resolved.modalities[key].decoder.id  # type: ignore[union-attr]
            if decoder not in (None, first):  # a decoder deployment holds its modality's first decoder only
                raise ConversationError(f"the ray backend decodes {key!r} with its first decoder ({first!r}) only, "
                                        f"not {decoder!r}; serve this composition in-process to use its other decoders")
            cpu = {name: tensor.detach().to("cpu") for name, tensor in conditioning.items()}
            return Media(modality=key, data=PendingDecode(key, cpu, seed, dict(options) if options else None, first))

        def work() -> None:
            try:
                response = self.model.generate(conversation, should_stop=stop.is_set, on_text=lambda t: put(("text", t)),
                                               decode=pending, **params)
                put(("done", response))
            except NextGPTError as exc:
                put(("error", exc))
            except BaseException as exc:  # noqa: BLE001 - reported to the front, which answers 500
                put(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))

        thread = threading.Thread(target=work, daemon=True, name="nextgpt-language")
        thread.start()
        try:
            while True:
                item = await queue.get()
                yield item
                if item[0] in ("done", "error"):
                    return
        finally:
            stop.set()  # also on cancellation: the generation stops between steps


class DecoderStage:
    """One output modality's decoder, built and loaded alone."""

    def __init__(self, composition: str, modality: str) -> None:
        from ..composition import resolve_composition
        from ..model import _build
        from ..plugins import get_registry

        resolved = resolve_composition(composition, get_registry())
        spec = resolved.modalities[modality]
        if not spec.can_generate:
            raise ConfigError(f"ray: the composition does not generate {modality!r}")
        comp = resolved.composition
        self.modality = modality
        self.options = dict(spec.decode_options)
        self.decoder_id = spec.decoder.id  # type: ignore[union-attr]
        self.decoder = _build(spec.decoder, comp.seed, f"{modality}/decoder")
        if getattr(type(self.decoder), "targets_from_media", False):
            raise ConfigError(f"ray: {modality!r} is decoded by retrieval ({self.decoder_id}), which needs the "
                              "modality's encoder next to it; serve this composition in-process")
        self.decoder.load()
        self.decoder.to(comp.device)
        self.calls = 0

    async def decode(self, pending: PendingDecode) -> Media:
        """The medium of one completed run (its ``produced_by`` the decoder's id, ``details`` what it reported)."""
        from ..model import decode_with

        self.calls += 1
        options = {**self.options, **(pending.options or {})}
        return await asyncio.to_thread(decode_with, self.decoder, self.modality, pending.conditioning,
                                       seed=pending.seed, options=options, produced_by=self.decoder_id)

    def stats(self) -> dict[str, Any]:
        """Calls this replica has served, and its process id (a test kills it by that)."""
        return {"calls": self.calls, "pid": os.getpid()}


def build_app(args: Mapping[str, Any]) -> Any:
    """Serve application builder: ``{"composition": ..., "checkpoint": ..., "outputs": [modalities],
    "stages": {stage: {"replicas", "num_cpus", "num_gpus"}}}`` -> the bound application (the language stage,
    holding nothing of the decoders, is its ingress)."""
    composition = str(args.get("composition", "tiny"))
    stages = {k: StageSpec(**v) for k, v in dict(args.get("stages") or {}).items()}
    env = _plugins_env()
    decoders = {key: serve.deployment(DecoderStage).options(**stages.get(key, StageSpec()).options(f"decoder-{key}", env))
                .bind(composition, key) for key in args.get("outputs") or []}
    language = serve.deployment(LanguageStage).options(**stages.get(LANGUAGE, StageSpec()).options(LANGUAGE, env))
    # the decoders are bound as arguments nobody reads, so that one `serve.run` deploys every stage
    return _Bundle.options(name="bundle", num_replicas=1, ray_actor_options={"num_cpus": 0}).bind(
        language.bind(composition, args.get("checkpoint")), decoders)


@serve.deployment
class _Bundle:
    """The application's ingress: holds the stages so one ``serve.run`` / ``serve deploy`` starts them all."""

    def __init__(self, language: Any, decoders: dict[str, Any]) -> None:
        self.language, self.decoders = language, decoders

    def stages(self) -> list[str]:
        """The stage names."""
        return [LANGUAGE, *(f"decoder-{k}" for k in self.decoders)]


# ---------------------------------------------------------------------------------------------- the front's model
@dataclass
class _Tokenizer:
    eos_token_id: int | None


@dataclass
class _Tokens:
    signals: dict[str, list[int]] = field(default_factory=dict)


class RayModel:
    """Stands in for a loaded ``NextGPT`` in :func:`~nextgpt_core.serving.app.create_app`: the same attributes the
    app reads (composition, registry, readers, request checks) and a ``generate`` that runs the language stage,
    then each run's decoder deployment (in order, each as soon as the previous one finished)."""

    def __init__(self, composition: str, language: Any, decoders: Mapping[str, Any], *, registry: Any = None) -> None:
        from ..composition import resolve_composition
        from ..plugins import get_registry

        self.registry = registry or get_registry()
        self.resolved = resolve_composition(composition, self.registry)
        self.language, self.decoder_handles = language, dict(decoders)
        info = language.describe.remote().result()
        self._inputs, self._outputs = info["inputs"], info["outputs"]
        self.tokenizer = _Tokenizer(info["eos"])
        self.tokens = _Tokens({k: [0] * n for k, n in info["signals"].items()})
        self._io: dict[str, Any] = {}
        self.decoder_retries = 0

    @property
    def composition(self) -> Any:
        """The composition served."""
        return self.resolved.composition

    def input_modalities(self) -> list[str]:
        """Modalities the language stage reads."""
        return list(self._inputs)

    def output_modalities(self) -> list[str]:
        """Modalities with a decoder deployment."""
        return list(self._outputs)

    def media_io(self, key: str) -> Any:
        """The modality's reader / writer (in this process: uploads are read and replies written here)."""
        if key not in self._io:
            from nextgpt_registry import resolve_target

            self._io[key] = resolve_target(self.registry.modality(key).media_io)()
        return self._io[key]

    def check_request(self, *, want: Sequence[str] = (), max_new_tokens: int | None = None, **_: Any) -> None:
        """``NextGPT.check_request``'s checks, here (before anything is sent to a replica)."""
        for key in want:
            if key not in self._outputs:
                raise ConversationError(f"cannot generate {key!r}; outputs: {', '.join(self._outputs) or '(none)'}")
        max_new = max_new_tokens or self.composition.generation.max_new_tokens
        needed = sum(len(self.tokens.signals[k]) for k in dict.fromkeys(want))
        if needed > max_new:
            raise ConversationError(
                f"max_new_tokens {max_new} cannot hold the wanted runs ({needed} signal tokens: "
                + ", ".join(f"{k} {len(self.tokens.signals[k])}" for k in dict.fromkeys(want)) + ")")

    def _with_data(self, conversation: Conversation) -> Conversation:
        """Media read here, so a replica on another machine never needs this machine's files."""
        turns = []
        for turn in conversation.turns:
            parts = []
            for part in turn.parts:
                if isinstance(part, Media) and part.data is None and part.path is not None:
                    part = Media(modality=part.modality, data=self.media_io(part.modality).read(part.path))
                parts.append(part)
            turns.append(Turn(turn.role, parts))
        return Conversation(turns)

    def _decode(self, pending: PendingDecode) -> Media:
        handle = self.decoder_handles[pending.modality]
        for attempt in (1, 2):
            try:
                return handle.decode.remote(pending).result()
            except Exception as exc:  # noqa: BLE001 - a replica that died (or its node): retried once
                if attempt == 2:
                    raise ServingError(503, "decoder_unavailable",
                                       f"the {pending.modality} decoder failed twice ({type(exc).__name__}); retry later") from exc
                self.decoder_retries += 1
        raise AssertionError("unreachable")  # pragma: no cover

    def generate(self, conversation: Conversation, *, should_stop: Callable[[], bool] | None = None,
                 on_text: Callable[[str], None] | None = None, on_media: Callable[[Media], None] | None = None,
                 **params: Any) -> Response:
        """As ``NextGPT.generate``: the language stage streams the text and ends with the reply's parts, whose
        media are then decoded by their modality's deployment, in order (``should_stop`` checked before each)."""
        stream = self.language.options(stream=True).generate.remote(self._with_data(conversation), params)
        response = None
        try:
            for kind, value in stream:
                if should_stop is not None and should_stop():
                    stream.cancel()
                    return Response(parts=[], cancelled=True, notices=["cancelled"])
                if kind == "text":
                    if on_text is not None:
                        on_text(value)
                elif kind == "error":
                    raise value
                else:
                    response = value
        finally:
            if response is None:
                stream.cancel()
        assert response is not None
        parts: list[Any] = []
        for index, part in enumerate(response.parts):
            if isinstance(part, Text) or not isinstance(part.data, PendingDecode):
                parts.append(part)
                continue
            if should_stop is not None and should_stop():
                response.cancelled = True
                response.notices.append("cancelled: generation stopped early; runs not completed were dropped")
                break
            media = self._decode(part.data)
            parts.append(media)
            if on_media is not None:
                on_media(media)
        response.parts = parts
        return response


def deploy(composition: str, *, checkpoint: str | None = None, stages: Mapping[str, StageSpec] | None = None,
           address: str | None = None, num_cpus: int | None = None, registry: Any = None) -> RayModel:
    """Start (or join, with ``address``) Ray, deploy the application (unless one named ``nextgpt`` already runs
    there: then attach to it) and return the front's :class:`RayModel`. ``registry``: the plugins of this process
    (default: the installed ones); the replicas load theirs as ``NEXTGPT_LOAD_PLUGINS`` says here."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    running = APP_NAME in serve.status().applications and serve.status().applications[APP_NAME].status == "RUNNING"
    if not running:
        from ..composition import resolve_composition
        from ..plugins import get_registry

        resolved = resolve_composition(composition, registry or get_registry())
        outputs = [k for k, m in resolved.modalities.items() if m.can_generate]
        app = build_app({"composition": composition, "checkpoint": checkpoint, "outputs": list(outputs),
                         "stages": {k: vars(v) for k, v in (stages or {}).items()}})
        serve.run(app, name=APP_NAME, route_prefix=None)
    language = serve.get_deployment_handle(LANGUAGE, app_name=APP_NAME)
    stage_names = serve.get_deployment_handle("bundle", app_name=APP_NAME).stages.remote().result()
    decoders = {name[len("decoder-"):]: serve.get_deployment_handle(name, app_name=APP_NAME)
                for name in stage_names if name.startswith("decoder-")}
    return RayModel(composition, language, decoders, registry=registry)
