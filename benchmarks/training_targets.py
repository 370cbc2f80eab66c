"""Stage-2 training speed: L2 targets read from a ``nextgpt cache-targets`` folder vs recomputed every step.

Stage 2 (decoding-side alignment) compares each signal run's projected hidden states with the decoder's own
text-encoder embedding of the caption. nextgpt computes those embeddings once (``cache_targets``) and the trainer
reads them from disk (:class:`~nextgpt_core.training.targets.TargetCache`). This script measures what that saves
against the naive alternative: a ``targets`` mapping that runs the decoder's text encoder
(``Decoder.encode_text([caption])``) on every lookup, i.e. once per signal run per step (:class:`RecomputedTargets`).

Set-up: the ``tiny`` composition with the **real** plugins (``Registry.load(DEFAULT_PLUGINS, allow=[image, video,
audio, depth])``; decoders: tiny SD-1.5 / ZeroScope / AudioLDM with their tiny CLIP / OpenCLIP / CLAP text
encoders), a synthetic dataset (``make_synthetic_dataset``: ``--n-per-modality`` captioned toy-world images,
videos and sounds; their cc3m / webvid / audiocap files read with ``task="generate"``: user = caption, assistant =
caption + a signal run). Two models are built from the same seed, one per variant, so both variants train the same weights
along the same trajectory: every repetition's losses must agree (the script stops otherwise, and before timing it
checks that every recomputed target equals its cached one).

Timing: each repetition builds a fresh :class:`~nextgpt_core.training.trainer.Trainer` (stage 2, ``--steps``
optimizer steps of ``--batch-size`` samples, no checkpoint) on the variant's model and times ``Trainer.train()``
with ``time.perf_counter`` (data layout, forward, L2 lookups, backward, AdamW, the metrics row: everything the
trainer does per step). ``--warmup`` untimed rounds first (the decoders load lazily in the first recomputed
round), then ``--reps`` timed rounds, the two variants interleaved with the order alternating every round (A/B,
B/A, ...). Reported: median (p10, p90) samples/s of each variant and the ratio of the medians; also the median
of the per-round ratios, the one-off cost of building the cache, and one ``encode_text`` call per modality.
Nothing about speed is asserted.

Run from the repository root (about 2-3 minutes on the 2-vCPU VM with the defaults)::

    .venv/bin/python benchmarks/training_targets.py [--reps 15] [--steps 8] [--batch-size 4] [--threads 1] [--quick]

Writes ``docs/benchmarks/training_targets.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bench_common import git_state, machine, percentile

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "docs" / "benchmarks" / "training_targets.json"
REAL = ["image", "video", "audio", "depth"]
VARIANTS = ("cached", "recomputed")
for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_k, "1")


class RecomputedTargets(Mapping[str, dict[str, Any]]):
    """``{target_id: {conditioning name: (T, D)}}`` like a ``TargetCache``, but every lookup runs the decoder's
    text encoder on the caption (``decoders[modality].encode_text([caption])``, no gradient): the cost of
    training stage 2 without ``nextgpt cache-targets``.

    Args:
        targets: the ``training.data.Target`` s whose embeddings may be asked for.
        decoders: ``{modality: Decoder}``.

    ``calls`` counts the ``encode_text`` calls made.
    """

    def __init__(self, targets: Iterable[Any], decoders: Mapping[str, Any]) -> None:
        self.decoders = decoders
        self.captions = {t.target_id: (t.modality, t.caption) for t in targets}
        self.calls = 0

    def __getitem__(self, target_id: str) -> dict[str, Any]:
        import torch

        modality, caption = self.captions[target_id]
        with torch.no_grad():
            encoded = self.decoders[modality].encode_text([caption])
        self.calls += 1
        return {name: t[0] for name, t in encoded.items()}

    def __iter__(self) -> Iterator[str]:
        return iter(self.captions)

    def __len__(self) -> int:
        return len(self.captions)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p10": percentile(values, 10), "p90": percentile(values, 90),
            "min": min(values), "max": max(values), "n": len(values)}


def quiet_libraries() -> None:
    """Silence the per-call warnings of the tiny text encoders (CLAP truncation) so they do not flood the output."""
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    diffusers.logging.set_verbosity_error()


def build(registry: Any) -> Any:
    from nextgpt_core import NextGPT

    model = NextGPT.from_composition("tiny", registry=registry)
    missing = [k for k in REAL if k not in model.resolved.modalities]
    if missing:
        sys.exit(f"error: the real plugins {missing} are not installed (make install)")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=15, help="timed rounds per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds per variant first")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per round")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--n-per-modality", type=int, default=8, help="synthetic items per modality")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 item per modality, 1 step, 1 round")
    parser.add_argument("--out", type=Path, default=OUT_JSON)
    args = parser.parse_args()
    if args.quick:
        args.reps, args.warmup, args.steps, args.n_per_modality = 1, 0, 1, 1
    for name in ("reps", "steps", "batch_size", "n_per_modality", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    import torch
    from nextgpt_registry import Registry

    from nextgpt_core.plugins import DEFAULT_PLUGINS
    from nextgpt_core.training.data import MediaLoader, read_dataset
    from nextgpt_core.training.synthetic import make_synthetic_dataset
    from nextgpt_core.training.targets import TargetCache, cache_targets
    from nextgpt_core.training.trainer import TrainConfig, Trainer

    torch.set_num_threads(args.threads)
    quiet_libraries()
    registry = Registry.load(DEFAULT_PLUGINS, allow=REAL)
    models = {v: build(registry) for v in VARIANTS}
    work = Path(tempfile.mkdtemp(prefix="nextgpt-bench-targets-"))
    try:
        ds = make_synthetic_dataset(work / "data", n_per_modality=args.n_per_modality, seed=0,
                                    modalities=("image", "video", "audio"), registry=registry)
        samples = []
        for modality, path in ds.xcaption.items():
            samples += read_dataset(path, registry=registry, task="generate", media_root=ds.media).samples
        targets = [t for s in samples for t in s.targets]

        started = time.perf_counter()
        cache_targets(targets, models["cached"].decoders, work / "cache", composition="tiny")
        cache_build_s = time.perf_counter() - started
        mappings: dict[str, Any] = {"cached": TargetCache(work / "cache"),
                                    "recomputed": RecomputedTargets(targets, models["recomputed"].decoders)}
        worst = max(float((mappings["cached"][tid][n] - t).abs().max())
                    for tid in mappings["cached"] for n, t in mappings["recomputed"][tid].items())
        if worst > 1e-4:
            sys.exit(f"error: recomputed targets differ from the cached ones by up to {worst:.3g}")
        encode_ms = {}
        for modality, decoder in models["recomputed"].decoders.items():
            caption = ds.items[modality][0].caption
            times = []
            for _ in range(2 if args.quick else 7):
                t0 = time.perf_counter()
                with torch.no_grad():
                    decoder.encode_text([caption])
                times.append((time.perf_counter() - t0) * 1e3)
            encode_ms[modality] = statistics.median(times)
        cache_read_ms = []
        for tid in list(mappings["cached"])[:50]:
            t0 = time.perf_counter()
            mappings["cached"][tid]
            cache_read_ms.append((time.perf_counter() - t0) * 1e3)

        config = dict(stage=2, steps=args.steps, batch_size=args.batch_size, lr=TrainConfig.official_lr(2),
                      seed=args.seed, progress=False, save_final=False)
        rounds: list[dict[str, Any]] = []
        rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
        lookups: list[int] = []
        for r in range(args.warmup + args.reps):
            order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
            row: dict[str, Any] = {"round": r, "warmup": r < args.warmup, "order": list(order)}
            for variant in order:
                cfg = TrainConfig(**config, output_dir=work / "runs" / f"{variant}-{r}")
                with contextlib.redirect_stderr(io.StringIO()):  # the trainable-parameter table, every round
                    trainer = Trainer(models[variant], samples, mappings[variant], cfg, MediaLoader(registry))
                calls_before = mappings["recomputed"].calls
                gc.collect()
                t0 = time.perf_counter()
                result = trainer.train()
                elapsed = time.perf_counter() - t0
                metrics = (cfg.output_dir / cfg.metrics_file).read_text().splitlines()
                n = sum(json.loads(line)["samples"] for line in metrics)  # the last batch of an epoch may be short
                row[variant] = {"seconds": elapsed, "samples": n, "samples_per_s": n / elapsed,
                                "losses": result.losses}
                if variant == "recomputed":
                    row[variant]["encode_text_calls"] = mappings["recomputed"].calls - calls_before
            diff = max(abs(a - b) for a, b in zip(row["cached"]["losses"], row["recomputed"]["losses"]))
            row["max_loss_difference"] = diff
            if diff > 1e-3 * max(1.0, max(abs(x) for x in row["cached"]["losses"])):
                sys.exit(f"error: round {r}: the variants' losses differ by {diff:.3g}; the targets are not the same")
            if r >= args.warmup:
                for v in VARIANTS:
                    rates[v].append(row[v]["samples_per_s"])
                lookups.append(row["recomputed"]["encode_text_calls"])
            rounds.append(row)
            print(f"round {r}{' (warm-up)' if r < args.warmup else ''}: " + ", ".join(
                f"{v} {row[v]['samples_per_s']:.1f} samples/s" for v in order), file=sys.stderr, flush=True)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)

    med = {v: statistics.median(rates[v]) for v in VARIANTS}
    per_round = [c / x for c, x in zip(rates["cached"], rates["recomputed"])]
    model = models["cached"]
    text_encoder_params = {}
    for key, decoder in model.decoders.items():
        encoder = getattr(getattr(decoder, "pipe", None), "text_encoder", None)
        text_encoder_params[key] = sum(p.numel() for p in encoder.parameters()) if encoder is not None else None
    counts = {m: len(items) for m, items in ds.items.items()}
    report = {
        "benchmark": "training_targets",
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "git": git_state(),
        "method": {
            "composition": "tiny, real plugins (image, video, audio, depth)",
            "data": f"make_synthetic_dataset(n_per_modality={args.n_per_modality}, seed=0, toy world: image, video, audio): "
                    f"{len(samples)} stage-2 samples (cc3m/webvid/audiocap files, task='generate'), {counts}",
            "stage": 2, "steps_per_round": args.steps, "batch_size": args.batch_size, "lr": config["lr"],
            "seed": args.seed, "torch_threads": args.threads, "warmup_rounds": args.warmup, "rounds": args.reps,
            "interleaved": "both variants every round, order alternating (cached first on even rounds)",
            "timer": "time.perf_counter around Trainer.train() (Trainer built outside the timer)",
            "cached": "TargetCache over a cache_targets folder (safetensors read per lookup)",
            "recomputed": "RecomputedTargets: decoder.encode_text([caption]) on every lookup (no gradient)",
            "check": "two models from the same seed; recomputed targets equal the cached ones (max abs diff "
                     f"{worst:.2g}) and every round's losses agree between the variants",
        },
        "model": {
            "llm_params": sum(p.numel() for p in model.llm.parameters()),
            "total_params": trainer.trainable.total_params,
            "trainable_params_stage2": trainer.trainable.trainable,
            "decoder_text_encoder_params": text_encoder_params,
        },
        "results": {
            "samples_per_s": {v: summary(rates[v]) for v in VARIANTS},
            "ratio_cached_over_recomputed_of_medians": med["cached"] / med["recomputed"],
            "ratio_per_round": summary(per_round),
            "encode_text_calls_per_round_median": statistics.median(lookups),
            "encode_text_one_caption_ms_median": encode_ms,
            "cache_read_one_target_ms_median": statistics.median(cache_read_ms),
            "cache_build_s": cache_build_s,
            "cache_targets": len(mappings["cached"]),
        },
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"## Stage-2 samples/s, cached vs recomputed targets ({args.reps} interleaved rounds of {args.steps} steps "
          f"x {args.batch_size} samples; {machine(False)['cpus']} CPUs, {args.threads} torch thread(s))\n")
    print("| targets | median samples/s | p10 | p90 |")
    print("|---|---:|---:|---:|")
    for v in VARIANTS:
        s = report["results"]["samples_per_s"][v]
        print(f"| {v} | {s['median']:.1f} | {s['p10']:.1f} | {s['p90']:.1f} |")
    print(f"\n- ratio cached / recomputed (medians): {med['cached'] / med['recomputed']:.2f} "
          f"(median of per-round ratios {statistics.median(per_round):.2f})")
    print("- encode_text of one caption, median ms: " + ", ".join(f"{k} {v:.1f}" for k, v in encode_ms.items())
          + f"; reading one cached target {statistics.median(cache_read_ms):.2f} ms; "
          f"building the cache ({len(mappings['cached'])} targets) {cache_build_s:.2f} s")
    print(f"- wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
