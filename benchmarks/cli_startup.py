"""CLI start-up time: ``nextgpt --help`` and ``nextgpt plugins`` against a bare ``python -c pass``.

Each command runs as a fresh subprocess; the three are interleaved (the order rotates every repetition) so that
drift in machine load hits all of them alike. After the timed runs the script checks, in separate processes,
whether ``nextgpt --help`` / ``nextgpt plugins`` imported torch (or other heavy modules), splits the start-up of
``nextgpt plugins`` into in-process phases, and records the slowest imports (``python -X importtime``).

Target (reported, never asserted): each CLI command starts in under 0.5 s (median wall time).

Run from the repository root (``make benchmarks`` does exactly this)::

    PYTHONPATH=$PWD/build/test-plugins .venv/bin/python benchmarks/cli_startup.py [--reps 20] [--warmup 2]

Writes ``docs/benchmarks/cli_startup.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_common import git_state, percentile
from bench_common import machine as _machine

ROOT = Path(__file__).resolve().parents[1]
TEST_PLUGINS = ROOT / "build" / "test-plugins"
OUT_JSON = ROOT / "docs" / "benchmarks" / "cli_startup.json"
TARGET_S = 0.5
HEAVY = ("torch", "transformers", "tokenizers", "numpy", "safetensors", "peft")


# ---------------------------------------------------------------------------------------------- helpers
def nextgpt_executable() -> str:
    """The ``nextgpt`` console script next to this interpreter (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "nextgpt"
    if here.is_file():
        return str(here)
    found = shutil.which("nextgpt")
    if found is None:
        sys.exit("error: no `nextgpt` executable next to this python or on PATH (run `make install`)")
    return found


def bench_env() -> dict[str, str]:
    """The environment every timed command gets: the fake plugin visible and selected, offline HF flags."""
    env = dict(os.environ)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if not any(Path(p).resolve() == TEST_PLUGINS.resolve() for p in parts):
        parts.insert(0, str(TEST_PLUGINS))
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["NEXTGPT_LOAD_PLUGINS"] = "fake"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return env


def run_once(argv: list[str], env: dict[str, str]) -> float:
    """Wall time of one fresh subprocess (spawn to exit), output discarded; non-zero exit is fatal."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-2000:]}")
    return elapsed


# Runs the real CLI entry point in-process, then reports which heavy modules ended up imported.
_MODULES_PROBE = r"""
import json, sys
cli_args, heavy_names = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["nextgpt", *cli_args]
from nextgpt_core.cli import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
heavy = {h: any(m == h or m.startswith(h + ".") for m in sys.modules) for h in heavy_names}
print("@@PROBE@@" + json.dumps({"exit_code": code, "imported": heavy, "n_modules": len(sys.modules)}))
"""

# Times the phases of `nextgpt plugins` inside one process.
_PHASES_PROBE = r"""
import time
t0 = time.perf_counter()
import json, sys
import nextgpt_core.cli as cli
t1 = time.perf_counter()
from nextgpt_core.plugins import get_registry
reg = get_registry()
t2 = time.perf_counter()
print("@@PROBE@@" + json.dumps({"import_nextgpt_core_cli_s": t1 - t0, "registry_load_s": t2 - t1,
                               "modalities": sorted(reg.modalities)}))
"""


def probe(code: str, args: list[str], env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("@@PROBE@@"):
            return json.loads(line[len("@@PROBE@@"):])
    sys.exit(f"error: probe failed (exit {proc.returncode}): {proc.stderr[-2000:]}")


def import_time_top(env: dict[str, str], n: int = 12) -> dict:
    """``python -X importtime -m nextgpt_core.cli plugins``: total and the ``n`` largest cumulative imports."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nextgpt_core.cli", "plugins"],
        env=env, cwd=ROOT, capture_output=True, text=True,
    )
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cum_us, name = line.split(":", 1)[1].split("|")
        name = name[1:]  # one separator space; further leading spaces give the nesting depth
        rows.append({"module": name.strip(), "self_ms": int(self_us) / 1000, "cumulative_ms": int(cum_us) / 1000,
                     "top_level": not name.startswith(" ")})
    top_level_total = sum(r["cumulative_ms"] for r in rows if r["top_level"])
    torch_rows = [r["module"] for r in rows if r["module"].split(".")[0] == "torch"]
    return {
        "exit_code": proc.returncode,
        "top_level_imports_total_ms": round(top_level_total, 1),
        "torch_modules_imported": len(torch_rows),
        "largest_cumulative": [
            {"module": r["module"], "cumulative_ms": r["cumulative_ms"], "self_ms": r["self_ms"]}
            for r in sorted(rows, key=lambda r: -r["cumulative_ms"])[:n]
        ],
    }


# ---------------------------------------------------------------------------------------------- main
def machine() -> dict:
    return _machine(libraries=False)  # this script must not import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions per command (>= 15)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up rounds")
    parser.add_argument("--out", type=Path, default=OUT_JSON)
    args = parser.parse_args()
    if args.reps < 15:
        parser.error("--reps must be at least 15")

    if not (TEST_PLUGINS / "nextgpt_fake").is_dir():
        sys.exit(f"error: the fake test plugin is not installed in {TEST_PLUGINS} (run `make test-plugins`)")
    env = bench_env()
    exe = nextgpt_executable()
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "nextgpt --help": [exe, "--help"],
        "nextgpt plugins": [exe, "plugins"],
    }

    # sanity: the fake plugin is visible to `nextgpt plugins`
    listing = subprocess.run([exe, "plugins"], env=env, cwd=ROOT, capture_output=True, text=True)
    if listing.returncode != 0 or "fake_image" not in listing.stdout:
        sys.exit(f"error: `nextgpt plugins` does not list the fake plugin:\n{listing.stdout}\n{listing.stderr}")

    names = list(commands)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.warmup):
        for n in names:
            run_once(commands[n], env)
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[: rep % len(names)]  # rotate the order every repetition
        for n in order:
            times[n].append(run_once(commands[n], env))

    base = statistics.median(times["python -c pass"])
    results = {}
    for n in names:
        med = statistics.median(times[n])
        results[n] = {
            "median_s": med,
            "p90_s": percentile(times[n], 90),
            "min_s": min(times[n]),
            "max_s": max(times[n]),
            "minus_python_pass_median_s": med - base,
            "samples_s": times[n],
        }
    target = {
        n: {"median_s": results[n]["median_s"], "limit_s": TARGET_S, "pass": results[n]["median_s"] < TARGET_S}
        for n in ("nextgpt --help", "nextgpt plugins")
    }
    modules = {
        "nextgpt --help": probe(_MODULES_PROBE, [json.dumps(["--help"]), json.dumps(HEAVY)], env),
        "nextgpt plugins": probe(_MODULES_PROBE, [json.dumps(["plugins"]), json.dumps(HEAVY)], env),
    }
    phases_runs = [probe(_PHASES_PROBE, [], env) for _ in range(5)]
    phases = {
        k: statistics.median(p[k] for p in phases_runs)
        for k in ("import_nextgpt_core_cli_s", "registry_load_s")
    }
    phases["modalities"] = phases_runs[0]["modalities"]
    importtime = import_time_top(env)

    try:
        import torch  # only for the record; imported after all timed runs

        torch_version = torch.__version__
    except ImportError:
        torch_version = None

    report = {
        "benchmark": "cli_startup",
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(), "torch": torch_version},
        "git": git_state(),
        "method": {
            "repetitions": args.reps,
            "warmup_rounds": args.warmup,
            "interleaved": "the three commands run in turn, order rotated every repetition",
            "timer": "time.perf_counter around subprocess.run (spawn to exit), stdout/stderr not printed",
            "env": {"PYTHONPATH": env["PYTHONPATH"], "NEXTGPT_LOAD_PLUGINS": env["NEXTGPT_LOAD_PLUGINS"]},
            "commands": {n: [Path(a).name if i == 0 else a for i, a in enumerate(c)] for n, c in commands.items()},
        },
        "results": results,
        "target_cli_start_under_0_5_s": target,
        "heavy_modules_imported": modules,
        "torch_imported_by_plugins": modules["nextgpt plugins"]["imported"]["torch"],
        "torch_imported_by_help": modules["nextgpt --help"]["imported"]["torch"],
        "in_process_phases_of_plugins_median_s": phases,
        "importtime_plugins": importtime,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"## CLI start-up ({args.reps} interleaved runs after {args.warmup} warm-ups; {machine()['cpus']} CPUs)\n")
    print("| command | median (s) | p90 (s) | minus `python -c pass` (s) | target < 0.5 s |")
    print("|---|---:|---:|---:|---|")
    for n in names:
        r = results[n]
        verdict = ("PASS" if target[n]["pass"] else "FAIL") if n in target else "-"
        print(f"| `{n}` | {r['median_s']:.3f} | {r['p90_s']:.3f} | {r['minus_python_pass_median_s']:+.3f} | {verdict} |")
    print()
    for n, m in modules.items():
        imported = [h for h, v in m["imported"].items() if v]
        print(f"- `{n}` imported torch: {m['imported']['torch']} (heavy modules imported: {', '.join(imported) or 'none'})")
    print(
        f"- in-process phases of `nextgpt plugins` (median of 5): import nextgpt_core.cli "
        f"{phases['import_nextgpt_core_cli_s']:.3f} s, registry load (get_registry) {phases['registry_load_s']:.3f} s"
    )
    print(f"- wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
