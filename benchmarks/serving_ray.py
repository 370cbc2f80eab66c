"""Serving on Ray Serve against the in-process server, side by side in one run (issue K).

The model: ``tiny`` with the real image plugin (``NEXTGPT_LOAD_PLUGINS=image``), the same on every side. Three
servers, each the same FastAPI app (``create_app``) run by uvicorn in a thread of this process on 127.0.0.1:

- ``inprocess``: one ``NextGPT`` in this process (``--workers 4``);
- ``ray-1``: ``--backend ray`` on a local Ray with 2 CPUs, one replica per stage (language, image decoder);
- ``ray-2``: the same with 2 replicas of the busiest stage.

The busiest stage is measured first on ``ray-1``: the mean time of the language stage (until its reply plan) and
of one image decoder call over ``--probe`` image requests; the stage with the larger mean gets 2 replicas.

Load: image requests (a text prompt, ``modalities: ["text", "image"]``, ``max_tokens`` 16, distinct seeds, the
image inline as the API returns it) from ``C`` client threads in a closed loop until ``R`` are done; requests/s
(``R`` / wall time) and p50 / p95 latency. Every side answers the same requests; before timing, each Ray reply is
checked to equal the in-process reply (text and image bytes). The per-request overhead Ray adds is measured on
text-only replies sent one at a time: the ratio of the mean latency on ``ray-1`` to ``inprocess``.

On this machine (2 cores shared with other work) the Ray processes (GCS, raylet, Serve controller, proxy, the
replicas) compete with the servers for the same 2 cores: the figures say what Ray costs here, not what it gains on
a cluster with a GPU per stage.

Run from the repository root::

    .venv/bin/python benchmarks/serving_ray.py [--requests 16] [--concurrency 4] [--reps 2]

Writes ``docs/benchmarks/serving_ray.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import ROOT, git_state, machine, percentile  # noqa: E402

OUT_JSON = ROOT / "docs" / "benchmarks" / "serving_ray.json"
MAX_TOKENS = 16


def serve_app(app: Any) -> tuple[Any, str]:
    """uvicorn on a free 127.0.0.1 port in a thread; returns (server, base URL)."""
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}"


def body(i: int, image: bool) -> dict[str, Any]:
    out = {"model": "tiny", "messages": [{"role": "user", "content": f"Request {i}: tell me about a shape."}],
           "seed": i, "max_tokens": MAX_TOKENS}
    if image:
        out["modalities"] = ["text", "image"]
    return out


def essence(reply: dict) -> Any:
    content = reply["choices"][0]["message"]["content"]
    return content if isinstance(content, str) else [p.get("text") or p[p["type"]]["url"] for p in content]


def load(url: str, requests: int, clients: int, image: bool, offset: int) -> dict[str, Any]:
    """``requests`` requests from ``clients`` threads (closed loop): wall time and per-request latencies."""
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                response = http.post("/v1/chat/completions", json=body(offset + i, image))
                response.raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: client(), range(clients)))
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "rps": requests / wall, "latencies_s": latencies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--probe", type=int, default=6)
    parser.add_argument("--out", type=Path, default=OUT_JSON)
    args = parser.parse_args()
    os.environ["NEXTGPT_LOAD_PLUGINS"] = "image"
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import httpx
    import ray
    from ray import serve

    from nextgpt_core import Conversation, NextGPT
    from nextgpt_core.serving import ServeConfig, create_app
    from nextgpt_core.serving import ray_backend
    from nextgpt_core.serving.stages import LANGUAGE, StageSpec

    tmp = ROOT / "build" / "bench-serving-ray"
    config = lambda name: ServeConfig(media_dir=tmp / name, workers=4, max_queue=64, timeout_s=600)  # noqa: E731
    local = NextGPT.from_composition("tiny")
    local.load_decoders()
    servers = {"inprocess": serve_app(create_app(local, config("inprocess")))}

    # ray-1, and the busiest stage
    started = time.perf_counter()
    ray_model = ray_backend.deploy("tiny", num_cpus=2)
    deploy_s = time.perf_counter() - started
    lang_s, dec_s = [], []
    for i in range(args.probe):
        t0 = time.perf_counter()
        stream = ray_model.language.options(stream=True).generate.remote(
            Conversation.from_prompt(body(i, True)["messages"][0]["content"]),
            {"want": ["image"], "seed": i, "max_new_tokens": MAX_TOKENS})
        plan = [v for k, v in stream if k == "done"][0]
        lang_s.append(time.perf_counter() - t0)
        pending = [p.data for p in plan.parts if getattr(p, "data", None) is not None and hasattr(p.data, "conditioning")]
        t0 = time.perf_counter()
        ray_model._decode(pending[0])
        dec_s.append(time.perf_counter() - t0)
    busiest = LANGUAGE if statistics.mean(lang_s) >= statistics.mean(dec_s) else "image"
    servers["ray-1"] = serve_app(create_app(ray_model, config("ray-1")))

    # every side gives the same replies
    with httpx.Client(timeout=600) as http:
        for i in range(4):
            for image in (True, False):
                replies = {name: http.post(f"{url}/v1/chat/completions", json=body(1000 + i, image)).json()
                           for name, (_, url) in servers.items()}
                assert essence(replies["ray-1"]) == essence(replies["inprocess"]), (i, image)

    results: dict[str, Any] = {name: {"image": [], "text_serial": []} for name in ("inprocess", "ray-1", "ray-2")}

    def measure(name: str, url: str, rep: int) -> None:
        results[name]["image"].append(load(url, args.requests, args.concurrency, True, 10_000 * (rep + 1)))
        results[name]["text_serial"].append(load(url, args.requests, 1, False, 20_000 * (rep + 1)))

    for rep in range(args.reps):
        for name in (("inprocess", "ray-1") if rep % 2 == 0 else ("ray-1", "inprocess")):
            measure(name, servers[name][1], rep)

    # ray-2: two replicas of the busiest stage
    servers["ray-1"][0].should_exit = True
    serve.delete(ray_backend.APP_NAME)
    stages = {busiest: StageSpec(replicas=2, num_cpus=0.5)}
    ray_model2 = ray_backend.deploy("tiny", stages=stages)
    servers["ray-2"] = serve_app(create_app(ray_model2, config("ray-2")))
    for rep in range(args.reps):
        for name in (("inprocess", "ray-2") if rep % 2 == 0 else ("ray-2", "inprocess")):
            if name == "inprocess" and len(results["inprocess"]["image"]) >= 2 * args.reps:
                continue
            measure(name, servers[name][1], rep + args.reps)

    def summary(runs: list[dict]) -> dict[str, float]:
        lat = [x for r in runs for x in r["latencies_s"]]
        return {"rps_median": statistics.median(r["rps"] for r in runs), "p50_s": percentile(lat, 50),
                "p95_s": percentile(lat, 95), "mean_s": statistics.mean(lat)}

    table = {name: {kind: summary(runs) for kind, runs in kinds.items() if runs} for name, kinds in results.items()}
    overhead = table["ray-1"]["text_serial"]["mean_s"] / table["inprocess"]["text_serial"]["mean_s"]
    report = {
        "benchmark": "serving_ray", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_state(), "machine": machine(), "ray": ray.__version__,
        "settings": {"requests": args.requests, "concurrency": args.concurrency, "reps": args.reps,
                     "max_tokens": MAX_TOKENS, "ray_num_cpus": 2, "workers": 4},
        "deploy_s": deploy_s, "stage_probe_s": {"language": lang_s, "image": dec_s}, "busiest_stage": busiest,
        "summary": table, "text_overhead_ratio_ray_over_inprocess": overhead, "samples": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"busiest stage: {busiest} (language {statistics.mean(lang_s) * 1000:.0f} ms, image decoder "
          f"{statistics.mean(dec_s) * 1000:.0f} ms per request); Ray deploy {deploy_s:.0f} s\n")
    print(f"| server | image req/s (C={args.concurrency}) | image p50 s | image p95 s | text-only mean s (serial) |")
    print("|---|---|---|---|---|")
    for name, kinds in table.items():
        print(f"| {name} | {kinds['image']['rps_median']:.2f} | {kinds['image']['p50_s']:.3f} | "
              f"{kinds['image']['p95_s']:.3f} | {kinds['text_serial']['mean_s']:.3f} |")
    print(f"\nper-request overhead of Ray on a text-only reply: x{overhead:.2f} (ray-1 / inprocess, mean latency)")
    for server, _ in servers.values():
        server.should_exit = True
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
