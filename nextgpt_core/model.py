"""``NextGPT``: the assembled any-to-any model and the one way to run a request.

A request goes: conversation -> prompt pieces -> (media: MediaIO.read -> Encoder.preprocess -> Encoder, cached by
content hash -> InputProjector) spliced between wrapper-token embeddings -> one ``generate`` call recording signal
hidden states -> per completed run: OutputProjector(s) -> Decoder -> :class:`Response` parts in order.

Example (runs as a test; ``tiny`` holds every installed modality plugin):
    >>> from nextgpt_core import Conversation, NextGPT
    >>> model = NextGPT.from_composition("tiny")
    >>> conversation = Conversation().user("Hello! Show me something.")
    >>> reply = model.generate(conversation, want=model.output_modalities(), seed=0, max_new_tokens=16)
    >>> reply.seed, len(reply.token_ids) <= 16
    (0, True)
    >>> [part.modality for part in reply.media] == model.output_modalities()
    True
    >>> model.generate(conversation, want=model.output_modalities(), seed=0, max_new_tokens=16).token_ids == reply.token_ids
    True
    >>> conversation.add_response(reply).user("Now something else.").turns[-1].role
    'user'
"""

from __future__ import annotations

import functools
import os
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from nextgpt_registry import Registry, resolve_target

from .composition import Composition, ResolvedComposition, ResolvedComponent, resolve_composition
from .conversation import Conversation, Media, Part, Response, Text
from .encoder_cache import EncoderCache
from .errors import ContextLengthError, ConversationError, MediaError
from .generation import TextStreamer, run_generation
from .interfaces import Decoder, Encoder, InputProjector, MediaIO, OutputProjector, unwrap_decoded
from .language_model import TokenTable, add_modality_tokens, build_language_model, derived_seed
from .prompting import IdsPiece, Piece, TextPiece, join_text, render_conversation, strip_around_ids
from .signal_runs import SignalRunController

__all__ = ["NextGPT"]

SHARED = "shared"  # a key no modality may take (nextgpt_registry.specs.RESERVED_MODALITY_KEYS)


def _build(component: ResolvedComponent, seed: int, name: str) -> Any:
    klass = resolve_target(component.target)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(seed, name))
        return klass.from_options(component.options)


def decode_with(decoder: Decoder, key: str, conditioning: Mapping[str, torch.Tensor], *, seed: int,
                options: Mapping[str, Any], produced_by: str | None = None) -> Media:
    """One decoder call as :meth:`NextGPT.decode_conditioning` makes it (also run alone by a decoder deployment):
    the generator seeded with ``seed``, the first output as the ``key`` medium (``produced_by``: the decoder's
    component id; ``details``: what the decoder reported with it, e.g. a retrieval decoder's gallery item)."""
    item = decoder(dict(conditioning), generator=torch.Generator().manual_seed(seed), **dict(options))
    data, details = unwrap_decoded(item[0])
    return Media(modality=key, data=data, produced_by=produced_by, details=details)


class NextGPT(nn.Module):
    """An LLM with per-modality encoders, input projectors, output projectors and decoders.

    Build it with :meth:`from_composition`. Submodules: ``llm`` (Hugging Face causal LM, optionally LoRA-wrapped),
    ``encoders`` / ``input_projectors`` (``{key}`` or ``{"shared"}``) / ``output_projectors``
    (``{key: {conditioning name: projector}}``, the inputs of every decoder of the modality) as ``nn.ModuleDict``;
    decoders live in ``decoders`` (each modality's first decoder) and ``extra_decoders`` (``{key: {id: decoder}}``),
    plain dicts, loaded lazily on first use.
    """

    def __init__(
        self,
        resolved: ResolvedComposition,
        registry: Registry,
        llm: Any,
        tokenizer: Any,
        tokens: TokenTable,
        encoders: Mapping[str, Encoder],
        input_projectors: Mapping[str, InputProjector],
        output_projectors: Mapping[str, Mapping[str, OutputProjector]],
        decoders: Mapping[str, Decoder],
        extra_decoders: Mapping[str, Mapping[str, Decoder]] | None = None,
    ) -> None:
        super().__init__()
        self.resolved = resolved
        self.registry = registry
        self.llm = llm
        self.tokenizer = tokenizer
        self.tokens = tokens
        self.encoders = nn.ModuleDict(dict(encoders))
        self.input_projectors = nn.ModuleDict(dict(input_projectors))
        self.output_projectors = nn.ModuleDict({k: nn.ModuleDict(dict(v)) for k, v in output_projectors.items()})
        self.decoders: dict[str, Decoder] = dict(decoders)
        #: a modality's further decoders by component id (``extra_decoders`` of the composition)
        self.extra_decoders: dict[str, dict[str, Decoder]] = {k: dict(v) for k, v in (extra_decoders or {}).items()}
        self._attached: set[tuple[str, str]] = set()
        self.encoder_cache = EncoderCache()
        self._media_io: dict[str, MediaIO] = {}
        # template pieces ("### Human: ", "### Assistant:") repeat in every request: tokenize each text once
        self._cached_ids = functools.lru_cache(maxsize=4096)(self._tokenize)

    def _tokenize(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False).input_ids)

    def text_ids(self, text: str) -> tuple[int, ...]:
        """The LLM's token ids of ``text`` without special tokens ``(T,)``, cached (the prompt template's pieces
        repeat in every request and every training sample)."""
        return self._cached_ids(text)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_composition(
        cls,
        composition: "str | os.PathLike[str] | Composition" = "tiny",
        *,
        registry: Registry | None = None,
        checkpoint: "str | os.PathLike[str] | None" = None,
        device: str | None = None,
    ) -> "NextGPT":
        """Build the model a composition describes (tiny parts are random-init with the composition's seed).

        Args:
            composition: a built-in name (``"tiny"``), a TOML path, or a :class:`Composition`.
            registry: defaults to the installed plugins (``NEXTGPT_LOAD_PLUGINS`` honoured).
            checkpoint: a directory written by :meth:`save_checkpoint` to load trained weights from (default: the
                composition's own ``checkpoint``, if it names one).
            device: overrides the composition's ``device``.

        Raises:
            CompositionError: the composition does not resolve or its parts do not fit.
            WeightsNotFoundError: a local weight path is missing.
        """
        from .plugins import get_registry

        registry = registry or get_registry()
        resolved = resolve_composition(composition, registry)
        comp = resolved.composition
        if comp.weights_manifest is not None:  # a missing or corrupted weights file: one line naming it
            from .weights_manifest import verify_weights_manifest

            verify_weights_manifest(comp.weights_manifest)
        seed = comp.seed
        llm, tokenizer = build_language_model(comp.llm, seed=seed)
        tokens = add_modality_tokens(
            llm,
            tokenizer,
            [(m.key, m.wrapper_tokens, m.signal_tokens) for m in resolved.modalities.values()],
            seed=seed,
            first_added_id=comp.vocabulary.first_added_id,
        )
        if comp.lora.enabled:
            from .lora import apply_lora

            llm = apply_lora(llm, comp.lora)
        encoders: dict[str, Encoder] = {}
        inprojs: dict[str, InputProjector] = {}
        outprojs: dict[str, dict[str, OutputProjector]] = {}
        decoders: dict[str, Decoder] = {}
        extra: dict[str, dict[str, Decoder]] = {}
        for key, m in resolved.modalities.items():
            if m.encoder is not None:
                encoders[key] = _build(m.encoder, seed, f"{key}/encoder").freeze()
            if m.input_projector is not None:
                inprojs[key] = _build(m.input_projector, seed, f"{key}/input_projector")
            if m.can_generate:
                outprojs[key] = {p.fills: _build(p, seed, f"{key}/output_projector/{p.fills}")  # type: ignore[misc]
                                 for route in m.routes.values() for p in route.output_projectors}
                decoders[key] = _build(m.decoder, seed, f"{key}/decoder")  # type: ignore[arg-type]
                for route in m.extra_decoders:
                    extra.setdefault(key, {})[route.decoder.id] = _build(route.decoder, seed, f"{key}/decoder/{route.decoder.id}")
        if resolved.shared_input_projector is not None:
            inprojs[SHARED] = _build(resolved.shared_input_projector, seed, "shared/input_projector")
        model = cls(resolved, registry, llm, tokenizer, tokens, encoders, inprojs, outprojs, decoders, extra)
        if comp.modules_dtype != "float32":  # encoders and projectors (the LLM has llm.dtype, decoders their own)
            for module in (model.encoders, model.input_projectors, model.output_projectors):
                module.to(getattr(torch, comp.modules_dtype))
        model.to(device or comp.device)
        model.eval()
        checkpoint = checkpoint if checkpoint is not None else comp.checkpoint
        if checkpoint is not None:
            from .checkpoint import load_checkpoint

            load_checkpoint(model, checkpoint)
        return model

    @property
    def composition(self) -> Composition:
        """The composition this model was built from."""
        return self.resolved.composition

    @property
    def device(self) -> torch.device:
        """Device of the LLM."""
        return self.llm.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the LLM's embeddings."""
        return self.llm.get_input_embeddings().weight.dtype

    def input_modalities(self) -> list[str]:
        """Modalities that can be inputs (have an encoder)."""
        return [k for k, m in self.resolved.modalities.items() if m.can_read]

    def output_modalities(self) -> list[str]:
        """Modalities the model can generate (have signal tokens and a decoder)."""
        return [k for k, m in self.resolved.modalities.items() if m.can_generate]

    # ------------------------------------------------------------------ media in
    def media_io(self, key: str) -> MediaIO:
        """The reader/writer of modality ``key`` (from its spec's ``media_io``)."""
        if key not in self._media_io:
            self._media_io[key] = resolve_target(self.registry.modality(key).media_io)()
        return self._media_io[key]

    def modality_of(self, media: Media) -> str:
        """The modality of a media part: its own field, else told from its file name; must be an input here."""
        key = media.modality
        if key is None:
            if media.path is None:
                raise ConversationError("a media part needs a modality or a path")
            key = self.registry.modality_for_path(media.path)
        if key not in self.resolved.modalities or not self.resolved.modalities[key].can_read:
            raise ConversationError(
                f"modality {key!r} is not an input of composition {self.composition.name!r}; "
                f"inputs: {', '.join(self.input_modalities()) or '(none)'}"
            )
        return key

    def encode_media(self, media: Media, key: str | None = None) -> torch.Tensor:
        """Encoder features of one item, ``(n_tokens, enc_dim)``, from the cache when its content was seen."""
        key = key or self.modality_of(media)
        io = self.media_io(key)
        encoder = self.encoders[key]
        cache_key = (key, self.resolved.modalities[key].encoder.id, media.content_hash(io.to_bytes))  # type: ignore[union-attr]
        feats = self.encoder_cache.get(cache_key)
        if feats is None:
            data = media.data if media.data is not None else io.read(media.path)  # type: ignore[arg-type]
            with torch.no_grad():
                x = encoder.preprocess(data).unsqueeze(0)
                param = next(encoder.parameters(), None)
                if param is not None:
                    x = x.to(param.device, param.dtype if x.is_floating_point() else x.dtype)
                feats = encoder(x)[0]
            if feats.dim() != 2 or feats.shape[-1] != encoder.output_dim:
                raise MediaError(
                    f"{type(encoder).__name__} returned {tuple(feats.shape)} for one item; expected (n_tokens, {encoder.output_dim})"
                )
            self.encoder_cache.put(cache_key, feats)
        return feats

    def project_media(self, items: Sequence[Media], key: str) -> torch.Tensor:
        """Projected embeddings of one media span, ``(n_llm_tokens, H)`` (several items are summed)."""
        proj = self.input_projectors[SHARED if SHARED in self.input_projectors else key]
        out = None
        for item in items:
            feats = self.encode_media(item, key).to(self.device)
            p = next(proj.parameters(), None)
            y = proj(feats.unsqueeze(0).to(p.dtype if p is not None else feats.dtype))[0]
            out = y if out is None else out + y
        assert out is not None
        return out.to(self.dtype)

    @functools.cached_property
    def _longest_token(self) -> int:
        """Characters of the longest token string in the vocabulary (added tokens included), at least 1: a text
        of ``c`` characters is at least ``c // _longest_token`` tokens, known without tokenizing it."""
        return max([1, *(len(t) for t in self.tokenizer.get_vocab())])

    def embed_pieces(self, pieces: Iterable[Piece]) -> torch.Tensor:
        """Input embeddings ``(n, H)`` of prompt pieces (text tokenized, ids inserted directly, media projected)."""
        embed = self.llm.get_input_embeddings()
        device = embed.weight.device
        chunks: list[torch.Tensor] = []
        bos = self.tokenizer.bos_token_id
        for piece in pieces:
            if isinstance(piece, TextPiece):
                ids = list(self.text_ids(piece.text))
                if self.composition.prompt.bos == "every_segment" and bos is not None and not piece.continues:
                    ids = [bos, *ids]
                if ids:
                    chunks.append(embed(torch.tensor(ids, device=device)))
            elif isinstance(piece, IdsPiece):
                chunks.append(embed(torch.tensor(piece.ids, device=device)))
            else:
                chunks.append(self.project_media(piece.items, piece.modality))
        if not chunks:
            return torch.zeros(0, embed.weight.shape[1], device=device, dtype=embed.weight.dtype)
        return torch.cat(chunks, dim=0)

    def prepare_inputs(self, conversation: Conversation, max_new_tokens: int) -> tuple[torch.Tensor, list[str]]:
        """Prompt embeddings ``(1, P, H)`` for a conversation, dropping the oldest turns to fit the context budget.

        Returns:
            ``(inputs_embeds, notices)``; a notice says how many turns were dropped.

        Raises:
            ConversationError: the last turn alone does not fit.
        """
        prompt = self.composition.prompt
        header, turns, footer = render_conversation(
            conversation,
            prompt,
            modality_of=self.modality_of,
            wrappers=lambda key: self.tokens.wrappers[key],
            sum_items=lambda key: self.resolved.modalities[key].item_merge == "sum",
            # the official demo's first turn ("### Human:  {text}"); with history it writes one string
            prefix_apart=prompt.user_prefix_apart and len(conversation.turns) == 1,
        )
        bos = self.tokenizer.bos_token_id
        start = [IdsPiece((bos,))] if prompt.bos == "start" and bos is not None else []
        limit = self.composition.generation.max_context_tokens or int(
            getattr(self.llm.config, "max_position_embeddings", 2048)
        )
        budget = limit - max_new_tokens - 1
        n = len(turns)
        # where the kept history may start: the first turn, any user turn, or (at the least) the last turn
        starts = [i for i in range(n) if i == 0 or i == n - 1 or conversation.turns[i].role == "user"]
        # before any tokenizing or embedding: a turn's text needs at least chars / (longest token) positions
        least = [sum(len(p.text) for p in t if isinstance(p, TextPiece)) // self._longest_token for t in turns]
        if least and least[-1] > budget:
            raise ContextLengthError(
                f"the last turn needs at least {least[-1]} positions (its text alone), more than the context budget "
                f"of {budget} ({limit} minus {max_new_tokens + 1} for the reply); shorten it or lower max_new_tokens"
            )
        if prompt.join_turns:  # text runs across turns: embed the joined pieces of the kept turns as a whole
            joined: dict[int, torch.Tensor] = {}

            def embeds_from(first: int) -> torch.Tensor:
                if first not in joined:
                    pieces = join_text([*header, *[p for i in range(first, n) for p in turns[i]], *footer])
                    if prompt.strip_around_tokens:
                        pieces = strip_around_ids(pieces)
                    joined[first] = self.embed_pieces([*start, *pieces])
                return joined[first]

            # the earliest start that fits, by bisection over the starts (fewer turns never need more positions):
            # O(log n) embeddings of the history instead of one per dropped turn
            cheap = [s for s in starts if sum(least[s:]) <= budget] or [starts[-1]]
            lo, hi = 0, len(cheap) - 1
            while lo < hi:
                mid = (lo + hi) // 2
                if embeds_from(cheap[mid]).shape[0] <= budget:
                    hi = mid
                else:
                    lo = mid + 1
            first = cheap[lo]
            total = embeds_from(first).shape[0]
        else:  # turns are embedded one by one from the newest, and no further back than the budget reaches
            head = self.embed_pieces([*start, *header])
            tail = self.embed_pieces(footer)
            bodies: dict[int, torch.Tensor] = {}
            used = head.shape[0] + tail.shape[0]
            reach = n  # turns reach .. n-1 fit together
            for i in range(n - 1, -1, -1):
                if used + least[i] > budget and i < n - 1:
                    break
                bodies[i] = self.embed_pieces(turns[i])
                if used + bodies[i].shape[0] > budget and i < n - 1:
                    break
                used += bodies[i].shape[0]
                reach = i
            first = next((s for s in starts if s >= reach), n - 1)
            for i in range(first, n):
                if i not in bodies:
                    bodies[i] = self.embed_pieces(turns[i])
            total = head.shape[0] + tail.shape[0] + sum(bodies[i].shape[0] for i in range(first, n))

        notices = []
        if first > 0:
            notices.append(
                f"dropped the {first} oldest turn(s) to fit the context budget of {budget} positions "
                f"({limit} minus {max_new_tokens + 1} for the reply)"
            )
        if total > budget:
            raise ContextLengthError(
                f"the last turn needs {total} positions, more than the context budget of {budget} "
                f"({limit} minus {max_new_tokens + 1} for the reply); shorten it or lower max_new_tokens"
            )
        if prompt.join_turns:
            embeds = embeds_from(first)
        else:
            embeds = torch.cat([head, *[bodies[i] for i in range(first, n)], tail], dim=0)
        return embeds.unsqueeze(0), notices

    # ------------------------------------------------------------------ the request
    def check_request(
        self,
        *,
        want: Sequence[str] = (),
        max_new_tokens: int | None = None,
        decode_options: Mapping[str, Mapping[str, Any]] | None = None,
        decoders: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """The checks :meth:`generate` makes on its settings before any work, alone (a server runs them before it
        answers, e.g. before a stream starts): every wanted modality can be generated, decode options name only
        generated modalities (or a decoder id of one), chosen decoders belong to their modality, and
        ``max_new_tokens`` holds the signal tokens of every wanted run.

        Raises:
            ConversationError: one line naming the problem.
        """
        outputs = self.output_modalities()
        for key in want:
            if key not in outputs:
                raise ConversationError(
                    f"cannot generate {key!r} with composition {self.composition.name!r}; outputs: {', '.join(outputs) or '(none)'}"
                )
        decoder_ids = {d for k in outputs for d in self.resolved.modalities[k].routes}
        unknown_opts = [k for k in (decode_options or {}) if k not in outputs and k not in decoder_ids]
        if unknown_opts:
            raise ConversationError(f"decode options for {unknown_opts}, which this composition does not generate")
        for key, ids in (decoders or {}).items():
            if key not in outputs:
                raise ConversationError(f"decoders chosen for {key!r}, which this composition does not generate")
            routes = self.resolved.modalities[key].routes
            bad = [d for d in ids if d not in routes]
            if bad or not ids or len(set(ids)) != len(ids):
                raise ConversationError(f"decoders {list(ids)} for {key!r}: choose distinct ones of {', '.join(routes)}")
        max_new = max_new_tokens or self.composition.generation.max_new_tokens
        needed = sum(len(self.tokens.signals[k]) for k in dict.fromkeys(want))
        if needed > max_new:
            raise ConversationError(
                f"max_new_tokens {max_new} cannot hold the wanted runs ({needed} signal tokens: "
                + ", ".join(f"{k} {len(self.tokens.signals[k])}" for k in dict.fromkeys(want)) + ")"
            )

    def generate(
        self,
        conversation: "Conversation | str",
        *,
        want: Sequence[str] = (),
        seed: int | None = None,
        max_new_tokens: int | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        decode_options: Mapping[str, Mapping[str, Any]] | None = None,
        on_text: Callable[[str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_media: Callable[[Media], None] | None = None,
        decoders: Mapping[str, Sequence[str]] | None = None,
        stop: Sequence[str] = (),
        decode: Callable[..., Media] | None = None,
    ) -> Response:
        """Answer the conversation's last user turn with text and any generated media.

        Args:
            conversation: a :class:`Conversation` (last turn from the user) or a plain prompt.
            want: modalities the reply must contain; a run is forced if the model does not start one.
            seed: seeds sampling and every decoder of this request (random when ``None``; see ``Response.seed``).
            max_new_tokens, do_sample, temperature, top_p, top_k: override the composition's generation settings.
            decode_options: ``{modality: {option: value}}`` for the decoders (steps, guidance, size, ...); a key may
                also be a decoder id (``"image/retrieval": {"top_k": 5}``) for that decoder alone.
            on_text: called with each new piece of reply text as it is generated (streaming).
            should_stop: checked between steps and before each decoder run; returning ``True`` cancels the
                request (a decoder already running finishes; the runs not yet decoded are dropped).
            on_media: called with each generated media part as soon as its decoder returns (streaming).
            decoders: ``{modality: [decoder id, ...]}``: which of a modality's decoders turn each of its runs into
                media (one part each, in that order), instead of the composition's ``decode_with``.
            stop: stop strings of this request, added to the composition's (``prompt.stop``): the reply text
                ends before the first one (a wanted run not yet produced is still produced).
            decode: ``decode(modality, conditioning, seed, options, decoder=decoder_id) -> Media``, the decoder call
                of each run (default: :meth:`decode_conditioning`, this model's own decoder); the Ray Serve backend
                makes it a placeholder that a decoder deployment fills.

        Returns:
            A :class:`Response` whose parts are the reply text and media in the order produced.
        """
        if isinstance(conversation, str):
            conversation = Conversation.from_prompt(conversation)
        if not conversation.turns or conversation.turns[-1].role != "user":
            raise ConversationError("the last turn of the conversation must be a user turn")
        self.check_request(want=want, max_new_tokens=max_new_tokens, decode_options=decode_options, decoders=decoders)
        outputs = self.output_modalities()
        gen = self.composition.generation
        max_new = max_new_tokens or gen.max_new_tokens
        seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        stops = tuple(dict.fromkeys([*self.composition.prompt.stop, *(s for s in stop if s)]))
        with torch.no_grad():  # inference: no autograd graph through the (trainable) input projectors
            embeds, notices = self.prepare_inputs(conversation, max_new)
        runs = {k: self.tokens.signals[k] for k in outputs}
        caps = {k: max(self.resolved.modalities[k].max_per_reply, 1 if k in want else 0) for k in outputs}
        try:
            controller = SignalRunController(
                runs=runs,
                caps=caps,
                want=list(want),
                eos_ids=[self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else [],
                stop_strings=stops,
                decode=self._stop_text,
                max_new_tokens=max_new,
                sample=gen.do_sample if do_sample is None else do_sample,
                temperature=gen.temperature if temperature is None else temperature,
                top_k=gen.top_k if top_k is None else top_k,
                top_p=gen.top_p if top_p is None else top_p,
                generator=torch.Generator().manual_seed(seed),
                should_stop=should_stop,
            )
        except ValueError as exc:
            raise ConversationError(str(exc)) from exc
        streamer = None
        if on_text is not None:
            hidden = self.tokens.all_signal_ids | set(self.tokens.added.values())
            streamer = TextStreamer(self.tokenizer, on_text, hidden, stops)
        result = run_generation(
            self.llm,
            embeds,
            controller,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            hidden_layer=self.composition.signal.hidden_layer,
            position_offset=self.composition.signal.position_offset,
            streamer=streamer,
        )
        parts, dropped = self._assemble(
            result.token_ids, result.runs, seed, decode_options or {}, should_stop=should_stop, on_media=on_media,
            decoders=decoders or {}, stops=stops, decode=decode,
        )
        if dropped:
            result.cancelled = True
        if result.cancelled:
            notices.append("cancelled: generation stopped early; runs not completed were dropped")
        return Response(parts=parts, token_ids=result.token_ids, seed=seed, notices=notices, cancelled=result.cancelled,
                        prompt_tokens=int(embeds.shape[1]))

    def _stop_text(self, ids: Sequence[int]) -> str:
        """The text stop strings are looked for in: ``ids`` decoded with the tokenizer's special tokens kept (a stop
        string may be one, e.g. ``<|im_end|>`` or ``<|eot_id|>``) and the modality tokens left out."""
        added = self._added_ids
        return self.tokenizer.decode([i for i in ids if i not in added], skip_special_tokens=False)

    @functools.cached_property
    def _added_ids(self) -> frozenset[int]:
        return frozenset(self.tokens.added.values())

    def _cut_at_stop(self, ids: list[int], stops: Sequence[str] | None = None) -> tuple[list[int], bool]:
        """``(the ids before the first stop string, whether there was one)``; a stop string may be a special token.
        ``stops``: the stop strings (default: the composition's)."""
        stops = [s for s in (self.composition.prompt.stop if stops is None else stops) if s]
        if not stops or not any(s in self._stop_text(ids) for s in stops):
            return ids, False
        lo, hi = 0, len(ids)  # the shortest prefix whose text holds a stop string is ids[:hi]
        while lo < hi:
            mid = (lo + hi) // 2
            if any(s in self._stop_text(ids[:mid]) for s in stops):
                hi = mid
            else:
                lo = mid + 1
        return ids[: hi - 1] if hi else [], True

    def _assemble(
        self,
        token_ids: list[int],
        runs: list[tuple[Any, torch.Tensor]],
        seed: int,
        decode_options: Mapping[str, Mapping[str, Any]],
        *,
        should_stop: Callable[[], bool] | None = None,
        on_media: Callable[[Media], None] | None = None,
        decoders: Mapping[str, Sequence[str]] | None = None,
        stops: Sequence[str] | None = None,
        decode: Callable[..., Media] | None = None,
    ) -> tuple[list[Part], int]:
        """The reply parts in order (text between runs, each run decoded), and how many runs were not decoded
        because ``should_stop()`` turned true. ``stops``: the stop strings (default: the composition's);
        ``decode``: the decoder call (default: :meth:`decode_conditioning`)."""
        signal = self.tokens.all_signal_ids
        stops = tuple(s for s in (self.composition.prompt.stop if stops is None else stops) if s)
        parts: list[Part] = []
        stopped = False
        cursor = 0

        def add_text(ids: list[int]) -> None:
            nonlocal stopped
            if stopped:
                return
            clean = [i for i in ids if i not in signal]
            text = self.tokenizer.decode(clean, skip_special_tokens=True)
            cut = min((text.find(s) for s in stops if s in text), default=-1)
            if cut >= 0:
                text, stopped = text[:cut], True
            else:  # a stop string that is a special token is only seen with special tokens kept
                kept, stopped = self._cut_at_stop(clean, stops)
                if stopped:
                    text = self.tokenizer.decode(kept, skip_special_tokens=True)
            if text.strip():
                parts.append(Text(text.strip()))

        for index, (record, hidden) in enumerate(runs):
            if should_stop is not None and should_stop():
                return parts, len(runs) - index
            add_text(token_ids[cursor : record.start])
            n = len(self.tokens.signals[record.modality])
            cursor = record.start + n
            chosen = (decoders or {}).get(record.modality) or self.resolved.modalities[record.modality].decode_with
            first = self.resolved.modalities[record.modality].decoder.id  # type: ignore[union-attr]
            for j, decoder_id in enumerate(chosen):
                # options keyed by the decoder's id; the modality's own key holds its first decoder's
                options = decode_options.get(decoder_id, decode_options.get(record.modality) if decoder_id == first else None)
                run_seed = seed + 1 + index + 1000 * j
                if decode is None:
                    media = self.decode_run(record.modality, hidden, seed=run_seed, options=options, decoder=decoder_id)
                else:
                    media = decode(record.modality, self.project_run(record.modality, hidden, decoder=decoder_id),
                                   run_seed, options, decoder=decoder_id)
                parts.append(media)
                if on_media is not None:
                    on_media(media)
        add_text(token_ids[cursor:])
        return parts, 0

    def media_target_names(self, key: str) -> frozenset[str]:
        """The conditioning inputs of modality ``key`` whose stage-2 targets are the encoder's embedding of the target
        media (inputs of a decoder with ``targets_from_media``, a retrieval decoder), not a caption's encoding."""
        routes = self.resolved.modalities[key].routes
        return frozenset(p.fills for rid, r in routes.items() if type(self.decoder_of(key, rid)).targets_from_media
                         for p in r.output_projectors if p.fills)

    def media_target(self, key: str, path: "str | os.PathLike[str]") -> torch.Tensor:
        """The stage-2 target of a media-target input: the modality encoder's embedding of the file at ``path``,
        tokens averaged and L2-normalised, ``(1, enc_dim)`` float32 on CPU (cached by content like every encoding).

        Raises:
            ConversationError: the modality has no encoder to embed its target media with.
        """
        if key not in self.encoders:
            raise ConversationError(f"modality {key!r} has no encoder to embed target media for its retrieval decoder")
        feats = self.encode_media(Media(modality=key, path=Path(path)), key)  # (n_tokens, enc_dim), cached
        return torch.nn.functional.normalize(feats.float().mean(dim=0, keepdim=True), dim=-1).cpu()

    def decoder_of(self, key: str, decoder: str | None = None) -> Decoder:
        """Modality ``key``'s decoder ``decoder`` (a component id; ``None``: its first decoder)."""
        first = self.resolved.modalities[key].decoder
        if decoder is None or (first is not None and decoder == first.id):
            return self.decoders[key]
        try:
            return self.extra_decoders[key][decoder]
        except KeyError:
            raise ConversationError(f"modality {key!r} has no decoder {decoder!r}; it has "
                                    f"{', '.join(self.resolved.modalities[key].routes)}") from None

    def project_run(self, key: str, hidden: torch.Tensor, *, decoder: str | None = None) -> dict[str, torch.Tensor]:
        """A completed signal run's hidden states ``(N, H)`` through the output projectors of decoder ``decoder`` (a
        component id; default the modality's first): that decoder's conditioning ``{name: (1, length, dim)}``."""
        route = self.resolved.modalities[key].routes[decoder or self.resolved.modalities[key].decoder.id]  # type: ignore[union-attr]
        signal_ids = torch.tensor(self.tokens.signals[key], device=self.device)
        with torch.no_grad():
            signal_embeds = self.llm.get_input_embeddings()(signal_ids).unsqueeze(0)
            conditioning = {}
            for spec in route.output_projectors:
                proj = self.output_projectors[key][spec.fills]
                p = next(proj.parameters(), None)
                dtype = p.dtype if p is not None else hidden.dtype
                conditioning[spec.fills] = proj(hidden.unsqueeze(0).to(self.device, dtype), signal_embeds.to(dtype))
        return conditioning

    def decode_conditioning(
        self, key: str, conditioning: Mapping[str, torch.Tensor], *, seed: int, options: Mapping[str, Any] | None = None,
        decoder: str | None = None,
    ) -> Media:
        """Decoder ``decoder`` of modality ``key`` (a component id; default its first) on ``conditioning`` (its
        generator seeded with ``seed``; ``options`` over that decoder's ``decode_options``). The part's
        ``produced_by`` is the decoder's id and ``details`` what the decoder reported (a retrieval decoder: which
        gallery item, its score)."""
        route = self.resolved.modalities[key].routes[decoder or self.resolved.modalities[key].decoder.id]  # type: ignore[union-attr]
        self.load_decoders([key], decoders=[route.decoder.id])  # lazily: a decoder loads the first time a reply needs it
        return decode_with(self.decoder_of(key, route.decoder.id), key, conditioning, seed=seed,
                           options={**route.decode_options, **dict(options or {})}, produced_by=route.decoder.id)

    def decode_run(
        self, key: str, hidden: torch.Tensor, *, seed: int, options: Mapping[str, Any] | None = None,
        decoder: str | None = None,
    ) -> Media:
        """One completed signal run -> media: ``hidden (N, H)`` through the output projectors of decoder ``decoder``
        (a component id; default the modality's first) and that decoder (:meth:`project_run`, then
        :meth:`decode_conditioning`)."""
        return self.decode_conditioning(key, self.project_run(key, hidden, decoder=decoder), seed=seed, options=options,
                                        decoder=decoder)

    def load_decoders(self, keys: Iterable[str] | None = None, *, decoders: Iterable[str] | None = None) -> None:
        """Load decoders now instead of on first use (``keys``: which modalities, default every output modality;
        ``decoders``: which of their decoders by id, default each modality's ``decode_with``). Each is first
        attached to its modality's encoder (:meth:`Decoder.attach_encoder`: a retrieval index is checked here)."""
        wanted = list(decoders) if decoders is not None else None
        for key in keys if keys is not None else self.output_modalities():
            for decoder_id in wanted if wanted is not None else self.resolved.modalities[key].decode_with:
                decoder = self.decoder_of(key, decoder_id)
                if (key, decoder_id) not in self._attached:
                    encoder = self.encoders[key] if key in self.encoders else None
                    component = self.resolved.modalities[key].encoder.id if encoder is not None else ""  # type: ignore[union-attr]
                    decoder.attach_encoder(encoder, component=component, media_io=self.media_io(key))
                    self._attached.add((key, decoder_id))
                if not decoder.is_loaded:
                    decoder.load()
                    decoder.to(self.device)

    # ------------------------------------------------------------------ LoRA
    @property
    def has_lora(self) -> bool:
        """Whether the LLM is wrapped with LoRA adapters (peft)."""
        from .lora import lora_state_dict

        return bool(lora_state_dict(self.llm))

    def enable_lora(self, settings: Any) -> list[str]:
        """Wrap the LLM with LoRA (``settings``: a :class:`~nextgpt_core.composition.LoRASettings`) and record it in
        the model's composition (``lora.enabled = true``, the settings and the resolved target modules), so that
        checkpoints written afterwards say what they hold. Returns notes (one line each) saying what changed.

        Raises:
            ConfigError: the LLM is already wrapped, or a target module matches nothing.
        """
        import dataclasses

        from .errors import ConfigError
        from .lora import apply_lora, resolve_lora_targets

        if self.has_lora:
            raise ConfigError("the LLM already has LoRA adapters")
        targets = resolve_lora_targets(self.llm, settings)
        self.llm = apply_lora(self.llm, settings)
        recorded = settings.model_copy(update={"enabled": True, "target_modules": tuple(targets)})
        composition = self.composition.model_copy(update={"lora": recorded})
        self.resolved = dataclasses.replace(self.resolved, composition=composition)
        return [f"wrapped the LLM with LoRA (r={recorded.r}, alpha={recorded.alpha}, dropout={recorded.dropout}, "
                f"targets {list(recorded.target_modules)})"]

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, directory: "str | os.PathLike[str]", **metadata: Any) -> Path:
        """Write the trainable parts (projectors, LoRA, added-token rows) as one checkpoint, atomically."""
        from .checkpoint import save_checkpoint

        return save_checkpoint(self, directory, metadata=metadata)

    def load_checkpoint(self, directory: "str | os.PathLike[str]") -> None:
        """Load a checkpoint written by :meth:`save_checkpoint` (strict: any mismatch is an error)."""
        from .checkpoint import load_checkpoint

        load_checkpoint(self, directory)
