"""Surges in the offered rate and marked disturbances: table tests on hand-written rates
whose answers are worked out by hand (harness/analysis/surges.py)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness.analysis.disturbances import find_disturbances
from harness.analysis.recovery import recovery_time
from harness.analysis.rundata import SloSpec
from harness.analysis.summary import summarize_trial
from harness.analysis.surges import Surge, SurgeRule, find_surges, marks_of
from harness.record.schema import EVENTS, TIMESERIES, names
from harness.record.upgrade import upgrade_events

RULE = SurgeRule(rise=0.5, within_s=30, min_rise_rps=5)


def flash_crowd() -> list[float]:
    """60 req/s for 15 s, +27 req/s each second to 600 at t=35, then −2 req/s."""
    return [60.0] * 15 + [60.0 + 27 * k for k in range(1, 21)] + \
        [600.0 - 2 * k for k in range(1, 60)]


CASES = [
    # (rates, rule, expected (t0, peak, base, peak rate) per surge)
    pytest.param(flash_crowd(), RULE, [(15, 34, 60.0, 600.0)], id="flash-crowd"),
    pytest.param([100.0] * 30 + [400.0] * 40 + [100.0] * 50, RULE,
                 [(30, 30, 100.0, 400.0)], id="step-peaks-at-once"),
    # a 60-s ramp 100 → 700: rises 50 % within 30 s; the peak is the ramp's end
    pytest.param([100.0] * 10 + [100.0 + 10 * k for k in range(1, 61)] + [700.0] * 20,
                 RULE, [(10, 69, 100.0, 700.0)], id="long-ramp-peaks-at-its-end"),
    # +40 % is under rise=0.5
    pytest.param([100.0] * 10 + [140.0] * 20, RULE, [], id="small-rise-is-no-surge"),
    # 2 → 4 req/s is +100 % but under min_rise_rps
    pytest.param([2.0] * 10 + [4.0] * 10, RULE, [], id="min-rise-rps"),
    # 100 → 200 over 90 s: +50 % takes 45 s, longer than within_s
    pytest.param([100.0 + k * 100 / 90 for k in range(91)], RULE, [], id="too-slow"),
    pytest.param([100.0 + k * 100 / 90 for k in range(91)],
                 SurgeRule(rise=0.5, within_s=45, min_rise_rps=5), [(1, 90, 100.0, 200.0)],
                 id="within-s-is-configurable"),
    # two separate surges; the second is searched for after the first one's peak
    pytest.param([50.0] * 10 + [200.0] * 20 + [50.0] * 20 + [300.0] * 10, RULE,
                 [(10, 10, 50.0, 200.0), (50, 50, 50.0, 300.0)], id="two-surges"),
    # a gap (NaN) carries the last rate forward: no surge from 0 back to 100
    pytest.param([100.0] * 5 + [math.nan] * 3 + [100.0] * 5, RULE, [], id="gap-is-no-surge"),
    pytest.param([], RULE, [], id="empty"),
]


@pytest.mark.parametrize(("rates", "rule", "expected"), CASES)
def test_find_surges(rates: list[float], rule: SurgeRule,
                     expected: list[tuple[int, int, float, float]]) -> None:
    got = find_surges(rates, rule)
    assert [(s.t0_s, s.peak_s, s.base_rps, pytest.approx(s.peak_rps)) for s in got] == \
        expected


def test_start_offset_shifts_times() -> None:
    assert find_surges([10.0] * 3 + [50.0] * 3, RULE, start_s=-5) == [
        Surge(t0_s=-2, peak_s=-2, base_rps=10.0, peak_rps=50.0)]


@pytest.mark.parametrize(("scenario", "expected"), [
    ({}, RULE),
    ({"disturbances": {"surge": {"rise": 1.0}}}, SurgeRule(rise=1.0)),
    ({"disturbances": {"surge": None}}, None),
    ({"disturbances": {"marks": []}}, RULE),
])
def test_rule_from_scenario(scenario: dict, expected: SurgeRule | None) -> None:
    assert SurgeRule.from_scenario(scenario) == expected


# ---------- recovery past the peak ----------

def holds(bits: str) -> pd.Series:
    return pd.Series([b == "1" for b in bits], index=range(len(bits)))


@pytest.mark.parametrize(("bits", "t0", "peak", "recovered", "recovery_s"), [
    # good early in the rise, bad at the peak, good from 8 on: recovery at 8, not 0
    ("11110000111111111", 0.0, 5.0, True, 8.0),
    # good all along: held from t0 through peak + stable_s → 0
    ("11111111111", 0.0, 5.0, True, 0.0),
    # without a peak the first 3 good seconds would count
    ("11100000111111111", 0.0, None, True, 0.0),
    # good again from 9; the run must cover rows through peak + stable_s - 1 = 12
    ("111111000111111100", 0.0, 10.0, True, 9.0),
    # good from 13 but the trial ends at 15, before peak + stable_s
    ("111111111100011", 0.0, 12.0, False, math.nan),
])
def test_recovery_needs_the_slo_past_the_peak(bits: str, t0: float, peak: float | None,
                                              recovered: bool, recovery_s: float) -> None:
    r = recovery_time(holds(bits), t0, 3, peak_s=peak)
    assert r.recovered == recovered
    assert (math.isnan(r.recovery_s) and math.isnan(recovery_s)) or r.recovery_s == recovery_s


# ---------- disturbances from a trace, marks, and the step it duplicates ----------

def events(*rows: tuple[float, str, str, str]) -> pd.DataFrame:
    return upgrade_events(pd.DataFrame(
        [{"run_id": "r", "strategy": "s", "trial": 1, "t_s": t, "kind": k, "replica": rep,
          "detail": d} for t, k, rep, d in rows], columns=names(EVENTS)))


def test_trace_surge_and_mark_are_disturbances() -> None:
    ev = events((-5.0, "note", "", "trace"))
    scenario = {"disturbances": {"surge": {"rise": 0.5, "within_s": 30, "min_rise_rps": 5},
                                 "marks": [{"name": "deploy", "at_s": 70}]}}
    ds = find_disturbances(ev, end_s=94, scenario=scenario, offered=flash_crowd())
    assert [(d.name, d.kind, d.t0_s, d.peak, d.end_s) for d in ds] == [
        ("surge_t15", "surge", 15.0, 34.0, 70.0), ("deploy", "mark", 70.0, 70.0, 94)]
    off = find_disturbances(ev, end_s=94, scenario={"disturbances": {"surge": None}},
                            offered=flash_crowd())
    assert off == []


def test_a_stage_step_is_not_counted_twice_as_a_surge() -> None:
    ev = events((0.0, "load_stage", "", "stage=0 rps=100 ramp_s=0"),
                (30.0, "load_stage", "", "stage=1 rps=400 ramp_s=10"))
    offered = [100.0] * 30 + [100.0 + 30 * k for k in range(1, 11)] + [400.0] * 20
    ds = find_disturbances(ev, end_s=60, scenario={}, offered=offered)
    assert [(d.name, d.peak) for d in ds] == [("step_t30", 40.0)]


def ts_frame(offered: list[float], failed: list[float], p95: list[float],
             ready: list[float]) -> pd.DataFrame:
    n = len(offered)
    df = pd.DataFrame({c: [math.nan] * n for c in names(TIMESERIES)})
    df["run_id"], df["strategy"], df["trial"], df["t_s"] = "r", "s", 1, list(range(n))
    df["offered_rps"] = df["sent_rps"] = offered
    df["failed_rps"] = failed
    df["ok_rps"] = [o - f for o, f in zip(offered, failed, strict=True)]
    df["p95_ms"] = p95
    df["replicas_ready"] = df["replicas_running"] = ready
    df["latency_hist"] = ""
    return df


def test_surge_row_in_summary_and_disturbances() -> None:
    """A trace surge at 10 peaking at 12; the SLO breaks 12..16, a replica is ready at 14."""
    n = 40
    offered = [100.0] * 10 + [200.0, 300.0, 400.0] + [400.0] * (n - 13)
    bad = set(range(12, 17))
    failed = [50.0 if t in bad else 0.0 for t in range(n)]
    p95 = [100.0] * n
    ready = [2.0] * 14 + [3.0] * (n - 14)
    ev = events((14.2, "replica_ready", "x", ""))
    res = summarize_trial(ts_frame(offered, failed, p95, ready), ev,
                          slo=SloSpec(p95_ms=300, error_rate=0.01, stable_s=3),
                          scenario={})
    [d] = res.disturbances
    assert (d["disturbance"], d["kind"], d["t0_s"], d["peak_s"]) == ("surge_t10", "surge",
                                                                      10, 12)
    assert d["recovered"] == 1 and d["recovery_s"] == 7  # good again from 17
    assert d["slo_violation_s"] == 5 and d["failed"] == 250
    assert d["scale_up_reaction_s"] == pytest.approx(4.2)
    assert res.row["recovery_s_surge_t10"] == 7


def test_marks_of_reads_the_scenario() -> None:
    assert [(m.name, m.at_s) for m in marks_of(
        {"disturbances": {"marks": [{"name": "deploy", "at_s": 12}]}})] == [("deploy", 12.0)]
    assert marks_of({"disturbances": {"surge": None}}) == []
