"""`harness compare`: strategies side by side, across runs, noise-aware, and CI gates."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.compare import compare, longest_run
from harness.errors import GateFailed, UsageError
from tests.synthetic_run import make_synthetic_run


def test_one_run_side_by_side(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path, run_id="one")
    printed: list[str] = []
    res = compare([run], echo=printed.append)
    assert res.entities == [("one", "manual"), ("one", "compose"), ("one", "autoscale")]
    t = res.table
    p95 = t[t["metric"] == "p95_ms"].set_index("strategy")
    # baseline: the first strategy of the run
    assert p95.loc["manual", "baseline"] == "" and p95.loc["autoscale", "baseline"] == \
        "one:manual"
    assert p95.loc["autoscale", "delta"] == pytest.approx(
        p95.loc["autoscale", "mean"] - p95.loc["manual", "mean"])
    # one trial: the noise is unknown, so no difference is called significant
    assert p95["significant"].isna().all()
    assert {"recovery_s_spike_t30", "recovery_s_crash_t95"} <= set(t["metric"])
    # files next to the run, and a readable terminal table
    assert res.csv_path == run / "comparison.csv" and res.html_path == run / "comparison.html"
    back = pd.read_csv(res.csv_path)
    assert set(back["strategy"]) == {"manual", "compose", "autoscale"}
    html = res.html_path.read_text()
    assert "<table>" in html and "autoscale" in html and "http" not in html.lower().replace(
        "http-equiv", "")
    text = "\n".join(printed)
    assert "autoscale" in text and "p95 latency" in text and "comparison.csv" in text


def test_before_and_after_a_change_with_noise(tmp_path: Path) -> None:
    before = make_synthetic_run(tmp_path, run_id="before", trials=3, seed=1,
                                strategies=("manual", "autoscale"))
    after = make_synthetic_run(tmp_path, run_id="after", trials=3, seed=2,
                               strategies=("manual", "autoscale"), slow_factor=1.5)
    same = make_synthetic_run(tmp_path, run_id="same", trials=3, seed=3,
                              strategies=("manual", "autoscale"))
    out = tmp_path / "cmp"
    res = compare([before, after, same], out_dir=out)
    t = res.table
    p50 = t[t["metric"] == "p95_ms"].set_index(["run", "strategy"])
    # each strategy is compared with itself in the first run
    assert p50.loc[("after", "autoscale"), "baseline"] == "before:autoscale"
    assert p50.loc[("before", "autoscale"), "baseline"] == ""
    # 1.5× slower latencies: far outside the noise, and worse
    slower = p50.loc[("after", "autoscale")]
    assert slower["significant"] == True  # noqa: E712 - object column: True/False/None
    assert slower["better"] == False  # noqa: E712
    assert slower["delta_pct"] == pytest.approx(50.0, abs=8.0)
    # an unchanged system: the CIs overlap → within the noise
    unchanged = p50.loc[("same", "autoscale")]
    assert unchanged["significant"] == False  # noqa: E712
    assert not math.isnan(unchanged["ci_lo"]) and unchanged["n"] == 3
    assert (out / "comparison.csv").exists() and (out / "comparison.html").exists()
    assert "before" in res.text and "after" in res.text
    assert "[lo, hi] 95% bootstrap CI" in res.text  # not swallowed as rich markup


def test_thresholds_become_a_ci_gate(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path, run_id="gated", thresholds=[
        "autoscale.recovery_s < 30", "manual.recovery_s < 30", "error_rate < 0.3"])
    res = compare([run])
    assert res.failed_gates == ["✗ manual.recovery_s < 30: 39.99"]
    assert any(line.startswith("✓ autoscale.recovery_s < 30") for line in res.gate_lines)
    assert "thresholds:" in res.text and "✗ manual.recovery_s < 30" in res.text
    with pytest.raises(GateFailed) as e:
        res.raise_for_gates()
    assert e.value.exit_code == 1


def test_passing_gates_do_not_raise(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path, run_id="fine", thresholds=["p95_ms < 5000"])
    res = compare([run])
    assert res.failed_gates == []
    res.raise_for_gates()


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        compare([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no timeseries"):
        compare([tmp_path / "empty"])


def test_recovery_cells_tell_not_recovered_from_did_not_happen(tmp_path: Path) -> None:
    cut = make_synthetic_run(tmp_path, run_id="cut", duration_s=60, trials=2)
    res = compare([cut])
    t = res.table
    spike = t[t["metric"] == "recovery_s_spike_t30"].set_index("strategy")
    assert spike.loc["manual", "text"] == "not recovered"
    assert spike.loc["manual", "n_not_recovered"] == 2
    assert spike.loc["autoscale", "text"] == "7.0"
    # drop the crash from one strategy's events: "–" (did not happen), not "not recovered"
    full = make_synthetic_run(tmp_path, run_id="partial")
    events = (full / "events.csv").read_text().splitlines()
    kept = [x for x in events if not (",manual," in x and ",fault," in x)]
    (full / "events.csv").write_text("\n".join(kept) + "\n")
    t2 = compare([full]).table
    crash = t2[t2["metric"] == "recovery_s_crash_t95"].set_index("strategy")
    assert crash.loc["manual", "text"] == "–" and crash.loc["manual", "n_happened"] == 0
    assert crash.loc["compose", "text"] == "0.0"


def test_saturated_trials_are_stated_above_the_table(tmp_path: Path) -> None:
    # the synthetic compose trial has 3 host-saturated seconds in a row (t=50..52)
    run = make_synthetic_run(tmp_path, run_id="sat")
    res = compare([run])
    assert res.notes == ["sat, compose #1: the host was saturated (3 s); its figures may "
                         "show the machine's limit, not the strategy's"]
    assert res.text.index("WARNING: sat, compose #1") < res.text.index("harness compare")
    assert "⚠ sat, compose #1: the host was saturated" in res.html_path.read_text()


@pytest.mark.parametrize(("flags", "longest"), [
    ([], 0), ([0, 0], 0), ([1, 0, 1, 1], 2), (["1", "1", "1", ""], 3), ([1.0, "True"], 2),
])
def test_longest_run(flags: list[object], longest: int) -> None:
    assert longest_run(flags) == longest
