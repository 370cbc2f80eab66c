"""Peak memory of one stage-3 training step with and without gradient checkpointing.

One step = what ``Trainer.train()`` does for one optimizer step of stage 3 (instruction tuning: LoRA + all
projectors + the added tokens' rows): lay out and collate a batch of conversations (their input media encoded by
the frozen encoders), the LLM forward with hidden states, the LM loss and the per-modality L2 losses, backward,
gradient clipping, AdamW (its state is created in this step), the metrics row.

The model: the ``tiny`` composition's real plugins (image, video, audio, depth: tiny ImageBind-style encoders,
tiny SD / ZeroScope / AudioLDM decoders) around a **bigger** random-init tiny Llama (``--hidden``,
``--layers``, ``--heads``; intermediate = 11/4 x hidden), written to a composition TOML in a temporary folder, so
that the LLM's activations dominate a step. The data: ``--batch-size`` synthetic conversations in our JSONL format
(media from ``make_synthetic_dataset``), each ``--turns`` user turns (an image, a sound and a long question) and
assistant turns (a long answer, then an image and a sound to generate), read with ``read_dataset``; the stage-2
targets come from ``cache_targets``. The sequence lengths are reported.

Measurement: each configuration runs in a **fresh interpreter** (``--runs`` per configuration, order alternating,
``--jobs`` at a time; this parent never imports torch). A child builds everything, lays out the batch once (so the
media readers and caches are warm), builds the Trainer (``TrainConfig(gradient_checkpointing=...)``), runs
``gc.collect()``, resets the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs`` resets ``VmHWM`` to the
current RSS), reads ``VmRSS``, runs the one step, and reads ``VmHWM``. Reported: the step's peak = ``VmHWM`` after
minus ``VmRSS`` before (what the step adds on top of the resident model, data and libraries), its median over
runs per configuration, and the ratio with / without checkpointing. Peak RSS is what the OS had to provide: it
counts torch's CPU allocations (which ``tracemalloc`` does not see) and the allocator's slack.

A check, not a timing: the first step's loss and the sum of |trainable parameters| after the step must be the
same with and without checkpointing (it changes memory and time, never the numbers); the script stops otherwise,
and if the configuration did not switch checkpointing on or off in the LLM's layers.

Run from the repository root (about 8-9 minutes on the 2-vCPU VM with the defaults: 20 children)::

    .venv/bin/python benchmarks/training_memory.py [--runs 5] [--layers 12] [--hidden 256] [--turns 2] [--quick]

Writes ``docs/benchmarks/training_memory.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench_common import git_state, machine

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "docs" / "benchmarks" / "training_memory.json"
TINY_TOML = ROOT / "nextgpt_core" / "compositions" / "tiny.toml"
REAL = ["image", "video", "audio", "depth"]
CONFIGS = ("off", "on")
#: The children's malloc settings: glibc's defaults (what a user's process sees), and a fixed mmap threshold of
#: 64 KiB, so every tensor buffer of 64 KiB or more is its own mapping, returned to the OS when freed (the peak RSS
#: then follows the live tensors instead of what glibc keeps for reuse).
ALLOCATORS: dict[str, dict[str, str]] = {"glibc_default": {}, "mmap_threshold_64k": {"MALLOC_MMAP_THRESHOLD_": "65536"}}
for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_k, "1")


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> None:
    """Reset this process's ``VmHWM`` to its current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def composition_toml(hidden: int, layers: int, heads: int, max_positions: int) -> str:
    """The built-in ``tiny.toml`` with a bigger LLM (and a context long enough for the conversations)."""
    text = TINY_TOML.read_text()
    swaps = {
        'name = "tiny"': 'name = "tiny-bench-memory"',
        "hidden_size = 64": f"hidden_size = {hidden}",
        "intermediate_size = 128": f"intermediate_size = {hidden * 11 // 4}",
        "num_hidden_layers = 2": f"num_hidden_layers = {layers}",
        "num_attention_heads = 4": f"num_attention_heads = {heads}",
        "num_key_value_heads = 4": f"num_key_value_heads = {heads}",
        "max_position_embeddings = 512": f"max_position_embeddings = {max_positions}",
        "max_context_tokens = 512": f"max_context_tokens = {max_positions}",
    }
    for old, new in swaps.items():
        if old not in text:
            raise RuntimeError(f"{TINY_TOML} no longer has {old!r}; update training_memory.py")
        text = text.replace(old, new)
    # the measured setting: LoRA on q/k/v/o (the default is now peft's per-architecture choice, q/v for Llama)
    return text + '\n[lora]\ntarget_modules = ["q_proj", "k_proj", "v_proj", "o_proj"]\n'


def conversation_rows(ds: Any, batch: int, turns: int) -> list[dict[str, Any]]:
    """``batch`` conversations in our JSONL format: per turn an image, a sound and a long question; a long answer,
    then an image and a sound to generate (captions of the synthetic items)."""
    images, sounds = ds.items["image"], ds.items["audio"]
    captions = [it.caption for items in ds.items.values() for it in items]
    rows = []
    for s in range(batch):
        parts: list[dict[str, Any]] = []
        for k in range(turns):
            image, sound = images[(s + k) % len(images)], sounds[(s + k) % len(sounds)]
            parts.append({"role": "user", "parts": [
                {"media": image.path.name, "modality": "image"}, {"media": sound.path.name, "modality": "audio"},
                {"text": "Describe the picture and the sound, then show me " + ". ".join(captions) + "."}]})
            parts.append({"role": "assistant", "parts": [
                {"text": "They show " + ", ".join(reversed(captions)) + ". Here they are."},
                {"generate": "image", "caption": image.caption}, {"generate": "audio", "caption": sound.caption}]})
        rows.append({"id": f"conversation_{s}", "turns": parts})
    return rows


# ---------------------------------------------------------------------------------------------- child
def child(args: argparse.Namespace) -> None:
    """One configuration in this fresh process; prints one JSON line."""
    import contextlib
    import gc
    import io
    import shutil
    import tempfile
    import time

    import torch
    import transformers
    from nextgpt_registry import Registry

    from nextgpt_core import NextGPT
    from nextgpt_core.plugins import DEFAULT_PLUGINS
    from nextgpt_core.training.collate import build_example
    from nextgpt_core.training.data import MediaLoader, read_dataset
    from nextgpt_core.training.synthetic import make_synthetic_dataset
    from nextgpt_core.training.targets import TargetCache, cache_targets
    from nextgpt_core.training.trainer import TrainConfig, Trainer

    checkpointing = args.child == "on"
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    rss_after_imports = status_kib("VmRSS")
    work = Path(tempfile.mkdtemp(prefix="nextgpt-bench-memory-"))
    try:
        (work / "composition.toml").write_text(composition_toml(args.hidden, args.layers, args.heads, 8192))
        registry = Registry.load(DEFAULT_PLUGINS, allow=REAL)
        model = NextGPT.from_composition(str(work / "composition.toml"), registry=registry)
        ds = make_synthetic_dataset(work / "data", n_per_modality=4, seed=0, modalities=("image", "audio"), registry=registry)
        rows = conversation_rows(ds, args.batch_size, args.turns)
        (work / "conversations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        loaded = read_dataset(work / "conversations.jsonl", registry=registry, media_root=ds.media,
                              require_target_media=False, on_error="fail")
        samples = loaded.samples
        cache_targets([t for s in samples for t in s.targets], model.decoders, work / "cache")
        loader = MediaLoader(registry)
        lengths = [build_example(model, s, media_loader=loader).length for s in samples]
        fields = TrainConfig.model_fields
        extra = {"gradient_checkpointing": checkpointing} if "gradient_checkpointing" in fields else {}
        config = TrainConfig(stage=3, steps=1, batch_size=args.batch_size, lr=TrainConfig.official_lr(3), seed=13,
                             progress=False, save_final=False, output_dir=work / "run", **extra)
        with contextlib.redirect_stderr(io.StringIO()):
            trainer = Trainer(model, samples, TargetCache(work / "cache"), config, loader)
        if checkpointing and not extra:  # a trainer without the option: switch it on the way it does
            model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        layers_checkpointed = sum(bool(getattr(m, "gradient_checkpointing", False)) for m in model.llm.modules()
                                  if type(m).__name__.endswith("DecoderLayer"))
        if bool(layers_checkpointed) != checkpointing:
            sys.exit(f"error: checkpointing {args.child!r} but {layers_checkpointed} decoder layers checkpoint")
        llm_params = sum(p.numel() for p in model.llm.parameters())
        model_params = sum(p.numel() for p in model.parameters())

        gc.collect()
        reset_peak_rss()
        rss_before = status_kib("VmRSS")
        started = time.perf_counter()
        result = trainer.train()
        step_s = time.perf_counter() - started
        peak = status_kib("VmHWM")
        rss_after = status_kib("VmRSS")
        checksum = float(sum(p.detach().abs().sum() for _, p in trainer.trainable.named_parameters()))
        llm_config = model.llm.config if hasattr(model.llm, "config") else None
        print(json.dumps({
            "config": args.child,
            "step_peak_above_before_kib": peak - rss_before,
            "rss_before_step_kib": rss_before,
            "peak_rss_during_step_kib": peak,
            "rss_after_step_kib": rss_after,
            "rss_after_imports_kib": rss_after_imports,
            "step_s": step_s,
            "loss": result.losses[0],
            "trainable_abs_sum_after_step": checksum,
            "sequence_lengths": lengths,
            "decoder_layers_checkpointed": layers_checkpointed,
            "llm_params": llm_params,
            "model_params": model_params,
            "trainable_params": trainer.trainable.trainable,
            "trainable_counts": dict(trainer.trainable.counts),
            "attn_implementation": getattr(llm_config, "_attn_implementation", None),
            "via_train_config": bool(extra),
        }), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- parent
def run_children(jobs: list[tuple[str, list[str]]], parallel: int) -> list[dict[str, Any]]:
    """Run each ``(allocator, argv)`` as ``python this_script argv`` with that allocator's environment, at most
    ``parallel`` at a time; parse each one's last stdout line (plus ``"allocator"``)."""
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    pending = list(enumerate(jobs))
    running: list[tuple[int, subprocess.Popen[str]]] = []
    while pending or running:
        while pending and len(running) < parallel:
            i, (allocator, argv) = pending.pop(0)
            env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
            env.update(ALLOCATORS[allocator])
            running.append((i, subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv], cwd=ROOT,
                                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
        i, proc = running.pop(0)
        out, err = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"error: child {jobs[i]} failed ({proc.returncode}):\n{err[-3000:]}")
        result = json.loads(out.strip().splitlines()[-1])
        result["allocator"] = jobs[i][0]
        results[i] = result
        print(f"child {i + 1}/{len(jobs)} ({jobs[i][0]}, checkpointing {result['config']}): step peak "
              f"{result['step_peak_above_before_kib'] / 1024:.1f} MiB, {result['step_s']:.1f} s",
              file=sys.stderr, flush=True)
    return [r for r in results if r is not None]


def mib(kib: float) -> float:
    return kib / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per configuration")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="child processes at a time (memory is per process; step times then share the CPUs)")
    parser.add_argument("--hidden", type=int, default=256, help="LLM hidden size")
    parser.add_argument("--layers", type=int, default=12, help="LLM decoder layers")
    parser.add_argument("--heads", type=int, default=8, help="LLM attention heads")
    parser.add_argument("--turns", type=int, default=2, help="user/assistant turn pairs per conversation")
    parser.add_argument("--batch-size", type=int, default=2, help="conversations per step")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each child")
    parser.add_argument("--allocators", default=",".join(ALLOCATORS),
                        help=f"malloc settings to run under, comma-separated (default all: {', '.join(ALLOCATORS)})")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: hidden 64, 2 layers, 1 turn, 1 run each, glibc defaults only")
    parser.add_argument("--out", type=Path, default=OUT_JSON)
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.hidden, args.layers, args.heads, args.turns = 1, 64, 2, 4, 1
        args.allocators = "glibc_default"
    for name in ("runs", "jobs", "hidden", "layers", "heads", "turns", "batch_size", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.hidden % args.heads:
        parser.error(f"--hidden {args.hidden} is not a multiple of --heads {args.heads}")
    if args.child:
        child(args)
        return
    if not Path("/proc/self/clear_refs").exists():
        sys.exit("error: needs Linux /proc/self/clear_refs to reset the peak RSS")

    settings = ["--hidden", str(args.hidden), "--layers", str(args.layers), "--heads", str(args.heads),
                "--turns", str(args.turns), "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    allocators = [a.strip() for a in args.allocators.split(",") if a.strip()]
    unknown = [a for a in allocators if a not in ALLOCATORS]
    if unknown or not allocators:
        parser.error(f"--allocators: unknown {unknown}; use any of {', '.join(ALLOCATORS)}")
    jobs: list[tuple[str, list[str]]] = []
    for run in range(args.runs):
        order = CONFIGS if run % 2 == 0 else CONFIGS[::-1]
        jobs += [(a, ["--child", c, *settings]) for a in allocators for c in order]
    runs = run_children(jobs, args.jobs)

    ref = next(r for r in runs if r["config"] == "off")
    for r in runs:
        if abs(r["loss"] - ref["loss"]) > 1e-4 * max(1.0, abs(ref["loss"])) or abs(
                r["trainable_abs_sum_after_step"] - ref["trainable_abs_sum_after_step"]) > 1e-4 * max(
                1.0, abs(ref["trainable_abs_sum_after_step"])):
            sys.exit(f"error: {r['config']} gave loss {r['loss']} / parameter sum {r['trainable_abs_sum_after_step']}, "
                     f"off gave {ref['loss']} / {ref['trainable_abs_sum_after_step']}: checkpointing changed the numbers")

    results: dict[str, Any] = {}
    for a in allocators:
        by = {c: [r for r in runs if r["config"] == c and r["allocator"] == a] for c in CONFIGS}

        def med(c: str, key: str) -> float:
            return statistics.median(r[key] for r in by[c])

        per = {
            c: {
                "step_peak_above_before_mib": {
                    "median": mib(med(c, "step_peak_above_before_kib")),
                    "min": mib(min(r["step_peak_above_before_kib"] for r in by[c])),
                    "max": mib(max(r["step_peak_above_before_kib"] for r in by[c])),
                    "runs": [round(mib(r["step_peak_above_before_kib"]), 2) for r in by[c]]},
                "rss_before_step_mib_median": mib(med(c, "rss_before_step_kib")),
                "process_peak_rss_mib_median": mib(med(c, "peak_rss_during_step_kib")),
                "step_s_median": med(c, "step_s"),
            }
            for c in CONFIGS
        }
        step = {c: per[c]["step_peak_above_before_mib"]["median"] for c in CONFIGS}
        whole = {c: per[c]["process_peak_rss_mib_median"] for c in CONFIGS}
        results[a] = {
            "environment": ALLOCATORS[a],
            **per,
            "ratio_step_peak_on_over_off": step["on"] / step["off"],
            "ratio_process_peak_on_over_off": whole["on"] / whole["off"],
            "ratio_step_time_on_over_off": per["on"]["step_s_median"] / per["off"]["step_s_median"],
        }
    report = {
        "benchmark": "training_memory",
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),  # imports torch here, after every child has run
        "git": git_state(),
        "method": {
            "step": "one stage-3 Trainer step (layout + encoders, LLM forward, LM + L2 losses, backward, clip, "
                    "AdamW with its state created), one batch of conversations",
            "step_peak": "VmHWM after the step minus VmRSS just before it (peak counter reset with "
                         "/proc/self/clear_refs after gc.collect()); each run a fresh process",
            "process_peak": "VmHWM after the step (the whole process: libraries, model, data and the step)",
            "allocators": {a: ALLOCATORS[a] for a in allocators},
            "runs_per_config": args.runs, "order": "alternating (off first on even runs)", "jobs": args.jobs,
            "torch_threads": args.threads,
            "gradient_checkpointing": "TrainConfig(gradient_checkpointing=True): the LLM's Hugging Face "
                                      "gradient_checkpointing_enable(use_reentrant=False)",
            "check": "loss and the sum of |trainable parameters| after the step equal in every run",
        },
        "model": {
            "llm": {"hidden_size": args.hidden, "intermediate_size": args.hidden * 11 // 4,
                    "layers": args.layers, "heads": args.heads, "params": ref["llm_params"],
                    "attn_implementation": ref["attn_implementation"]},
            "model_params": ref["model_params"],
            "trainable_params_stage3": ref["trainable_params"],
            "trainable_counts": ref["trainable_counts"],
            "batch_size": args.batch_size, "turns": args.turns, "sequence_lengths": ref["sequence_lengths"],
            "lora": "r 8, alpha 16 (the [lora] defaults) on q/k/v/o (set)",
        },
        "results": results,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"## Peak memory of one stage-3 step ({args.runs} fresh processes per configuration; LLM {args.layers} "
          f"layers x {args.hidden} hidden, {ref['llm_params']:,} parameters; batch {args.batch_size} x "
          f"{max(ref['sequence_lengths'])} positions)\n")
    print("| malloc | gradient checkpointing | step peak above RSS before, median MiB (min-max) | process peak MiB "
          "| step s |")
    print("|---|---|---:|---:|---:|")
    for a in allocators:
        for c in CONFIGS:
            r = results[a][c]
            p = r["step_peak_above_before_mib"]
            print(f"| {a} | {c} | {p['median']:.1f} ({p['min']:.1f}-{p['max']:.1f}) | "
                  f"{r['process_peak_rss_mib_median']:.1f} | {r['step_s_median']:.2f} |")
    print()
    for a in allocators:
        r = results[a]
        print(f"- {a}: on / off step peak {r['ratio_step_peak_on_over_off']:.3f}, process peak "
              f"{r['ratio_process_peak_on_over_off']:.3f}, step time {r['ratio_step_time_on_over_off']:.2f}")
    print(f"- wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
