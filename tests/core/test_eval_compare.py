"""`nextgpt eval compare`: paired per-task differences of two results files and McNemar's exact test."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from nextgpt_core.errors import ConfigError
from nextgpt_core.eval.compare import compare_results, format_comparison, load_results, mcnemar_exact


def _results(outcomes: dict[str, bool], suite: str = "toy", variant: str = "model") -> dict:
    return {"suite": suite, "samples": {variant: [
        {"id": sid, "task": sid.split("#")[0], "correct": ok} for sid, ok in outcomes.items()]}}


@pytest.mark.parametrize("b, c, expected", [
    (0, 0, 1.0),
    (0, 5, 2 / 32),                     # both tails of Binomial(5, 1/2) at 0
    (1, 9, 2 * (1 + 10) / 1024),        # 0.0215, the textbook example's value
    (3, 3, 1.0),                        # a balanced split is capped at 1
    (2, 12, 2 * (1 + 14 + 91) / 2**14),
])
def test_mcnemar_exact_matches_the_binomial_tails(b, c, expected):
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact(c, b) == pytest.approx(expected, rel=1e-12)  # symmetric


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_compare_pairs_samples_by_id_and_tests_only_the_flips():
    a = {f"gen#{i}": i < 2 for i in range(12)} | {f"desc#{i}": True for i in range(4)} | {"gen#99": True}
    b = {f"gen#{i}": i < 11 for i in range(12)} | {f"desc#{i}": True for i in range(4)}
    rows = {r.task: r for r in compare_results(_results(a), _results(b))}
    gen = rows["gen"]
    assert (gen.n, gen.only_a, gen.only_b, gen.unpaired) == (12, 0, 9, 1)  # gen#99 is in A only
    assert gen.accuracy_a == pytest.approx(2 / 12) and gen.accuracy_b == pytest.approx(11 / 12)
    assert gen.delta == pytest.approx(9 / 12)
    assert gen.p_value == pytest.approx(2 / 2**9)
    assert rows["desc"].p_value == 1.0 and rows["desc"].delta == 0
    assert rows["all"].n == 16 and (rows["all"].only_a, rows["all"].only_b) == (0, 9)
    table = format_comparison(list(rows.values()))
    gen_line = next(line for line in table.splitlines() if line.startswith("gen "))
    assert gen_line.endswith("B better (1 unpaired)")
    assert [line.split()[-1] for line in table.splitlines() if line.startswith("desc")] == ["same"]


def test_a_small_difference_is_called_noise():
    a = {f"t#{i}": i < 5 for i in range(10)}
    b = {f"t#{i}": i < 6 for i in range(10)}
    row = compare_results(_results(a), _results(b))[0]
    assert (row.only_a, row.only_b) == (0, 1) and row.p_value == 1.0
    assert "noise" in format_comparison([row])


def test_runs_that_cannot_be_paired_are_refused():
    with pytest.raises(ConfigError, match="different suites"):
        compare_results(_results({"t#0": True}), _results({"t#0": True}, suite="other"))
    with pytest.raises(ConfigError, match="share no sample"):
        compare_results(_results({"t#0": True}), _results({"t#1": True}))
    with pytest.raises(ConfigError, match="no 'ceiling' samples.*scored: model"):
        compare_results(_results({"t#0": True}), _results({"t#0": True}), variant="ceiling")


def test_load_results_names_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_results(tmp_path / "missing")
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not a results.json"):
        load_results(tmp_path)
    bad.write_text(json.dumps({"suite": "toy"}))
    with pytest.raises(ConfigError, match="no per-sample records"):
        load_results(bad)


def test_the_cli_prints_the_table_and_json_and_one_line_errors(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "results.json").write_text(json.dumps(_results({f"t#{i}": False for i in range(8)})))
    (b / "results.json").write_text(json.dumps(_results({f"t#{i}": True for i in range(8)})))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nextgpt_core.cli", "eval", "compare", *args],
                              capture_output=True, text=True, timeout=120)

    done = run(str(a), str(b))
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("t "))
    assert line.split()[-4:] == ["8", f"{2 / 2**8:.3f}", "B", "better"] and "+100.0%" in line
    done = run(str(a / "results.json"), str(b), "--json")
    rows = json.loads(done.stdout)
    assert rows[-1]["task"] == "all" and math.isclose(rows[-1]["p_value"], 2 / 2**8)
    done = run(str(a), str(tmp_path / "nowhere"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no such file" in done.stderr
