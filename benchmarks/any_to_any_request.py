"""Where the time and the memory of one any-to-any request go: ``tiny`` with the real plugins (issue B).

The request: ``NextGPT.from_composition("tiny")`` with the four real plugins (``image``, ``video``, ``audio``,
``depth``; ``Registry.load(DEFAULT_PLUGINS, allow=[...])``), one user turn holding four files the script writes
into a temporary folder (a gradient PNG, a 12-frame mp4 with a moving square, a 1.5 s 440 Hz WAV, a depth-ramp
PNG, as in ``tests/integration/test_any_to_any.py``) and a text prompt; ``want=["image", "video", "audio"]``, a
fixed seed, the composition's sampling and ``max_new_tokens``, the plugins' tiny decode options; then
``Response.save`` into a fresh folder. Every repetition is a new ``Conversation`` of ``Media.from_path`` parts with
an empty encoder cache, so each request reads, hashes, preprocesses and encodes every input.

1. **Stages** (one process, ``--reps`` timed repetitions after ``--warmup`` rounds; ``torch.set_num_threads`` from
   ``--threads``, default 1; several counts, e.g. ``--threads 1,2``, are interleaved, order alternating every
   repetition). Timers wrap, in this process only:
   ``NextGPT.prepare_inputs`` / ``encode_media`` / ``decode_run`` / ``_assemble`` (instance attributes),
   ``Media.content_hash``, each input ``MediaIO.read`` and ``Encoder.preprocess``, ``run_generation`` (module
   attribute), ``llm.generate``, ``SignalRunController.__call__`` / ``.stop``, ``Decoder.__call__`` and each
   decoder's ``generate`` (the pipeline call), each output ``MediaIO.write``; forward pre/post hooks time the
   encoders, the input projectors, the output projectors and every LLM forward (the causal LM module, so a forward
   includes ``lm_head``): the first forward inside ``llm.generate`` is the prefill, the others are decode steps,
   a forward after ``generate`` returns is the extra cached step. Each stage's median and p90 over repetitions
   are reported (a sum of medians is not the median of the sums), plus the end-to-end median (``generate`` +
   ``save``). The first request of the process (decoders load lazily, caches warm up) is reported apart.
2. **Peak memory, lazy decoders vs all loaded up front**, each variant in a fresh subprocess so peaks do not mix
   (``--memory-runs`` per variant, variants rotated, ``--jobs`` at a time, all started before this process imports
   torch, because Linux starts a child's ``ru_maxrss`` from its parent's RSS at fork/exec): (a) build, then one text-only
   request (``want=[]``, a seed for which the reply starts no signal run, so no decoder loads); (b) build,
   ``model.load_decoders()``, the same request; (c) build, the same prompt with ``want`` = all three media (every
   decoder loads on demand). Read: ``ru_maxrss`` (peak RSS; ``VmHWM`` alongside) and ``VmRSS`` after the imports,
   after the build and at the end, and the parameters resident (the model's own modules; the loaded decoders'
   pipeline components). The lazy children then import the three pipeline classes (no weights) to show how much
   of the difference is library code rather than weights.
3. **Full size**: the same count for NExT-GPT's real decoders built on the ``meta`` device from the official
   config JSONs in ``/work/shared/reference/configs`` (SD-1.5, ZeroScope v2 576w, AudioLDM-l-full), against the
   always-resident part (Vicuna-7B v0, the four ImageBind-huge branches as nextgpt builds them, the projectors at
   their official sizes), as parameters and fp16 bytes.

Nothing is asserted about speed or memory; the script stops only if the reply changes between repetitions or the
text-only request would load a decoder. Run from the repository root (``make benchmarks`` runs it with the
defaults, 2-3.5 minutes on the 2-vCPU VM; ``--threads 1,2`` adds the 2-thread column and about 2 minutes)::

    .venv/bin/python benchmarks/any_to_any_request.py [--reps 20] [--threads 1] [--memory-runs 5] [--skip-memory]

Writes ``docs/benchmarks/any_to_any_request.json`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_common import git_state, machine, percentile

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "docs" / "benchmarks" / "any_to_any_request.json"
CONFIGS = Path("/work/shared/reference/configs")
REAL = ["image", "video", "audio", "depth"]
WANT = ["image", "video", "audio"]
PROMPT = "What is in these? Then show me a picture, a clip and a sound."
TEXT_PROMPT = "Hello! Tell me something."
for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_k, "1")


# ---------------------------------------------------------------------------------------------- small helpers
def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p90": percentile(values, 90), "min": min(values),
            "max": max(values), "n": len(values)}


def rss_now_kib() -> int:
    """Current resident set size (``VmRSS`` of /proc/self/status), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def peak_rss_kib() -> int:
    """Peak resident set size of this process so far (``ru_maxrss``; KiB on Linux).

    Linux carries the parent's RSS at ``fork``/``exec`` into a child's ``ru_maxrss``; the children are started
    before this script's own process imports anything heavy, and ``VmHWM`` (the peak of the new address space
    only) is recorded next to it as a check.
    """
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def hwm_kib() -> int:
    """Peak RSS of this address space (``VmHWM`` of /proc/self/status), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def mem_point() -> dict[str, int]:
    return {"rss_kib": rss_now_kib(), "peak_kib": peak_rss_kib(), "hwm_kib": hwm_kib()}


# ---------------------------------------------------------------------------------------------- the model + inputs
def build_model() -> tuple[Any, Any]:
    from nextgpt_registry import Registry

    from nextgpt_core import NextGPT
    from nextgpt_core.plugins import DEFAULT_PLUGINS

    registry = Registry.load(DEFAULT_PLUGINS, allow=REAL)
    model = NextGPT.from_composition("tiny", registry=registry)
    missing = [k for k in REAL if k not in model.resolved.modalities]
    if missing:
        sys.exit(f"error: the real plugins {missing} are not installed (make install)")
    return model, registry


def write_inputs(folder: Path) -> dict[str, Path]:
    """One file per input modality, as tests/integration/test_any_to_any.py makes them."""
    import numpy as np
    from nextgpt_audio.media import Audio, AudioIO
    from nextgpt_depth.media import DepthIO
    from nextgpt_image.media import ImageIO
    from nextgpt_video.media import Video, VideoIO
    from PIL import Image

    y, x = np.mgrid[0:48, 0:64]
    image = ImageIO().write(Image.fromarray(np.stack([x * 4, y * 5, (x + y) * 2], -1).astype(np.uint8)), folder / "pic.png")
    frames = np.zeros((12, 48, 64, 3), dtype=np.uint8)
    for t in range(12):
        frames[t, 10:26, 4 * t: 4 * t + 16] = 255
    video = VideoIO().write(Video(frames, fps=6.0), folder / "clip.mp4")
    tone = np.sin(2 * np.pi * 440 * np.arange(24000) / 16000).astype(np.float32) * 0.5
    audio = AudioIO().write(Audio(tone, 16000), folder / "tone.wav")
    depth = DepthIO().write((1000 + 20 * x).astype(np.float32), folder / "depth.png")
    return {"image": image, "video": video, "audio": audio, "depth": depth}


def conversation_of(files: dict[str, Path]) -> Any:
    from nextgpt_core import Conversation, Media

    return Conversation().user(
        Media.from_path(files["image"]),
        Media.from_path(files["video"]),
        Media.from_path(files["audio"]),
        Media.from_path(files["depth"], modality="depth"),
        PROMPT,
    )


def module_params(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def decoder_params(decoder: Any) -> int:
    """Parameters of a loaded diffusers decoder: every ``nn.Module`` component of its pipeline (0 if not loaded)."""
    import torch

    pipe = getattr(decoder, "pipe", None)
    if not decoder.is_loaded or pipe is None:
        return 0
    return sum(module_params(m) for m in pipe.components.values() if isinstance(m, torch.nn.Module))


# ---------------------------------------------------------------------------------------------- 1. stage timers
class Recorder:
    """Accumulates wall time per stage name within one request (reset between requests)."""

    def __init__(self) -> None:
        self.acc: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.decode_steps: list[float] = []
        self.loads: dict[str, float] = {}
        self.current_modality: str | None = None
        self.in_generate = False
        self.generate_forwards = 0
        self.llm_t0 = 0.0

    def reset(self) -> None:
        self.acc.clear()
        self.count.clear()
        self.decode_steps = []
        self.generate_forwards = 0

    def add(self, name: str, dt: float) -> None:
        self.acc[name] += dt
        self.count[name] += 1


def wrap(fn: Callable[..., Any], rec: Recorder, name_of: Callable[..., str], before: Callable[..., None] | None = None) -> Callable[..., Any]:
    """``fn`` timed into ``rec`` under ``name_of(*args, **kwargs)`` (a bound callable or a function)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            before(*args, **kwargs)
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            rec.add(name_of(*args, **kwargs), time.perf_counter() - t0)

    return wrapper


def instrument(model: Any, registry: Any, rec: Recorder) -> Callable[[], None]:
    """Install every timer; returns a function that removes them again."""
    from nextgpt_registry import resolve_target

    import nextgpt_core.model as model_module
    from nextgpt_core.conversation import Media
    from nextgpt_core.interfaces import Decoder
    from nextgpt_core.signal_runs import SignalRunController

    undo: list[Callable[[], None]] = []
    hooks: list[Any] = []

    def module_timer(module: Any, name: str) -> None:
        state = {"t0": 0.0}

        def pre(_m: Any, _a: Any) -> None:
            state["t0"] = time.perf_counter()

        def post(_m: Any, _a: Any, _o: Any) -> None:
            rec.add(name, time.perf_counter() - state["t0"])

        hooks.append(module.register_forward_pre_hook(pre))
        hooks.append(module.register_forward_hook(post))

    # -- inputs: encode_media (per modality) and what it does inside
    def set_modality(media: Any, key: str | None = None) -> None:
        rec.current_modality = key or model.modality_of(media)

    model.encode_media = wrap(model.encode_media, rec, lambda media, key=None: f"encode.{key or model.modality_of(media)}",
                              before=set_modality)
    orig_hash = Media.content_hash
    Media.content_hash = wrap(orig_hash, rec, lambda *a, **k: f"encode.{rec.current_modality}.hash")  # type: ignore[method-assign]
    undo.append(lambda: setattr(Media, "content_hash", orig_hash))
    for key in model.input_modalities():
        io = model.media_io(key)
        io.read = wrap(io.read, rec, lambda *a, _k=key, **kw: f"encode.{_k}.read")
        enc = model.encoders[key]
        enc.preprocess = wrap(enc.preprocess, rec, lambda *a, _k=key, **kw: f"encode.{_k}.preprocess")
        module_timer(enc, f"encode.{key}.forward")
    for key, proj in model.input_projectors.items():
        module_timer(proj, f"input_projection.{key}")
    model.prepare_inputs = wrap(model.prepare_inputs, rec, lambda *a, **k: "prepare_inputs")

    # -- the LLM: prefill / decode steps / extra cached step, and the controller
    llm = model.llm

    def llm_pre(_m: Any, _a: Any) -> None:
        rec.llm_t0 = time.perf_counter()

    def llm_post(_m: Any, _a: Any, _o: Any) -> None:
        dt = time.perf_counter() - rec.llm_t0
        if rec.in_generate:
            if rec.generate_forwards == 0:
                rec.add("llm.prefill", dt)
            else:
                rec.add("llm.decode", dt)
                rec.decode_steps.append(dt)
            rec.generate_forwards += 1
        else:
            rec.add("llm.extra_step", dt)

    hooks.append(llm.register_forward_pre_hook(llm_pre))
    hooks.append(llm.register_forward_hook(llm_post))
    orig_llm_generate = llm.generate

    def llm_generate(*a: Any, **k: Any) -> Any:
        rec.in_generate = True
        t0 = time.perf_counter()
        try:
            return orig_llm_generate(*a, **k)
        finally:
            rec.add("llm.generate", time.perf_counter() - t0)
            rec.in_generate = False

    llm.generate = llm_generate
    undo.append(lambda: delattr(llm, "generate"))
    orig_run = model_module.run_generation
    model_module.run_generation = wrap(orig_run, rec, lambda *a, **k: "run_generation")
    undo.append(lambda: setattr(model_module, "run_generation", orig_run))
    ctrl_call, ctrl_stop = SignalRunController.__call__, SignalRunController.stop
    SignalRunController.__call__ = wrap(ctrl_call, rec, lambda *a, **k: "llm.controller")  # type: ignore[method-assign]
    SignalRunController.stop = wrap(ctrl_stop, rec, lambda *a, **k: "llm.controller")  # type: ignore[method-assign]
    undo.append(lambda: (setattr(SignalRunController, "__call__", ctrl_call), setattr(SignalRunController, "stop", ctrl_stop)))

    # -- outputs: projectors, decode_run, Decoder.__call__ and the pipeline call, loads
    for key, projs in model.output_projectors.items():
        for proj in projs.values():
            module_timer(proj, f"output_projector.{key}")
    model.decode_run = wrap(model.decode_run, rec, lambda key, *a, **k: f"decode_run.{key}")
    model._assemble = wrap(model._assemble, rec, lambda *a, **k: "assemble")
    key_of = {id(d): k for k, d in model.decoders.items()}
    orig_dec_call, orig_dec_load = Decoder.__call__, Decoder.load
    Decoder.__call__ = wrap(orig_dec_call, rec, lambda self, *a, **k: f"decoder.{key_of.get(id(self), type(self).__name__)}")  # type: ignore[method-assign]

    def timed_load(self: Any) -> Any:
        was = self.is_loaded
        t0 = time.perf_counter()
        try:
            return orig_dec_load(self)
        finally:
            if not was:
                rec.loads[key_of.get(id(self), type(self).__name__)] = time.perf_counter() - t0

    Decoder.load = timed_load  # type: ignore[method-assign]
    undo.append(lambda: (setattr(Decoder, "__call__", orig_dec_call), setattr(Decoder, "load", orig_dec_load)))
    for key, dec in model.decoders.items():
        dec.generate = wrap(dec.generate, rec, lambda *a, _k=key, **kw: f"decoder.{_k}.pipeline")

    # -- saving: each output modality's writer
    for key in model.output_modalities():
        klass = resolve_target(registry.modality(key).media_io)
        orig_write = klass.write
        klass.write = wrap(orig_write, rec, lambda *a, _k=key, **kw: f"save.{_k}")
        undo.append(lambda klass=klass, orig_write=orig_write: setattr(klass, "write", orig_write))

    def remove() -> None:
        for h in hooks:
            h.remove()
        for fn in reversed(undo):
            fn()
        for attr in ("encode_media", "prepare_inputs", "decode_run", "_assemble"):
            model.__dict__.pop(attr, None)
        for key in model.input_modalities():
            model.media_io(key).__dict__.pop("read", None)
            model.encoders[key].__dict__.pop("preprocess", None)
        for dec in model.decoders.values():
            dec.__dict__.pop("generate", None)

    return remove


def derive(acc: dict[str, float], steps: list[float], inputs: list[str], outputs: list[str]) -> dict[str, float]:
    """Per-request stage table from the raw timers (seconds); ``other`` entries are differences of nested timers."""
    g = acc.get
    row: dict[str, float] = {}
    enc_total = proj_total = 0.0
    for m in inputs:
        total = g(f"encode.{m}", 0.0)
        enc_total += total
        parts = {p: g(f"encode.{m}.{p}", 0.0) for p in ("hash", "read", "preprocess", "forward")}
        row[f"encode.{m}"] = total
        for p, v in parts.items():
            row[f"encode.{m}.{p}"] = v
        row[f"encode.{m}.other"] = total - sum(parts.values())
    for key in sorted(k[len("input_projection."):] for k in acc if k.startswith("input_projection.")):
        row[f"input_projection.{key}"] = g(f"input_projection.{key}", 0.0)
        proj_total += row[f"input_projection.{key}"]
    row["prompt.other"] = g("prepare_inputs", 0.0) - enc_total - proj_total
    row["prepare_inputs"] = g("prepare_inputs", 0.0)
    row["llm.prefill"] = g("llm.prefill", 0.0)
    row["llm.decode"] = g("llm.decode", 0.0)
    row["llm.decode_per_step_median"] = statistics.median(steps) if steps else 0.0
    row["llm.decode_per_step_mean"] = (sum(steps) / len(steps)) if steps else 0.0
    row["llm.controller"] = g("llm.controller", 0.0)
    row["llm.generate_loop_other"] = g("llm.generate", 0.0) - row["llm.prefill"] - row["llm.decode"] - row["llm.controller"]
    row["llm.generate"] = g("llm.generate", 0.0)
    row["llm.extra_step"] = g("llm.extra_step", 0.0)
    row["run_generation.other"] = g("run_generation", 0.0) - row["llm.generate"] - row["llm.extra_step"]
    row["run_generation"] = g("run_generation", 0.0)
    runs_total = 0.0
    for m in outputs:
        dr = g(f"decode_run.{m}", 0.0)
        runs_total += dr
        row[f"output_projector.{m}"] = g(f"output_projector.{m}", 0.0)
        row[f"decoder.{m}"] = g(f"decoder.{m}", 0.0)
        row[f"decoder.{m}.pipeline"] = g(f"decoder.{m}.pipeline", 0.0)
        row[f"decoder.{m}.checks"] = row[f"decoder.{m}"] - row[f"decoder.{m}.pipeline"]
        row[f"decode_run.{m}.other"] = dr - row[f"output_projector.{m}"] - row[f"decoder.{m}"]
        row[f"decode_run.{m}"] = dr
    row["assemble.other"] = g("assemble", 0.0) - runs_total
    row["assemble"] = g("assemble", 0.0)
    row["generate.other"] = g("generate", 0.0) - row["prepare_inputs"] - row["run_generation"] - row["assemble"]
    row["generate"] = g("generate", 0.0)
    writers = 0.0
    for m in outputs:
        row[f"save.{m}"] = g(f"save.{m}", 0.0)
        writers += row[f"save.{m}"]
    row["save.other"] = g("save", 0.0) - writers
    row["save"] = g("save", 0.0)
    row["end_to_end"] = row["generate"] + row["save"]
    return row


def time_stages(args: argparse.Namespace, model: Any, registry: Any, files: dict[str, Path], work: Path) -> dict[str, Any]:
    import torch

    from nextgpt_core.conversation import Text

    rec = Recorder()
    remove = instrument(model, registry, rec)
    inputs, outputs = model.input_modalities(), model.output_modalities()
    thread_settings = args.thread_list
    samples: dict[int, list[dict[str, float]]] = {t: [] for t in thread_settings}
    cpu: dict[int, list[float]] = {t: [] for t in thread_settings}
    reference: dict[str, Any] = {}
    first_request: dict[str, Any] = {}
    counter = [0]

    def one(threads: int) -> tuple[dict[str, float], float, Any]:
        torch.set_num_threads(threads)
        conv = conversation_of(files)
        model.encoder_cache.clear()
        out = work / f"reply_{counter[0]}"
        counter[0] += 1
        gc.collect()
        rec.reset()
        c0 = time.process_time()
        t0 = time.perf_counter()
        reply = model.generate(conv, want=WANT, seed=args.seed)
        t1 = time.perf_counter()
        reply.save(out, registry)
        t2 = time.perf_counter()
        dc = time.process_time() - c0
        rec.acc["generate"] = t1 - t0
        rec.acc["save"] = t2 - t1
        shutil.rmtree(out, ignore_errors=True)
        return derive(rec.acc, rec.decode_steps, inputs, outputs), dc, reply

    try:
        # first request of the process: the decoders load here (Decoder.load timed apart)
        row, dc, reply = one(thread_settings[0])
        first_request = {"threads": thread_settings[0], "end_to_end_s": row["end_to_end"], "generate_s": row["generate"],
                         "decoder_load_s": dict(rec.loads),
                         "note": "first request after the build: lazy decoder loads (inside decode_run) and first-call costs"}
        reference = {
            "token_ids": reply.token_ids,
            "generated_tokens": len(reply.token_ids),
            "llm_forward_passes": rec.generate_forwards + rec.count.get("llm.extra_step", 0),
            "decode_steps": len(rec.decode_steps),
            "extra_cached_step": bool(rec.count.get("llm.extra_step")),
            "reply_parts": [type(p).__name__ if isinstance(p, Text) else f"Media({p.modality})" for p in reply.parts],
            "saved_files": sorted(f"{k}{registry.modality(k).output_extension}" for k in WANT) + ["reply.txt"],
        }
        gc.collect()
        gc.freeze()
        for rep in range(args.warmup + args.reps):
            order = thread_settings if rep % 2 == 0 else list(reversed(thread_settings))
            for threads in order:
                row, dc, reply = one(threads)
                if reply.token_ids != reference["token_ids"]:
                    sys.exit("error: the reply changed between repetitions (same seed); timings would not compare")
                if rep >= args.warmup:
                    samples[threads].append(row)
                    cpu[threads].append(dc)
    finally:
        remove()
        torch.set_num_threads(thread_settings[0])
    with torch.no_grad():
        reference["prompt_positions"] = int(model.prepare_inputs(conversation_of(files), len(reference["token_ids"]))[0].shape[1])
    model.encoder_cache.clear()
    keys = list(samples[thread_settings[0]][0])
    stages = {str(t): {k: summary([r[k] for r in samples[t]]) for k in keys} for t in thread_settings}
    return {
        "reply": reference,
        "first_request": first_request,
        "stages_s": stages,
        "process_cpu_time_s": {str(t): summary(cpu[t]) for t in thread_settings},
        "samples_s": {str(t): samples[t] for t in thread_settings},
    }


# ---------------------------------------------------------------------------------------------- 2. memory (children)
def memory_child(variant: str, text_seed: int) -> None:
    """Runs in a fresh interpreter: one variant, one JSON line on stdout."""
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    from nextgpt_core import Conversation  # noqa: F401  (the imports a user's process makes)

    after_imports = mem_point()
    model, _ = build_model()
    after_build = mem_point()
    if variant == "up_front":
        model.load_decoders()
    after_load = mem_point()
    want = WANT if variant == "lazy_all_media" else []
    reply = model.generate(TEXT_PROMPT, want=want, seed=text_seed)
    end = mem_point()
    diffusers_imported = "diffusers" in sys.modules
    loaded = [k for k, d in model.decoders.items() if d.is_loaded]
    dec_params = {k: decoder_params(d) for k, d in model.decoders.items()}
    for decoder in model.decoders.values():  # imports diffusers and the pipeline classes (no weights): library share
        _ = decoder.pipeline_class
    after_pipeline_imports = mem_point()
    print(json.dumps({
        "variant": variant,
        "after_imports": after_imports, "after_build": after_build, "after_load_decoders": after_load, "end": end,
        "after_pipeline_imports": after_pipeline_imports,
        "decoders_loaded": loaded,
        "reply_media": [m.modality for m in reply.media],
        "generated_tokens": len(reply.token_ids),
        "model_params": module_params(model),
        "model_param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "decoder_params": dec_params,
        "decoder_param_bytes": sum(dec_params.values()) * 4,
        "diffusers_imported": diffusers_imported,
        "wall_s": time.perf_counter() - t0,
    }))


def find_text_seed_child() -> None:
    """Runs in a fresh interpreter: prints the seed of :func:`find_text_seed`."""
    import torch

    torch.set_num_threads(1)
    model, _ = build_model()
    print(json.dumps({"text_seed": find_text_seed(model)}))


def find_text_seed(model: Any) -> int:
    """The first seed >= 0 for which the text-only request starts no signal run (so no decoder would load)."""

    for seed in range(50):
        reply = model.generate(TEXT_PROMPT, want=[], seed=seed)
        if not reply.media and not (set(reply.token_ids) & model.tokens.all_signal_ids):
            return seed
    sys.exit("error: no seed < 50 gives a text-only reply; the lazy-vs-up-front comparison needs one")


def run_children(jobs: list[list[str]], parallel: int) -> list[dict[str, Any]]:
    """Run each argv as ``python this_script ...`` at most ``parallel`` at a time; parse each one's last stdout line."""
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    pending = list(enumerate(jobs))
    running: list[tuple[int, subprocess.Popen[str]]] = []
    while pending or running:
        while pending and len(running) < parallel:
            i, argv = pending.pop(0)
            running.append((i, subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv], cwd=ROOT,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
        i, proc = running.pop(0)
        out, err = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"error: child {jobs[i]} failed ({proc.returncode}):\n{err[-3000:]}")
        results[i] = json.loads(out.strip().splitlines()[-1])
    return [r for r in results if r is not None]


def measure_memory(args: argparse.Namespace, text_seed: int) -> dict[str, Any]:
    variants = ["lazy", "up_front", "lazy_all_media"]
    jobs = []
    for run in range(args.memory_runs):
        order = variants[run % 3:] + variants[: run % 3]
        jobs += [["--memory-child", v, "--text-seed", str(text_seed)] for v in order]
    runs = run_children(jobs, args.jobs)
    by: dict[str, list[dict[str, Any]]] = {v: [r for r in runs if r["variant"] == v] for v in variants}
    if any(r["decoders_loaded"] for r in by["lazy"]):
        sys.exit("error: the text-only request loaded a decoder in the lazy variant")

    def med(v: str, f: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(f(r) for r in by[v])

    table: dict[str, Any] = {}
    for v in variants:
        r0 = by[v][0]
        table[v] = {
            "peak_rss_mib": summary([r["end"]["peak_kib"] / 1024 for r in by[v]]),
            "vmhwm_mib": summary([r["end"]["hwm_kib"] / 1024 for r in by[v]]),
            "rss_end_mib": summary([r["end"]["rss_kib"] / 1024 for r in by[v]]),
            "peak_after_imports_mib": med(v, lambda r: r["after_imports"]["peak_kib"] / 1024),
            "rss_after_imports_mib": med(v, lambda r: r["after_imports"]["rss_kib"] / 1024),
            "rss_after_build_mib": med(v, lambda r: r["after_build"]["rss_kib"] / 1024),
            "rss_after_load_decoders_mib": med(v, lambda r: r["after_load_decoders"]["rss_kib"] / 1024),
            "rss_after_pipeline_imports_mib": med(v, lambda r: r["after_pipeline_imports"]["rss_kib"] / 1024),
            "decoders_loaded": r0["decoders_loaded"],
            "model_params": r0["model_params"],
            "decoder_params_resident": sum(r0["decoder_params"].values()),
            "decoder_params_by_modality": r0["decoder_params"],
            "resident_params": r0["model_params"] + sum(r0["decoder_params"].values()),
            "resident_param_mib_fp32": (r0["model_param_bytes"] + r0["decoder_param_bytes"]) / 2**20,
            "diffusers_imported": r0["diffusers_imported"],
            "reply_media": r0["reply_media"],
            "child_wall_s": med(v, lambda r: r["wall_s"]),
        }
    ratios = {
        "peak_rss_lazy_over_up_front": table["lazy"]["peak_rss_mib"]["median"] / table["up_front"]["peak_rss_mib"]["median"],
        "rss_end_lazy_over_up_front": table["lazy"]["rss_end_mib"]["median"] / table["up_front"]["rss_end_mib"]["median"],
        "resident_params_lazy_over_up_front": table["lazy"]["resident_params"] / table["up_front"]["resident_params"],
        "peak_rss_lazy_all_media_over_up_front":
            table["lazy_all_media"]["peak_rss_mib"]["median"] / table["up_front"]["peak_rss_mib"]["median"],
    }
    lazy = table["lazy"]
    split = {
        "note": "where the up-front RSS at end goes, from medians: importing diffusers and the three pipeline classes "
                "(measured in the lazy children after their request, no weights) vs the rest (tiny weights, "
                "unconditional embeddings, allocator)",
        "up_front_minus_lazy_rss_end_mib": table["up_front"]["rss_end_mib"]["median"] - lazy["rss_end_mib"]["median"],
        "pipeline_imports_mib": lazy["rss_after_pipeline_imports_mib"] - lazy["rss_end_mib"]["median"],
        "decoder_weights_fp32_mib": table["up_front"]["decoder_params_resident"] * 4 / 2**20,
    }
    return {"text_prompt": TEXT_PROMPT, "text_seed": text_seed, "runs_per_variant": args.memory_runs,
            "parallel_children": args.jobs, "variants": table, "ratios": ratios, "up_front_split": split,
            "runs": runs}


# ---------------------------------------------------------------------------------------------- 3. full size (child)
def _hf_config(path: Path) -> dict[str, Any]:
    cfg = json.loads(path.read_text())
    for k in ("architectures", "_name_or_path", "torch_dtype", "transformers_version", "model_type"):
        cfg.pop(k, None)
    return cfg


def full_size_child() -> None:
    """Parameters of the full-size parts, built on the meta device from the official configs (one JSON line)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel, UNet3DConditionModel
    from nextgpt_audio.decoders import AudioLDMAudioDecoder
    from nextgpt_audio.encoders import ImageBindAudioEncoder
    from nextgpt_depth.encoders import ImageBindDepthEncoder
    from nextgpt_image.decoders import StableDiffusionImageDecoder
    from nextgpt_image.encoders import ImageBindImageEncoder
    from nextgpt_video.decoders import ZeroScopeVideoDecoder
    from transformers import (
        ClapTextConfig,
        ClapTextModelWithProjection,
        CLIPTextConfig,
        CLIPTextModel,
        LlamaConfig,
        LlamaForCausalLM,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
    )

    from nextgpt_core.projectors import LinearInputProjector, TransformerOutputProjector

    def diff(klass: Any, path: Path) -> int:
        with torch.device("meta"):
            return module_params(klass.from_config(json.loads(path.read_text())))

    def hf(klass: Any, config_class: Any, path: Path) -> int:
        with torch.device("meta"):
            return module_params(klass(config_class(**_hf_config(path))))

    sd, zs, al = CONFIGS / "stable-diffusion-v1-5", CONFIGS / "zeroscope_v2_576w", CONFIGS / "audioldm-l-full"
    decoders = {
        "image (SD-1.5)": {"unet": diff(UNet2DConditionModel, sd / "unet.json"), "vae": diff(AutoencoderKL, sd / "vae.json"),
                           "text_encoder": hf(CLIPTextModel, CLIPTextConfig, sd / "text_encoder.json")},
        "video (ZeroScope v2 576w)": {"unet": diff(UNet3DConditionModel, zs / "unet.json"), "vae": diff(AutoencoderKL, zs / "vae.json"),
                                      "text_encoder": hf(CLIPTextModel, CLIPTextConfig, zs / "text_encoder.json")},
        "audio (AudioLDM-l-full)": {"unet": diff(UNet2DConditionModel, al / "unet.json"), "vae": diff(AutoencoderKL, al / "vae.json"),
                                    "text_encoder": hf(ClapTextModelWithProjection, ClapTextConfig, al / "text_encoder.json"),
                                    "vocoder": hf(SpeechT5HifiGan, SpeechT5HifiGanConfig, al / "vocoder.json")},
    }
    hidden = 4096
    with torch.device("meta"):
        llm = module_params(LlamaForCausalLM(LlamaConfig(**_hf_config(CONFIGS / "vicuna-7b-v0" / "config.json"))))
        # with a checkpoint, the image and the video encoder share one vision branch: count it once
        encoders = {k: module_params(c.from_options({"size": "huge"})) for k, c in (
            ("image+video", ImageBindImageEncoder), ("audio", ImageBindAudioEncoder), ("depth", ImageBindDepthEncoder))}
        in_proj = {k: module_params(LinearInputProjector.from_options({"in_dim": 1024, "out_dim": hidden}))
                   for k in ("image", "video", "audio", "depth")}
        out_proj = {}
        for key, dec, n in (("image", StableDiffusionImageDecoder, 4), ("video", ZeroScopeVideoDecoder, 24),
                            ("audio", AudioLDMAudioDecoder, 8)):
            spec = dec.conditioning_inputs_of(dec.make_config({"path": "/not/loaded"}))[0]  # full-size declaration
            out_proj[key] = module_params(TransformerOutputProjector.from_options(
                {"in_dim": hidden, "num_signal_tokens": n, "out_len": spec.length, "out_dim": spec.dim}))
    always = {"llm (Vicuna-7B v0, vocab 32001)": llm, **{f"encoder.{k} (ImageBind-huge branch)": v for k, v in encoders.items()},
              **{f"input_projector.{k} (linear 1024->4096)": v for k, v in in_proj.items()},
              **{f"output_projector.{k} (transformer, official sizes)": v for k, v in out_proj.items()}}
    base = sum(always.values())
    dec_total = {k: sum(v.values()) for k, v in decoders.items()}
    all_dec = sum(dec_total.values())
    print(json.dumps({
        "decoders": decoders, "decoder_totals": dec_total, "decoders_all": all_dec,
        "always_resident": always, "always_resident_total": base,
        "lazy_text_only_params": base, "up_front_params": base + all_dec,
        "ratio_lazy_over_up_front": base / (base + all_dec),
        "fp16_bytes": {"lazy_text_only": 2 * base, "up_front": 2 * (base + all_dec), "decoders": 2 * all_dec},
        "note": "parameters only (no activations, no CUDA context); the extra 44 token rows nextgpt adds to the LLM "
                "(~0.4M) are left out; the image and video encoders share one ImageBind vision branch (loaded from one "
                "checkpoint), so it is counted once",
    }))


# ---------------------------------------------------------------------------------------------- report
def stage_rows(inputs: list[str], outputs: list[str], proj_keys: list[str]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for m in inputs:
        rows.append((f"encode.{m}", f"**encode {m}** (hash + read + preprocess + encoder, cold cache)"))
        for p, what in (("hash", "SHA-256 of the file"), ("read", "MediaIO.read"), ("preprocess", "Encoder.preprocess"),
                        ("forward", "encoder forward"), ("other", "cache, checks")):
            rows.append((f"encode.{m}.{p}", f"&nbsp;&nbsp;{m}: {what}"))
    for k in proj_keys:
        rows.append((f"input_projection.{k}", f"input projection {k}"))
    rows += [
        ("prompt.other", "prompt: render, tokenize, embed text, concat"),
        ("prepare_inputs", "**prepare_inputs total**"),
        ("llm.prefill", "**LLM prefill** (first forward)"),
        ("llm.decode", "**LLM decode steps, total**"),
        ("llm.decode_per_step_median", "&nbsp;&nbsp;per decode step (median in a request)"),
        ("llm.controller", "signal-run controller (sampling, masks, stop checks)"),
        ("llm.generate_loop_other", "transformers generate loop, the rest"),
        ("llm.extra_step", "extra cached step"),
        ("run_generation.other", "run_generation: config, gather hidden states"),
        ("run_generation", "**run_generation total**"),
    ]
    for m in outputs:
        rows += [
            (f"output_projector.{m}", f"output projector {m}"),
            (f"decoder.{m}", f"**decoder {m}** (Decoder.__call__)"),
            (f"decoder.{m}.pipeline", f"&nbsp;&nbsp;{m}: pipeline (decoder.generate)"),
            (f"decoder.{m}.checks", f"&nbsp;&nbsp;{m}: options, shape checks, negatives"),
            (f"decode_run.{m}.other", f"decode_run {m}: signal embeds, options merge"),
        ]
    rows += [
        ("assemble.other", "reply text decode"),
        ("generate.other", "generate: argument checks, controller set-up, Response"),
        ("generate", "**NextGPT.generate total**"),
    ]
    for m in outputs:
        rows.append((f"save.{m}", f"save {m} (MediaIO.write)"))
    rows += [("save.other", "save: folder, reply.txt"), ("save", "**Response.save total**"),
             ("end_to_end", "**end to end (generate + save)**")]
    return rows


def print_report(report: dict[str, Any], args: argparse.Namespace, inputs: list[str], outputs: list[str], proj_keys: list[str]) -> None:
    t = report.get("timing")
    if t:
        threads = [str(x) for x in args.thread_list]
        rep = t["reply"]
        print(f"## Any-to-any request on tiny (real plugins; {args.reps} reps per thread setting after {args.warmup} "
              f"warm-up rounds; {rep['generated_tokens']} tokens, {rep['decode_steps']} decode steps, extra step: "
              f"{rep['extra_cached_step']}; reply {rep['reply_parts']})\n")
        head = " | ".join(f"{n} thr median (ms) | {n} thr p90 (ms)" for n in threads)
        print(f"| stage | {head} | share of e2e ({threads[0]} thr) |")
        print("|---|" + "---:|---:|" * len(threads) + "---:|")
        e2e = t["stages_s"][threads[0]]["end_to_end"]["median"]
        for key, label in stage_rows(inputs, outputs, proj_keys):
            cells = " | ".join(f"{t['stages_s'][n][key]['median'] * 1e3:.2f} | {t['stages_s'][n][key]['p90'] * 1e3:.2f}"
                               for n in threads)
            share = t["stages_s"][threads[0]][key]["median"] / e2e * 100
            print(f"| {label} | {cells} | {share:.1f} % |")
        fr = t["first_request"]
        print(f"\n- first request of the process ({fr['threads']} thread): {fr['end_to_end_s'] * 1e3:.0f} ms end to end; "
              f"lazy decoder loads: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in fr["decoder_load_s"].items()))
        print("- process CPU time per request (all threads): " + ", ".join(
            f"{n} thr {t['process_cpu_time_s'][n]['median'] * 1e3:.0f} ms" for n in threads))
    m = report.get("memory")
    if m:
        print(f"\n## Memory: lazy decoders vs loaded up front ({m['runs_per_variant']} fresh processes per variant; "
              f"text-only request = {m['text_prompt']!r}, seed {m['text_seed']})\n")
        print("| variant | peak RSS median (MiB) | min-max | VmHWM median | RSS at end (MiB) | RSS after imports / build (MiB) "
              "| decoders loaded | decoder params resident | all params resident (fp32 MiB) | diffusers imported |")
        print("|---|---:|---:|---:|---:|---:|---|---:|---:|---|")
        for v, r in m["variants"].items():
            print(f"| {v} | {r['peak_rss_mib']['median']:.1f} | {r['peak_rss_mib']['min']:.1f}-{r['peak_rss_mib']['max']:.1f} "
                  f"| {r['vmhwm_mib']['median']:.1f} "
                  f"| {r['rss_end_mib']['median']:.1f} | {r['rss_after_imports_mib']:.1f} / {r['rss_after_build_mib']:.1f} "
                  f"| {', '.join(r['decoders_loaded']) or '-'} | {r['decoder_params_resident']:,} "
                  f"| {r['resident_params']:,} ({r['resident_param_mib_fp32']:.2f}) | {r['diffusers_imported']} |")
        ra = m["ratios"]
        print(f"\n- peak RSS lazy/up front: **{ra['peak_rss_lazy_over_up_front']:.3f}**; RSS at end lazy/up front: "
              f"{ra['rss_end_lazy_over_up_front']:.3f}; resident parameters lazy/up front: "
              f"{ra['resident_params_lazy_over_up_front']:.3f}")
        sp = m["up_front_split"]
        print(f"- up front minus lazy, RSS at end: {sp['up_front_minus_lazy_rss_end_mib']:.1f} MiB, of which importing "
              f"diffusers + the 3 pipeline classes {sp['pipeline_imports_mib']:.1f} MiB; tiny decoder weights "
              f"{sp['decoder_weights_fp32_mib']:.1f} MiB fp32")
    f = report.get("full_size")
    if f:
        print("\n## Full size (parameters from the official configs, meta device)\n")
        print("| part | parameters | fp16 GB |")
        print("|---|---:|---:|")
        for k, v in f["decoder_totals"].items():
            print(f"| decoder {k} | {v:,} | {2 * v / 1e9:.2f} |")
        print(f"| **all three decoders** | {f['decoders_all']:,} | {2 * f['decoders_all'] / 1e9:.2f} |")
        print(f"| always resident (LLM, 4 encoders, projectors) | {f['always_resident_total']:,} | "
              f"{2 * f['always_resident_total'] / 1e9:.2f} |")
        print(f"| **lazy, text-only reply** | {f['lazy_text_only_params']:,} | {f['fp16_bytes']['lazy_text_only'] / 1e9:.2f} |")
        print(f"| **up front** | {f['up_front_params']:,} | {f['fp16_bytes']['up_front'] / 1e9:.2f} |")
        print(f"\n- resident parameters lazy/up front at full size: **{f['ratio_lazy_over_up_front']:.3f}**")
    print(f"\n- wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions per thread setting (>= 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up rounds (after the first request)")
    parser.add_argument("--threads", default="1", help="torch thread counts, comma-separated, interleaved (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="request seed")
    parser.add_argument("--memory-runs", type=int, default=5, help="fresh processes per memory variant (>= 5)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="child processes at a time")
    parser.add_argument("--skip-memory", action="store_true", help="no memory children, no full-size count")
    parser.add_argument("--out", type=Path, default=OUT_JSON)
    parser.add_argument("--memory-child", choices=["lazy", "up_front", "lazy_all_media"], help=argparse.SUPPRESS)
    parser.add_argument("--text-seed", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--full-size-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--text-seed-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.text_seed)
        return
    if args.full_size_child:
        full_size_child()
        return
    if args.text_seed_child:
        find_text_seed_child()
        return
    if args.reps < 20:
        parser.error("--reps must be at least 20")
    if args.memory_runs < 5:
        parser.error("--memory-runs must be at least 5")
    args.thread_list = [int(x) for x in args.threads.split(",") if x.strip()]
    t_start = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "any_to_any_request",
                              "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    phases: dict[str, float] = {}

    # children first, while this process is still small (nothing heavy imported): a child's ru_maxrss starts from
    # its parent's RSS at fork/exec on Linux
    if not args.skip_memory:
        t0 = time.perf_counter()
        seed_run, full = run_children([["--text-seed-child"], ["--full-size-child"]], args.jobs)
        report["full_size"] = full
        phases["text_seed_and_full_size_children_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        report["memory"] = measure_memory(args, seed_run["text_seed"])
        report["memory"]["parent_rss_at_spawn_mib"] = rss_now_kib() / 1024
        phases["memory_children_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(args.thread_list[0])
    report["machine"] = machine()
    report["git"] = git_state()
    t_build = time.perf_counter()
    model, registry = build_model()
    build_s = time.perf_counter() - t_build
    with tempfile.TemporaryDirectory(prefix="nextgpt-a2a-") as tmp:
        files = write_inputs(Path(tmp))
        timing = time_stages(args, model, registry, files, Path(tmp) / "replies")
        timing["input_files"] = {k: {"name": p.name, "bytes": p.stat().st_size} for k, p in files.items()}
    phases["timing_s"] = time.perf_counter() - t0
    gen = model.composition.generation
    report["request"] = {
        "composition": "tiny", "plugins": REAL,
        "inputs": ["image (PNG 64x48)", "video (mp4, 12 frames 64x48, 6 fps)", "audio (WAV 1.5 s, 16 kHz)",
                   "depth (PNG 64x48)"],
        "prompt": PROMPT, "want": WANT, "seed": args.seed, "max_new_tokens": gen.max_new_tokens,
        "sampling": {"do_sample": gen.do_sample, "temperature": gen.temperature, "top_p": gen.top_p, "top_k": gen.top_k},
        "decode_options": {k: dict(model.resolved.modalities[k].decode_options) for k in WANT},
        "model_build_s": build_s,
    }
    report["method"] = {
        "repetitions_per_thread_setting": args.reps, "warmup_rounds": args.warmup, "torch_threads": args.thread_list,
        "interleaved": "thread settings alternate within every repetition, order reversed every other repetition",
        "cold": "fresh Conversation of Media.from_path parts and an empty encoder cache every request; "
                "Response.save into a fresh folder (deleted after, outside the timing)",
        "timer": "time.perf_counter in wrappers/forward hooks; gc.collect() before each request outside the timing, "
                 "gc.freeze() after set-up",
        "stage_notes": "medians per stage; '.other'/'checks' rows are differences of nested timers; the LLM forward "
                       "hooks sit on the causal LM module (a forward includes lm_head); 'transformers generate loop, "
                       "the rest' = llm.generate minus forwards minus the controller",
        "memory": "one fresh interpreter per variant and run, variants rotated, --jobs at a time, started before this "
                  "process imports torch; peak = ru_maxrss (VmHWM alongside), RSS = VmRSS",
    }
    report["timing"] = timing
    phases["total_s"] = time.perf_counter() - t_start
    report["wall_time"] = phases
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report, args, model.input_modalities(), model.output_modalities(), sorted(model.input_projectors))
    print("- run time: " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in phases.items()))


if __name__ == "__main__":
    main()
