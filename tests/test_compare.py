"""`harness compare`: within a run against a baseline, A/B across runs with Welch
significance, pooled repetitions, refused/forced scenario mismatches, changed strategies,
saturated trials, the compare page, and thresholds as a CI gate."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.compare import build_comparison, compare
from harness.analysis.rundata import load_run
from harness.analysis.runsets import _flagged_trials
from harness.analysis.stats import welch_p_samples
from harness.analysis.summary import summarize_run
from harness.cli import main
from harness.errors import GateFailed, UsageError
from tests.synthetic_run import make_synthetic_run


def _edit_run_json(run: Path, edit: dict[str, object]) -> None:
    """Change scenario settings of a written run: {"slo.p95_ms": 250, ...}."""
    doc = json.loads((run / "run.json").read_text())
    for path, value in edit.items():
        node = doc["scenario"]
        *head, last = path.split(".")
        for k in head:
            node = node[int(k)] if isinstance(node, list) else node[k]
        node[last] = value
    (run / "run.json").write_text(json.dumps(doc))


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _row(t: pd.DataFrame, metric: str, run: str, strategy: str) -> pd.Series:
    r = t[(t["metric"] == metric) & (t["run"] == run) & (t["strategy"] == strategy)]
    assert len(r) == 1, (metric, run, strategy)
    return r.iloc[0]


def test_one_run_is_the_within_view(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path, run_id="one")
    printed: list[str] = []
    res = compare([run], echo=printed.append)
    assert res.view == "within"
    assert res.entities == [("one", "manual"), ("one", "compose"), ("one", "autoscale")]
    t = res.table
    p95 = t[t["metric"] == "p95_ms"].set_index("strategy")
    # baseline: the first strategy of the run
    assert p95.loc["manual", "baseline"] == ""
    assert p95.loc["autoscale", "baseline"] == "one:manual"
    assert p95.loc["autoscale", "delta"] == pytest.approx(
        p95.loc["autoscale", "mean"] - p95.loc["manual", "mean"])
    # one trial: no interval, the noise is unknown, nothing is called significant
    assert (p95["ci_method"] == "n too small").all()
    assert p95["significant"].isna().all() and p95["p_value"].isna().all()
    assert {"recovery_s_spike_t30", "recovery_s_crash_t95"} <= set(t["metric"])
    assert res.csv_path == run / "comparison.csv"
    back = pd.read_csv(res.csv_path)
    assert {"view", "ci_method", "p_value"} <= set(back.columns)
    assert set(back["strategy"]) == {"manual", "compose", "autoscale"}
    text = "\n".join(printed)
    assert "Within a run: each strategy against the first strategy" in text
    assert "p95 latency" in text and "comparison.csv" in text
    assert "n too small" in text  # the legend names the (absent) interval


def test_within_view_against_a_chosen_baseline(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path, run_id="three", trials=3)
    res = compare([run], baseline="autoscale")
    err = _row(res.table, "error_rate", "three", "manual")
    assert err["baseline"] == "three:autoscale"
    # manual drowns in the spike: far more errors than autoscale, beyond the noise
    assert err["delta"] > 0 and err["significant"] == True  # noqa: E712 (object column)
    assert err["better"] == False  # noqa: E712
    assert _row(res.table, "error_rate", "three", "autoscale")["baseline"] == ""
    assert "each strategy against autoscale" in plain(res.text)
    with pytest.raises(UsageError, match="not a strategy of three"):
        compare([run], baseline="nosuch")
    with pytest.raises(UsageError, match="A/B view needs two runs"):
        compare([run], view="ab")


def test_ab_per_strategy_with_welch_significance(tmp_path: Path) -> None:
    before = make_synthetic_run(tmp_path, run_id="before", trials=3, seed=1)
    after = make_synthetic_run(tmp_path, run_id="after", trials=3, seed=2, slow_factor=1.5)
    same = make_synthetic_run(tmp_path, run_id="same", trials=3, seed=3)
    res = compare([before, after, same], out_dir=tmp_path / "cmp")
    assert res.view == "ab"
    assert res.question.startswith("A/B across runs: each strategy in after, same against "
                                   "the same strategy in before")
    t = res.table
    slower = _row(t, "p95_ms", "after", "autoscale")
    # each strategy against itself in run A, not against another strategy
    assert slower["baseline"] == "before:autoscale"
    assert _row(t, "p95_ms", "before", "autoscale")["baseline"] == ""
    assert _row(t, "p95_ms", "after", "manual")["baseline"] == "before:manual"
    assert slower["significant"] == True and slower["better"] == False  # noqa: E712
    assert slower["delta_pct"] == pytest.approx(50.0, abs=8.0)
    assert slower["ci_method"] == "student-t" and slower["n"] == 3
    # the p-value is Welch's over the two runs' trials, computed here independently
    a = summarize_run(load_run(before)).trials
    b = summarize_run(load_run(after)).trials
    pa = a[a["strategy"] == "autoscale"]["p95_ms"]
    pb = b[b["strategy"] == "autoscale"]["p95_ms"]
    assert slower["p_value"] == pytest.approx(welch_p_samples(pa, pb), rel=1e-9)
    assert slower["p_value"] < 0.05
    # an unchanged system: within the noise
    unchanged = _row(t, "p95_ms", "same", "autoscale")
    assert unchanged["significant"] == False and unchanged["p_value"] >= 0.05  # noqa: E712
    assert (tmp_path / "cmp" / "comparison.csv").exists()
    # one table per strategy, the Δ in a column of its own
    assert "autoscale — after vs before, same vs before" in plain(res.text)
    assert "Δ after − before" in plain(res.text)
    assert re.search(r"\+\d+ \(\+\d+%\) \* p", plain(res.text))
    text = plain(res.text)
    assert "Student-t on the mean" in text and "Welch t-test" in text


def test_different_scenarios_are_refused_or_forced(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    a = make_synthetic_run(tmp_path, run_id="a")
    b = make_synthetic_run(tmp_path, run_id="b")
    _edit_run_json(b, {"slo.p95_ms": 250.0, "load.stages.1.rps": 300.0})
    with pytest.raises(UsageError) as e:
        compare([a, b])
    msg = str(e.value)
    assert "\n" not in msg and "b differs from a in load, slo" in msg and "--force" in msg
    assert e.value.exit_code == 2
    # nothing was written before refusing
    assert not (tmp_path / "compare-a--b").exists()
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness: not the same scenario")
    res = compare([a, b], force=True)
    assert any("compared anyway (--force)" in n and "slo.p95_ms 300.0 → 250.0" in n
               for n in res.notes)
    assert "⚠ different scenarios" in plain(res.text)
    # other platforms are other scenarios too
    c = make_synthetic_run(tmp_path, run_id="c")
    doc = json.loads((c / "run.json").read_text())
    doc["platform"] = "sim"
    (c / "run.json").write_text(json.dumps(doc))
    with pytest.raises(UsageError, match="in platform"):
        compare([a, c])


def test_a_changed_strategy_is_stated_above_the_table(tmp_path: Path) -> None:
    a = make_synthetic_run(tmp_path, run_id="a")
    b = make_synthetic_run(tmp_path, run_id="b")
    _edit_run_json(b, {"strategies.2.autoscaler.target": 0.5})
    res = compare([a, b])
    # (the synthetic runs' compose trial also had a saturated host: said in its own note)
    assert [n for n in res.notes if n.startswith("strategy")] == [
        "strategy autoscale changed from a to b: autoscaler.target 0.6 → 0.5"]
    first_lines = plain(res.text).splitlines()[:3]
    assert any("strategy autoscale changed from a to b" in x for x in first_lines)


def test_pooling_runs_as_repetitions(tmp_path: Path) -> None:
    r1 = make_synthetic_run(tmp_path, run_id="r1", trials=2, seed=1)
    r2 = make_synthetic_run(tmp_path, run_id="r2", trials=2, seed=2)
    r3 = make_synthetic_run(tmp_path, run_id="r3", trials=2, seed=3, slow_factor=1.5)
    # --pool: every run given is one group (within view of 4 trials)
    pooled = compare([r1, r2], pool=True)
    assert pooled.view == "within" and [g.label for g in pooled.groups] == ["r1+r2"]
    row = _row(pooled.table, "p95_ms", "r1+r2", "autoscale")
    values = pd.concat([summarize_run(load_run(r))
                        .trials.query("strategy == 'autoscale'")["p95_ms"]
                        for r in (r1, r2)])
    assert row["n"] == 4 and row["mean"] == pytest.approx(values.mean())
    assert pooled.csv_path == tmp_path / "compare-r1+r2" / "comparison.csv"
    # A+B pools exactly those: (r1+r2) vs r3
    ab = compare([f"{r1}+r2", r3])
    assert [g.label for g in ab.groups] == ["r1+r2", "r3"]
    slower = _row(ab.table, "p95_ms", "r3", "autoscale")
    assert slower["baseline"] == "r1+r2:autoscale" and slower["significant"] == True  # noqa: E712
    # pooled trials keep where they came from
    g = ab.groups[0]
    assert g.origin[("autoscale", 3)] == (1, 1)
    # a run on both sides is refused; so is pooling runs of different scenarios
    with pytest.raises(UsageError, match="named twice"):
        compare([f"{r1}+r2", r2])
    _edit_run_json(r3, {"faults.0.at_s": 90.0})
    with pytest.raises(UsageError, match="r3 differs from r1 in faults"):
        compare([r1, r2, r3], pool=True)


def test_saturated_trials_are_stated(tmp_path: Path) -> None:
    a = make_synthetic_run(tmp_path, run_id="a", trials=3)
    b = make_synthetic_run(tmp_path, run_id="b", trials=3)
    ts = pd.read_csv(b / "timeseries.csv", dtype={"latency_hist": str}, keep_default_na=False)
    hit = (ts["strategy"] == "compose") & (ts["trial"] == 2) & (ts["t_s"].between(40, 45))
    ts.loc[hit, "loadgen_saturated"] = 1
    ts.to_csv(b / "timeseries.csv", index=False)
    res = compare([a, b])
    # the synthetic compose trials also had 3 host-saturated seconds in a row
    assert [n for n in res.notes if "load generator" in n] == [
        "run b: the load generator was saturated in 1 of 9 trials "
        "(compose#2); their figures may be bent by the measuring machine"]
    assert "run a: the host was saturated in 3 of 9 trials (compose#1, compose#2, " \
           "compose#3); their figures may be bent by the measuring machine" in res.notes


def test_html_page_is_one_self_contained_file(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    a = make_synthetic_run(tmp_path, run_id="a", trials=2, seed=1)
    b = make_synthetic_run(tmp_path, run_id="b", trials=2, seed=2, slow_factor=1.3)
    page = tmp_path / "out" / "ab.html"
    assert main(["compare", str(a), str(b), "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {page}" in out and "A/B across runs" in out
    text = page.read_text()
    # no network: nothing is fetched from anywhere
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", text)
    doc = json.loads(re.search(r"<script type='application/json' id=harness-data>(.*?)"
                               r"</script>", text, re.S).group(1).replace("<\\/", "</"))
    assert [s["name"] for s in doc["strategies"]] == [
        "manual · a", "compose · a", "autoscale · a", "manual · b", "compose · b",
        "autoscale · b"]
    assert set(doc["series"]["autoscale · b"]) == {"1", "2"}
    assert doc["compare"]["view"] == "ab"
    assert [t["title"] for t in doc["compare"]["tables"]] == [
        "manual — b vs a", "compose — b vs a", "autoscale — b vs a"]
    p95 = next(r for r in doc["compare"]["tables"][2]["rows"] if r["metric"] == "p95_ms")
    assert p95["cells"][1]["delta"].startswith("+") and "p" in p95["cells"][1]["delta"]
    assert p95["cells"][1]["cls"] == "bad"  # slower, significantly
    assert "Student-t" in doc["compare"]["legend"]
    # without --html the page goes next to comparison.csv
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "o2")]) == 0
    assert (tmp_path / "o2" / "comparison.html").exists()


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError):
        compare([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no timeseries"):
        compare([tmp_path / "empty"])
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"harness: {tmp_path / 'missing'}: not a run folder"
    run = make_synthetic_run(tmp_path, run_id="x")
    with pytest.raises(UsageError, match="--baseline picks a strategy"):
        build_comparison([run, make_synthetic_run(tmp_path, run_id="y")], view="ab",
                         baseline="manual")
    with pytest.raises(UsageError, match="strategy nosuch is in none"):
        build_comparison([run], strategies=["nosuch"])


def test_thresholds_become_a_ci_gate(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path, run_id="gated", thresholds=[
        "autoscale.recovery_s < 30", "manual.recovery_s < 30", "error_rate < 0.3"])
    res = compare([run])
    assert res.failed_gates == ["✗ manual.recovery_s < 30: 39.99"]
    assert any(line.startswith("✓ autoscale.recovery_s < 30") for line in res.gate_lines)
    text = plain(res.text)
    assert "thresholds:" in text and "✗ manual.recovery_s < 30" in text
    with pytest.raises(GateFailed) as e:
        res.raise_for_gates()
    assert e.value.exit_code == 1
    fine = make_synthetic_run(tmp_path, run_id="fine", thresholds=["p95_ms < 5000"])
    ok = compare([fine])
    assert ok.failed_gates == []
    ok.raise_for_gates()


def test_recovery_cells_tell_not_recovered_from_did_not_happen(tmp_path: Path) -> None:
    cut = make_synthetic_run(tmp_path, run_id="cut", duration_s=60, trials=2)
    t = compare([cut]).table
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
    assert math.isnan(crash.loc["manual", "mean"])


def test_saturated_trials_are_stated_above_the_table(tmp_path: Path) -> None:
    # the synthetic compose trial has 3 host-saturated seconds in a row (t=50..52)
    run = make_synthetic_run(tmp_path, run_id="sat")
    res = compare([run])
    host = [n for n in res.notes if "the host was saturated" in n]
    assert len(host) == 1 and "compose#1" in host[0] and "run sat" in host[0]
    assert res.text.index("the host was saturated") < res.text.index("compose")


@pytest.mark.parametrize(("host", "loadgen", "flagged"), [
    ([0, 0, 0, 0], [0, 0, 0, 0], ([], [])),
    ([1, 0, 1, 1], [0, 0, 0, 0], ([], [])),          # two in a row: not the trial flag
    ([1, 1, 1, 0], [0, 0, 1, 0], ([3], [1])),         # three in a row; any loadgen second
    (["1", "1", "1", ""], ["", "", "", ""], ([3], [])),
], ids=["quiet", "short-streak", "streak", "text-flags"])
def test_which_trials_are_flagged(host: list[object], loadgen: list[object],
                                  flagged: tuple[list[int], list[int]]) -> None:
    ts = pd.DataFrame({"strategy": "a", "trial": 1, "t_s": range(4),
                       "host_saturated": host, "loadgen_saturated": loadgen})
    assert list(_flagged_trials(ts, "host_saturated")) == flagged[0]
    assert list(_flagged_trials(ts, "loadgen_saturated")) == flagged[1]
