"""Serving throughput and latency: ``tiny`` requests through ``nextgpt serve`` against the same calls in-process.

The model: the ``tiny`` composition with the real image plugin only (``NEXTGPT_LOAD_PLUGINS=image``: image in
and out, 2 denoising steps at 32x32), the same on both sides. Two request kinds, each with a distinct seed per
request (``seed = index``) and ``max_tokens = 16``:

- ``text``: a text prompt, text out (``modalities`` not given; the model may still start an image run, on both
  sides alike since the seeds are the same);
- ``image``: a text prompt, ``modalities: ["text", "image"]`` (one image forced).

Server side: ``nextgpt serve --composition tiny --workers 16 --max-queue 64`` in a child process (decoders
preloaded); ``C`` client threads in this process (``httpx``, one connection each) each send requests one after
the other until ``R`` are done (closed loop). The client does not download the generated media (the reply holds
their URLs); the server writes each one to its media folder (PNG), as it does for every reply.

In-process side: the same ``R`` requests as ``NextGPT.generate(Conversation.from_prompt(p), want=..., seed=...,
max_new_tokens=16)`` on one model, from ``C`` threads the same way, timed inside a child process of its own
(this script with ``--in-process-worker``, driven over stdin/stdout), so that both sides run in a process set up
alike and the side not being timed sits idle in its own process (on 2 cores, a model in the driver process
measurably disturbed the server's timings).

For each kind and each ``C`` in 1, 4, 16 (``R = max(8, 2C)`` requests): requests/s (``R`` / wall time of the
batch), per-request latency p50 / p95, and the ratios server / in-process. Each (kind, C) pair is timed
``--reps`` times with the two sides interleaved (order alternating); the report gives the median requests/s over
reps and the latency percentiles over all requests of all reps. Before timing, every server reply is checked to
equal the in-process reply of the same seed (text, token count, number of images), so both sides do the same work.

Run from the repository root::

    .venv/bin/python benchmarks/serving.py [--reps 2] [--concurrency 1,4,16]

Writes ``docs/benchmarks/serving.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from bench_common import git_state, machine, percentile

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "docs" / "benchmarks" / "serving.json"
PLUGINS = "image"
MAX_TOKENS = 16
KINDS = {"text": [], "image": ["image"]}

os.environ["NEXTGPT_LOAD_PLUGINS"] = PLUGINS
for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_k, "1")


def prompt(i: int) -> str:
    return f"Request {i}: tell me something and show me a picture."


# ---------------------------------------------------------------------------------------------- the two sides
class Server:
    """``nextgpt serve`` in a child process on a free port."""

    def __init__(self, workers: int, media_dir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        exe = Path(sys.executable).with_name("nextgpt")
        command = [str(exe)] if exe.exists() else [sys.executable, "-m", "nextgpt_core.cli"]
        self.log = open(media_dir.parent / "server.log", "w+")
        self.process = subprocess.Popen(
            [*command, "serve", "--composition", "tiny", "--port", str(self.port), "--workers", str(workers),
             "--max-queue", "64", "--timeout", "600", "--media-dir", str(media_dir)],
            stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ), start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        import httpx

        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                self.log.seek(0)
                sys.exit(f"error: nextgpt serve exited:\n{self.log.read()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                sys.exit("error: nextgpt serve did not come up in 300 s")
            time.sleep(0.3)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def server_call(url: str) -> Callable[[str, int], dict[str, Any]]:
    import httpx

    local = threading.local()

    def call(kind: str, i: int) -> dict[str, Any]:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=url, timeout=600)
        body = {"model": "tiny", "messages": [{"role": "user", "content": prompt(i)}], "seed": i, "max_tokens": MAX_TOKENS,
                "media_format": "url"}
        if KINDS[kind]:
            body["modalities"] = ["text", *KINDS[kind]]
        response = client.post("/v1/chat/completions", json=body)
        response.raise_for_status()
        reply = response.json()
        message = reply["choices"][0]["message"]
        content = message["content"]  # a string, or the parts in order when the reply holds media
        if isinstance(content, str):
            return {"text": content, "tokens": reply["usage"]["completion_tokens"], "media": 0}
        text = " ".join(p["text"] for p in content if p["type"] == "text").strip()
        return {"text": text, "tokens": reply["usage"]["completion_tokens"],
                "media": sum(1 for p in content if p["type"] != "text")}

    return call


def inprocess_call(model: Any) -> Callable[[str, int], dict[str, Any]]:
    from nextgpt_core import Conversation

    def call(kind: str, i: int) -> dict[str, Any]:
        reply = model.generate(Conversation.from_prompt(prompt(i)), want=KINDS[kind], seed=i, max_new_tokens=MAX_TOKENS)
        return {"text": reply.text, "tokens": len(reply.token_ids), "media": len(reply.media)}

    return call


class InProcessWorker:
    """This script with ``--in-process-worker`` in a child process: one model, batches timed inside it."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, __file__, "--in-process-worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        self.lock = threading.Lock()
        assert self.ask({"op": "ready"})["ok"]

    def ask(self, message: dict[str, Any]) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        with self.lock:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        if not line:
            sys.exit("error: the in-process worker exited")
        return json.loads(line)

    def call(self, kind: str, i: int) -> dict[str, Any]:
        return self.ask({"op": "call", "kind": kind, "i": i})

    def batch(self, kind: str, clients: int, count: int) -> dict[str, Any]:
        return self.ask({"op": "batch", "kind": kind, "clients": clients, "count": count})

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def in_process_worker() -> None:
    """The child side of :class:`InProcessWorker`: build the model, then answer one JSON line per JSON line."""
    from nextgpt_core import NextGPT

    model = NextGPT.from_composition("tiny")
    model.load_decoders()
    call = inprocess_call(model)
    for line in sys.stdin:
        message = json.loads(line)
        if message["op"] == "ready":
            out: Any = {"ok": True}
        elif message["op"] == "call":
            with ThreadPoolExecutor(1) as one:  # on a worker thread, as the server's workers and the batches run
                out = one.submit(call, message["kind"], message["i"]).result()
        else:
            out = batch(call, message["kind"], message["clients"], message["count"])
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


def batch(call: Callable[[str, int], dict[str, Any]], kind: str, clients: int, count: int) -> dict[str, Any]:
    """``count`` requests from ``clients`` closed-loop clients: wall time and each request's latency."""
    latencies: list[float] = []
    lock = threading.Lock()
    next_index = iter(range(count))

    def client() -> None:
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            started = time.perf_counter()
            call(kind, i)
            took = time.perf_counter() - started
            with lock:
                latencies.append(took)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - started
    return {"wall_s": wall, "requests_per_s": count / wall, "latencies_s": latencies}


# ---------------------------------------------------------------------------------------------- run
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2, help="timed rounds per (kind, concurrency), sides interleaved")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts")
    parser.add_argument("--out", type=Path, default=OUT_JSON)
    parser.add_argument("--in-process-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process_worker:
        in_process_worker()
        return
    levels = [int(c) for c in args.concurrency.split(",")]

    work = Path(tempfile.mkdtemp(prefix="nextgpt-serving-bench-"))
    print(f"starting nextgpt serve (tiny, plugins={PLUGINS}) ...", file=sys.stderr)
    server = Server(workers=max(levels), media_dir=work / "media")
    worker = InProcessWorker()
    try:
        client_call = server_call(server.url)
        sides = {"server": client_call, "in_process": worker.call}
        timed = {"server": lambda kind, c, n: batch(client_call, kind, c, n), "in_process": worker.batch}

        # the same work on both sides: every reply of the largest batch, compared seed by seed (also warms up)
        mismatches = []
        count_max = max(8, 2 * max(levels))
        made_images = {}
        for kind in KINDS:
            with ThreadPoolExecutor(4) as pool:
                a = list(pool.map(lambda i: sides["server"](kind, i), range(count_max)))
                b = list(pool.map(lambda i: sides["in_process"](kind, i), range(count_max)))
            mismatches += [(kind, i) for i, (x, y) in enumerate(zip(a, b)) if x != y]
            made_images[kind] = sum(x["media"] for x in a)
        if mismatches:
            sys.exit(f"error: server and in-process replies differ for {mismatches}")

        results: dict[str, Any] = {}
        for kind in KINDS:
            for clients in levels:
                count = max(8, 2 * clients)
                runs: dict[str, list[dict[str, Any]]] = {"server": [], "in_process": []}
                for rep in range(args.reps):
                    order = ["server", "in_process"] if rep % 2 == 0 else ["in_process", "server"]
                    for side in order:
                        runs[side].append(timed[side](kind, clients, count))
                row: dict[str, Any] = {"kind": kind, "clients": clients, "requests": count}
                for side, rounds in runs.items():
                    lat = [x for r in rounds for x in r["latencies_s"]]
                    row[side] = {
                        "requests_per_s": statistics.median(r["requests_per_s"] for r in rounds),
                        "p50_s": percentile(lat, 50),
                        "p95_s": percentile(lat, 95),
                        "rounds": [{"wall_s": r["wall_s"], "requests_per_s": r["requests_per_s"]} for r in rounds],
                        "latencies_s": lat,
                    }
                row["ratio"] = {
                    "requests_per_s": row["server"]["requests_per_s"] / row["in_process"]["requests_per_s"],
                    "p50": row["server"]["p50_s"] / row["in_process"]["p50_s"],
                    "p95": row["server"]["p95_s"] / row["in_process"]["p95_s"],
                }
                results[f"{kind}@{clients}"] = row
                print(f"{kind} x{clients}: server {row['server']['requests_per_s']:.2f} req/s, in-process "
                      f"{row['in_process']['requests_per_s']:.2f} req/s", file=sys.stderr)
    finally:
        server.stop()
        worker.stop()

    report = {
        "benchmark": "serving",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "git": git_state(),
        "settings": {"composition": "tiny", "plugins": PLUGINS, "max_tokens": MAX_TOKENS, "reps": args.reps,
                     "concurrency": levels, "server_workers": max(levels), "torch_threads": _torch_threads(),
                     "in_process": "a child process of its own, timed inside it",
                     "images_made_in_check_batch": made_images},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print_table(report)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def print_table(report: dict[str, Any]) -> None:
    print("| kind | clients | requests | server req/s | in-process req/s | ratio req/s | server p50 / p95 (s) | in-process p50 / p95 (s) | ratio p50 / p95 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in report["results"].values():
        s, p, r = row["server"], row["in_process"], row["ratio"]
        print(f"| {row['kind']} | {row['clients']} | {row['requests']} | {s['requests_per_s']:.2f} | {p['requests_per_s']:.2f} | "
              f"{r['requests_per_s']:.2f} | {s['p50_s']:.3f} / {s['p95_s']:.3f} | {p['p50_s']:.3f} / {p['p95_s']:.3f} | "
              f"{r['p50']:.2f} / {r['p95']:.2f} |")


if __name__ == "__main__":
    main()
