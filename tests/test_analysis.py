"""Analysis on small hand-made frames whose answers are worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis.aggregate import aggregate
from harness.analysis.disturbances import find_disturbances
from harness.analysis.elasticity import demand_replicas, elasticity_metrics
from harness.analysis.latency import count_at_or_below, good_requests, window_latency
from harness.analysis.recovery import NOT_RECOVERED, recovery_time
from harness.analysis.rundata import SloSpec, capacity_of, load_run
from harness.analysis.slo import slo_table, violation_seconds
from harness.analysis.stats import METHOD_NONE, METHOD_T, mean_interval
from harness.analysis.summary import summarize_run, summarize_trial, write_summary
from harness.record.histogram import Histogram
from harness.record.schema import EVENTS, SUMMARY_CORE, TIMESERIES, names
from harness.record.upgrade import upgrade_events
from tests.synthetic_run import make_synthetic_run

SLO = SloSpec(p95_ms=300.0, error_rate=0.01, stable_s=3)


def frame(ok: list[float], failed: list[float] | None = None,
          p95: list[float | None] | None = None, offered: list[float] | None = None,
          ready: list[float] | None = None, start: int = 0,
          hists: list[str] | None = None) -> pd.DataFrame:
    n = len(ok)
    failed = failed or [0.0] * n
    p95 = p95 or [100.0] * n
    offered = offered or [o + f for o, f in zip(ok, failed, strict=True)]
    df = pd.DataFrame({c: [math.nan] * n for c in names(TIMESERIES)})
    df["run_id"], df["strategy"], df["trial"] = "r", "s", 1
    df["t_s"] = list(range(start, start + n))
    df["ok_rps"], df["failed_rps"], df["offered_rps"], df["sent_rps"] = ok, failed, offered, \
        offered
    df["p95_ms"] = [math.nan if v is None else v for v in p95]
    df["replicas_ready"] = ready or [2.0] * n
    df["replicas_running"] = ready or [2.0] * n
    df["latency_hist"] = hists or [""] * n
    return df


def events(*rows: tuple[float, str, str, str]) -> pd.DataFrame:
    df = pd.DataFrame([{"run_id": "r", "strategy": "s", "trial": 1, "t_s": t, "kind": k,
                        "replica": rep, "detail": d} for t, k, rep, d in rows],
                      columns=names(EVENTS))
    return upgrade_events(df)  # the structured columns, from the key=value detail


def hist_of(values: list[float]) -> str:
    h = Histogram()
    for v in values:
        h.record(v)
    return h.encode()


# ---------- per-second SLO ----------

def test_slo_table_classifies_each_second() -> None:
    ts = frame(ok=[100, 100, 99, 0, 0, 100],
               failed=[0, 0, 1.5, 0, 0, 0],
               p95=[120, 400, 100, None, None, None],
               offered=[100, 100, 100, 50, 0, 100],
               hists=["", "", "", "", "", hist_of([50.0] * 100)])
    table = slo_table(ts, SLO)
    assert list(table["why"]) == ["", "latency", "errors", "no_response", "", ""]
    # second 5: p95 empty in the row, filled from its histogram (50 ms within 1%)
    assert table.loc[5, "p95_ms"] == pytest.approx(50.0, rel=0.01)
    assert violation_seconds(table) == 3


def test_missing_second_inside_the_trial_is_a_violation() -> None:
    ts = frame(ok=[100, 100, 100, 100])
    ts = ts[ts["t_s"] != 2]  # the recorder lost second 2
    table = slo_table(ts, SLO)
    assert list(table.index) == [0, 1, 2, 3]
    assert list(table["why"]) == ["", "", "missing", ""]


def test_warmup_rows_are_not_measured() -> None:
    ts = frame(ok=[0, 0, 100, 100], offered=[100, 100, 100, 100], start=-2)
    table = slo_table(ts, SLO)
    assert list(table.index) == [0, 1]
    assert violation_seconds(table) == 0


# ---------- recovery time (docs/architecture.md, "Definitions") ----------

def holds(pattern: str) -> pd.Series:
    """'1' holds, '0' violated; index 0…n-1."""
    return pd.Series([c == "1" for c in pattern])


@pytest.mark.parametrize(
    ("pattern", "t0", "stable", "recovered", "expected"),
    [
        # never broken: r = 0 (absorbed), not "not recovered"
        ("1111111111", 2.0, 3, True, 0.0),
        # broken in 2..4, holds from 5 for ≥3 s → r = 5 - 2
        ("1100011111", 2.0, 3, True, 3.0),
        # fractional t0: first row boundary after 2.4 with 3 good rows is 5 → 2.6
        ("1100011111", 2.4, 3, True, 2.6),
        # fractional t0 absorbed: rows 2..5 (floor(2.4) … ceil(5.4)-1) all hold → 0
        ("1111110000", 2.4, 3, True, 0.0),
        # ... but one bad row in that span pushes r to the next boundary where 3 hold
        ("1111100000", 2.4, 3, False, math.nan),
        # a short good run (2 < stable 3) does not count; the later one does: 6 - 1
        ("1011001110", 1.0, 3, True, 5.0),
        # good at the very end but shorter than stable_s: not recovered
        ("1000000011", 1.0, 3, False, math.nan),
        # never good again
        ("1100000000", 2.0, 3, False, math.nan),
        # stable window exactly reaching the end counts: rows 7,8,9
        ("1000000111", 1.0, 3, True, 6.0),
    ],
    ids=["absorbed", "step", "fractional-t0", "fractional-absorbed", "not-absorbed-late",
         "short-run-ignored", "too-short-at-end", "never", "ends-exactly"])
def test_recovery_time(pattern: str, t0: float, stable: int, recovered: bool,
                       expected: float) -> None:
    r = recovery_time(holds(pattern), t0, stable)
    assert r.recovered is recovered
    if recovered:
        assert r.recovery_s == pytest.approx(expected)
        assert str(r) == f"{expected:.1f} s"
    else:
        assert math.isnan(r.recovery_s)  # never 0
        assert str(r) == NOT_RECOVERED


def test_recovery_after_end_of_trial_is_not_recovered() -> None:
    assert not recovery_time(holds("1111"), 10.0, 3).recovered


# ---------- disturbances ----------

def test_disturbances_from_events() -> None:
    ev = events(
        (-5.0, "load_stage", "", "stage=warmup rps=100"),
        (0.0, "load_stage", "", "stage=0 rps=100"),
        (30.02, "load_stage", "", "stage=1 rps=600"),   # up, next goes down → spike
        (60.0, "load_stage", "", "stage=2 rps=100"),    # down: not a disturbance
        (80.1, "load_stage", "", "stage=3 rps=200"),    # up, nothing after → step
        (95.01, "fault", "r1", "action=crash fault=0"),
        (95.03, "fault", "r2", "action=crash fault=0"),  # same injection: one disturbance
        (100.0, "fault", "", "action=crash skipped=no live replica"),  # nothing happened
        (101.0, "fault", "r3", "action=kill error=boom"),  # failed injection
        (110.4, "fault", "r4", "action=pause fault=1"),
    )
    scenario = {"load": {"stages": [{"duration_s": 30}, {"duration_s": 30},
                                    {"duration_s": 20}, {"duration_s": 40}]},
                "faults": [{"at_s": 95}, {"at_s": 110}]}
    ds = find_disturbances(ev, end_s=120, scenario=scenario)
    assert [d.name for d in ds] == ["spike_t30", "step_t80", "crash_t95", "pause_t110"]
    assert ds[2].replicas == ("r1", "r2")
    # windows run to the next disturbance, the last to the trial's end
    assert [d.end_s for d in ds] == [80.1, 95.01, 110.4, 120]


def test_first_stage_without_warmup_is_not_a_disturbance_and_names_dedupe() -> None:
    ev = events((0.0, "load_stage", "", "stage=0 rps=500"),
                (10.0, "fault", "a", "action=crash fault=0"),
                (10.0, "fault", "b", "action=kill fault=1"),
                (12.6, "fault", "c", "action=crash fault=2"),
                (13.2, "fault", "d", "action=crash fault=3"))
    ds = find_disturbances(ev, end_s=30)
    # 12.6 and 13.2 are 0.6 s apart: one injection group; no planned times → rounded t
    assert [d.name for d in ds] == ["crash_t10", "kill_t10", "crash_t13"]
    ds2 = find_disturbances(events((5.0, "fault", "a", "crash k=1"),
                                   (5.4, "fault", "b", "crash k=1"),
                                   (7.0, "fault", "c", "crash k=1")), end_s=30)
    assert [d.name for d in ds2] == ["crash_t5", "crash_t7"]


# ---------- elasticity (SPEC RG) ----------

def test_demand_is_ceil_of_offered_over_capacity() -> None:
    # 0.1 * 3 * 800 is 240.00000000000003 in floating point: still 3 replicas
    d = demand_replicas(np.array([0, 79, 80, 81, 240, 0.1 * 3 * 800, 240.5, np.nan]), 80.0)
    assert list(d) == [0, 1, 1, 2, 3, 3, 4, 0]


def test_elasticity_metrics_by_hand() -> None:
    # 10 s: demand 2 for 5 s then 4 for 5 s; supply 2,2,2,2,2 | 2,2,3,4,5
    demand = np.array([2, 2, 2, 2, 2, 4, 4, 4, 4, 4])
    supply = np.array([2, 2, 2, 2, 2, 2, 2, 3, 4, 5])
    m = elasticity_metrics(demand, supply)
    # under: (2+2+1)/4 per second normalised = 1.25 over 10 s → 12.5 %
    assert m["elasticity_accuracy_u_pct"] == pytest.approx(12.5)
    # over: 1/4 in the last second → 2.5 %
    assert m["elasticity_accuracy_o_pct"] == pytest.approx(2.5)
    assert m["elasticity_timeshare_u_pct"] == pytest.approx(30.0)
    assert m["elasticity_timeshare_o_pct"] == pytest.approx(10.0)
    # supply changed 3 times, demand once, over 10 s = 1/6 min → (3-1)*6 = 12 / min
    assert m["elasticity_jitter_per_min"] == pytest.approx(12.0)
    assert m["elasticity_under_replicas"] == pytest.approx(0.5)
    assert m["elasticity_over_replicas"] == pytest.approx(0.1)


def test_elasticity_perfect_supply_is_zero_everywhere() -> None:
    d = np.array([1, 1, 3, 3, 2])
    m = elasticity_metrics(d, d.copy())
    assert all(v == 0 for v in m.values())


def test_capacity_source() -> None:
    assert capacity_of({"calibration": {"capacity_rps_per_replica": 75}}) == (75.0,
                                                                              "calibrated")
    assert capacity_of({"app": {"env": {"WORKERS": "4", "SERVICE_MS": "50"}}}) == \
        (80.0, "nominal")
    assert capacity_of({}) == (None, "none")


# ---------- latency from merged histograms ----------

def test_window_percentiles_merge_histograms_not_average_percentiles() -> None:
    # second 0: 99 fast requests; second 1: 1 slow one. Average of per-second p95s would
    # be (10 + 1000) / 2 = 505; the true p95 of all 100 requests is 10 ms.
    h0, h1 = hist_of([10.0] * 99), hist_of([1000.0])
    ts = frame(ok=[99, 1], p95=[10, 1000], hists=[h0, h1])
    lat = window_latency(ts)
    assert lat.source == "histogram"
    assert lat.p95_ms == pytest.approx(10.0, rel=0.01)
    assert lat.max_ms == pytest.approx(1000.0)


def test_goodput_counts_ok_requests_within_the_latency_slo() -> None:
    h = hist_of([100.0] * 80 + [500.0] * 20)
    assert count_at_or_below(Histogram.decode(h), 300.0) == 80
    ts = frame(ok=[100, 50], hists=[h, ""], p95=[500, 400])
    # second 0: 100 × 80 %; second 1 has no histogram and p95 over the SLO → 0
    assert good_requests(ts, 300.0) == pytest.approx(80.0)


# ---------- one trial end to end, by hand ----------

def test_summarize_trial_by_hand() -> None:
    # 12 s at 100 req/s offered, 2 replicas; spike to 200 at t=4 breaks the SLO for
    # seconds 4..6 (errors), a 3rd replica is ready at 6.5, SLO holds again from 7.
    ok = [100, 100, 100, 100, 150, 150, 150, 200, 200, 200, 200, 200]
    failed = [0, 0, 0, 0, 50, 50, 50, 0, 0, 0, 0, 0]
    offered = [100] * 4 + [200] * 8
    ready = [2] * 7 + [3] * 5
    ts = frame(ok=ok, failed=failed, offered=offered, ready=ready,
               hists=[hist_of([50.0] * int(o + f)) for o, f in zip(ok, failed, strict=True)])
    ev = events((0.0, "load_stage", "", "stage=warmup rps=100"),
                (4.0, "load_stage", "", "stage=1 rps=200"),
                (5.2, "scale", "", "from=2 to=3"),
                (6.5, "replica_ready", "r3", ""))
    res = summarize_trial(ts, ev, slo=SLO, capacity=(100.0, "calibrated"))
    row = res.row
    assert row["requests"] == 2000 and row["failures"] == 150  # 1850 ok + 150 failed
    assert row["error_rate"] == pytest.approx(150 / 2000)
    assert row["throughput_rps"] == pytest.approx(1850 / 12)
    assert row["slo_violation_s"] == 3
    assert row["replica_seconds"] == 7 * 2 + 5 * 3
    assert row["requests_per_replica_s"] == pytest.approx(1850 / 29)
    assert row["recovery_s_step_t4"] == pytest.approx(3.0)  # holds from 7 on
    assert row["recovered_step_t4"] == 1
    assert row["failed_step_t4"] == 150
    assert row["slo_violation_s_step_t4"] == 3
    assert row["scale_up_reaction_s_step_t4"] == pytest.approx(2.5)
    assert row["recovery_s"] == pytest.approx(3.0)
    assert row["goodput_rps"] == pytest.approx(1850 / 12)  # every ok request at 50 ms
    # demand: 1 for 4 s then 2 for 8 s; ready 2 for 7 s then 3: over-provisioned in
    # seconds 0..3 and 7..11 (9 of 12), exactly matched in 4..6
    assert row["elasticity_timeshare_o_pct"] == pytest.approx(75.0)
    assert row["elasticity_timeshare_u_pct"] == pytest.approx(0.0)


# ---------- whole synthetic run ----------

@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_run(tmp_path_factory.mktemp("results"))


def test_synthetic_run_summary(synthetic: Path) -> None:
    s = summarize_run(load_run(synthetic))
    t = s.trials.set_index("strategy")
    assert list(s.trials.columns[:len(SUMMARY_CORE)]) == names(SUMMARY_CORE)
    assert list(t.index) == ["manual", "compose", "autoscale"]
    # the spike at 30.01: fixed strategies violate 30..69 and hold from 70 → 39.99 s
    assert t.loc["manual", "recovery_s_spike_t30"] == pytest.approx(39.99)
    assert t.loc["autoscale", "recovery_s_spike_t30"] == pytest.approx(6.99)
    assert t.loc["autoscale", "scale_up_reaction_s_spike_t30"] == pytest.approx(6.39)
    # the crash: manual never gets a replica back, compose restarts one, autoscale replaces
    assert math.isnan(t.loc["manual", "scale_up_reaction_s_crash_t95"])
    assert t.loc["compose", "scale_up_reaction_s_crash_t95"] == pytest.approx(2.58)
    assert t.loc["autoscale", "scale_up_reaction_s_crash_t95"] == pytest.approx(1.78)
    assert t.loc["autoscale", "slo_violation_s"] < t.loc["manual", "slo_violation_s"]
    assert t.loc["autoscale", "goodput_rps"] > t.loc["manual", "goodput_rps"]
    assert t.loc["autoscale", "replica_seconds"] > t.loc["manual", "replica_seconds"]


def test_not_recovered_is_reported_as_such_never_zero(tmp_path: Path) -> None:
    # cut the trial at 60 s: the fixed strategies are still drowning in the spike
    d = make_synthetic_run(tmp_path, run_id="cut", duration_s=60)
    out = write_summary(d)
    s = pd.read_csv(out)
    manual = s[s["strategy"] == "manual"].iloc[0]
    assert math.isnan(manual["recovery_s_spike_t30"])
    assert manual["recovered_spike_t30"] == 0
    assert manual["not_recovered"] == 1
    assert math.isnan(manual["recovery_s"])
    line = next(x for x in out.read_text().splitlines() if ",manual," in x)
    header = out.read_text().splitlines()[0].split(",")
    cell = line.split(",")[header.index("recovery_s_spike_t30")]
    assert cell == ""  # empty, not "0"
    dist = pd.read_csv(d / "disturbances.csv")
    assert dist[dist["strategy"] == "manual"]["recovered"].tolist() == [0]
    assert (d / "summary_aggregate.csv").exists()


def test_load_run_drops_a_half_written_last_line(tmp_path: Path) -> None:
    d = make_synthetic_run(tmp_path, run_id="live", status="running")
    full = load_run(d).timeseries
    with (d / "timeseries.csv").open("a") as fh:
        fh.write("live,manual,1,120,100,100,9")  # no newline: the writer is mid-row
    again = load_run(d).timeseries
    assert len(again) == len(full)


def test_load_run_without_files(tmp_path: Path) -> None:
    data = load_run(tmp_path)
    assert data.timeseries.empty and data.events.empty
    assert data.warnings and data.slo == SloSpec(300.0, 0.01, 5)


# ---------- aggregation over repetitions ----------

def test_mean_interval_is_student_t_for_few_trials() -> None:
    x = [10.0, 12.0, 11.0, 13.0, 9.0]
    ci = mean_interval(x)
    # mean 11, s = 1.5811, t(0.975, 4) = 2.7764: half-width 1.9632
    assert ci.method == METHOD_T
    assert (ci.lo, ci.hi) == pytest.approx((11 - 1.9632, 11 + 1.9632), abs=1e-3)
    one = mean_interval([5.0])
    assert one.method == METHOD_NONE and math.isnan(one.lo) and math.isnan(one.hi)
    assert (mean_interval([4.0, 4.0, 4.0]).lo, mean_interval([4.0, 4.0, 4.0]).hi) == (4.0, 4.0)
    assert mean_interval([math.nan, 3.0]).method == METHOD_NONE


def test_aggregate_counts_not_recovered_trials() -> None:
    summary = pd.DataFrame({"run_id": "r", "strategy": ["a", "a", "a", "b"],
                            "trial": [1, 2, 3, 1], "recovery_s": [5.0, math.nan, 7.0, 3.0],
                            "p95_ms": [100.0, 110.0, 120.0, 90.0]})
    agg = aggregate(summary, seed=1).set_index(["strategy", "metric"])
    rec = agg.loc[("a", "recovery_s")]
    assert (rec["n"], rec["n_valid"], rec["n_missing"]) == (3, 2, 1)
    assert rec["mean"] == pytest.approx(6.0)
    p95 = agg.loc[("a", "p95_ms")]
    assert p95["mean"] == pytest.approx(110.0) and p95["ci_lo"] <= 110.0 <= p95["ci_hi"]
    assert p95["ci_method"] == "student-t"
    assert math.isnan(agg.loc[("b", "p95_ms")]["ci_lo"])  # one trial: no CI
    assert agg.loc[("b", "p95_ms")]["ci_method"] == "n too small"


def test_summary_with_three_trials_aggregates(tmp_path: Path) -> None:
    d = make_synthetic_run(tmp_path, run_id="three", trials=3)
    write_summary(d)
    agg = pd.read_csv(d / "summary_aggregate.csv")
    row = agg[(agg["strategy"] == "autoscale") & (agg["metric"] == "p95_ms")].iloc[0]
    assert row["n"] == 3 and row["ci_lo"] <= row["mean"] <= row["ci_hi"]
