"""Retrieval gallery indexes: build speed and query latency at 1k, 10k and 100k items, exact against FAISS HNSW.

What is measured, on synthetic embeddings (no encoder runs: the encoder's own speed is the other benchmarks'
business), for each gallery size ``N`` in ``--sizes``:

- **build**: :func:`nextgpt_core.retrieval.write_index` of ``N`` items (the manifest with every item and the float32
  embeddings, written atomically), then :meth:`GalleryIndex.open` (reading it back, checked), reported as items/s;
  and the search structure each searcher builds at load: :class:`ExactSearch` (wrapping the matrix) and
  :class:`FaissSearch` (an HNSW graph, M 32, efConstruction 80, efSearch 64), items/s.
- **query latency**: ``--queries`` single-query searches (top 10), each timed with ``time.perf_counter`` after
  ``--warmup`` untimed ones: p50 / p90 / p99 in milliseconds, exact and HNSW, with one thread each
  (``torch.set_num_threads``, ``faiss.omp_set_num_threads``); and the HNSW answers' recall@1 and recall@10 against
  the exact ones (the approximation's price).

The embeddings: ``--dim`` (1024, ImageBind-huge's joint space) unit vectors drawn around ``N / 50`` cluster centres
(each item its centre plus noise, so neighbourhoods are not uniform), seeded; the queries are noisy copies of random
items. Nothing about speed is asserted.

Run from the repository root (about 3-6 minutes on the 2-vCPU VM with the defaults; HNSW at 100k is most of it)::

    .venv/bin/python benchmarks/retrieval.py [--sizes 1000,10000,100000] [--dim 1024] [--queries 200] [--threads 1]

Writes ``docs/benchmarks/retrieval.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench_common import git_state, machine, percentile

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "docs" / "benchmarks" / "retrieval.json"


def _embeddings(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((max(1, n // 50), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _latencies(search: Any, queries: np.ndarray, warmup: int) -> tuple[list[float], np.ndarray]:
    for q in queries[:warmup]:
        search.search(q[None], 10)
    times, ids = [], []
    for q in queries:
        start = time.perf_counter()
        _, found = search.search(q[None], 10)
        times.append((time.perf_counter() - start) * 1e3)
        ids.append(found[0])
    return times, np.asarray(ids)


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 4), "p90": round(percentile(values, 90), 4),
            "p99": round(percentile(values, 99), 4), "mean": round(statistics.fmean(values), 4)}


def run_size(n: int, dim: int, queries: int, warmup: int, seed: int) -> dict[str, Any]:
    from nextgpt_core.retrieval import EncoderIdentity, ExactSearch, FaissSearch, GalleryIndex, GalleryItem, write_index

    rng = np.random.default_rng([seed, n])
    emb = _embeddings(n, dim, rng)
    items = [GalleryItem(f"item/{i:06d}.png", f"{i:064x}", 1000 + i) for i in range(n)]
    identity = EncoderIdentity("bench/encoder", "bench:Encoder", {}, "0" * 64, ())
    out: dict[str, Any] = {"items": n, "dim": dim}
    with tempfile.TemporaryDirectory() as tmp:
        gallery = Path(tmp) / "gallery"
        gallery.mkdir()
        start = time.perf_counter()
        folder = write_index(gallery / ".nextgpt-index" / "image", modality="image", gallery=gallery, items=items,
                             embeddings=emb, identity=identity, media_io="bench:IO")
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        index = GalleryIndex.open(folder)
        open_s = time.perf_counter() - start
        size = sum(p.stat().st_size for p in folder.iterdir())
    out["write_index"] = {"seconds": round(write_s, 4), "items_per_second": round(n / write_s, 1), "bytes": size}
    out["open_index"] = {"seconds": round(open_s, 4), "items_per_second": round(n / open_s, 1)}
    picks = rng.integers(0, n, queries + warmup)
    q = emb[picks] + 0.3 * rng.standard_normal((len(picks), dim)).astype(np.float32) / np.sqrt(dim) * 10
    start = time.perf_counter()
    exact = ExactSearch(index.embeddings)
    exact_build = time.perf_counter() - start
    exact_times, exact_ids = _latencies(exact, q[warmup:], warmup)
    out["exact"] = {"build_seconds": round(exact_build, 5), "latency_ms": _summary(exact_times)}
    try:
        start = time.perf_counter()
        hnsw = FaissSearch(index.embeddings)
        hnsw_build = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001 - the optional extra missing: say so in the results
        out["faiss_hnsw"] = {"unavailable": str(exc)}
        return out
    hnsw_times, hnsw_ids = _latencies(hnsw, q[warmup:], warmup)
    recall1 = float(np.mean(hnsw_ids[:, 0] == exact_ids[:, 0]))
    recall10 = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hnsw_ids, exact_ids)]))
    out["faiss_hnsw"] = {"build_seconds": round(hnsw_build, 3), "build_items_per_second": round(n / hnsw_build, 1),
                         "latency_ms": _summary(hnsw_times), "recall_at_1": round(recall1, 4), "recall_at_10": round(recall10, 4),
                         "params": {"M": 32, "efConstruction": 80, "efSearch": 64}}
    out["latency_ratio_exact_over_hnsw_p50"] = round(out["exact"]["latency_ms"]["p50"] / out["faiss_hnsw"]["latency_ms"]["p50"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT_JSON)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(args.threads)
    faiss_version = None
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
        faiss_version = faiss.__version__
    except ImportError:
        pass
    results = [run_size(int(n), args.dim, args.queries, args.warmup, args.seed) for n in args.sizes.split(",")]
    payload = {"benchmark": "retrieval", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "settings": vars(args) | {"out": str(args.out)}, "faiss": faiss_version, "git": git_state(),
               "machine": machine(), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print("| items | write index (items/s) | open (items/s) | HNSW build (items/s) | exact p50 / p90 ms | HNSW p50 / p90 ms | exact/HNSW p50 | HNSW recall@1 / @10 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        h = r.get("faiss_hnsw", {})
        hl = h.get("latency_ms", {})
        print(f"| {r['items']:,} | {r['write_index']['items_per_second']:,.0f} | {r['open_index']['items_per_second']:,.0f} | "
              f"{h.get('build_items_per_second', 'n/a')} | {r['exact']['latency_ms']['p50']:.3f} / {r['exact']['latency_ms']['p90']:.3f} | "
              f"{hl.get('p50', float('nan')):.3f} / {hl.get('p90', float('nan')):.3f} | {r.get('latency_ratio_exact_over_hnsw_p50', 'n/a')} | "
              f"{h.get('recall_at_1', 'n/a')} / {h.get('recall_at_10', 'n/a')} |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
