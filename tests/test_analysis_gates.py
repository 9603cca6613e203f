"""Thresholds (k6-style gates) and the pure part of `harness calibrate`."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.calibrate import (
    RateMeasurement,
    max_rate_within_slo,
    measurement_from_seconds,
    next_probe,
)
from harness.analysis.rundata import SloSpec
from harness.analysis.thresholds import (
    evaluate_thresholds,
    gate_run,
    parse_threshold,
    parse_thresholds,
)
from harness.errors import GateFailed, ScenarioError
from harness.record.histogram import Histogram
from tests.synthetic_run import make_synthetic_run

# ---------- parsing ----------


@pytest.mark.parametrize(
    ("text", "strategy", "metric", "op", "value"),
    [
        ("autoscale.recovery_s < 30", "autoscale", "recovery_s", "<", 30.0),
        ("p95_ms<=300", None, "p95_ms", "<=", 300.0),
        ("  error_rate  !=  0.5e-1 ", None, "error_rate", "!=", 0.05),
        ("hpa-fast.throughput_rps >= 150", "hpa-fast", "throughput_rps", ">=", 150.0),
        ("compose.recovery_s_crash_t95 == 0", "compose", "recovery_s_crash_t95", "==", 0.0),
        ("elasticity_jitter_per_min > -1", None, "elasticity_jitter_per_min", ">", -1.0),
    ],
    ids=["strategy-prefixed", "no-spaces", "exp-number", "dash-in-name", "per-disturbance",
         "negative"])
def test_parse(text: str, strategy: str | None, metric: str, op: str, value: float) -> None:
    t = parse_threshold(text)
    assert (t.strategy, t.metric, t.op, t.value) == (strategy, metric, op, value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p95_ms < fast", "is not a threshold"),
        ("p95_ms => 3", "is not a threshold"),
        ("latency_p95 < 300", "unknown metric 'latency_p95'"),
        ("strategy < 3", "unknown metric 'strategy'"),
        ("nosuch.p95_ms < 3", "unknown strategy 'nosuch'"),
    ],
    ids=["not-a-number", "bad-op", "unknown-metric", "text-column", "unknown-strategy"])
def test_parse_errors_are_clear(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message) as e:
        parse_thresholds(["p95_ms < 300", text], strategies=["manual", "autoscale"])
    assert e.value.key == "thresholds[1]"  # which line of the scenario
    assert e.value.exit_code == 2


# ---------- evaluation ----------

SUMMARY = pd.DataFrame({
    "run_id": "r", "strategy": ["manual", "autoscale", "autoscale"], "trial": [1, 1, 2],
    "p95_ms": [900.0, 200.0, 260.0], "error_rate": [0.2, 0.01, 0.02],
    "recovery_s": [math.nan, 10.0, 20.0], "recovered": [0, 1, 1],
    "recovery_s_spike_t30": [math.nan, 10.0, 20.0], "recovered_spike_t30": [0, 1, 1],
    # the crash hit only autoscale's first trial (e.g. a fault limited by strategy)
    "recovery_s_crash_t95": [math.nan, 1.0, math.nan],
    "recovered_crash_t95": [math.nan, 1, math.nan],
})


def test_gates_pass_and_fail_on_the_mean_over_trials() -> None:
    res = evaluate_thresholds(["autoscale.p95_ms < 300", "autoscale.recovery_s < 12",
                               "p95_ms < 300"], SUMMARY)
    assert res.passed == ["✓ autoscale.p95_ms < 300: 230 (mean of 2 trials)",
                          "✓ p95_ms < 300 (autoscale): 230 (mean of 2 trials)"]
    assert res.failed == ["✗ autoscale.recovery_s < 12: 15 (mean of 2 trials)",
                          "✗ p95_ms < 300 (manual): 900"]
    with pytest.raises(GateFailed) as e:
        res.raise_if_failed()
    assert e.value.exit_code == 1


def test_not_recovered_fails_a_recovery_gate_never_passes_as_zero() -> None:
    res = evaluate_thresholds(["manual.recovery_s < 30", "recovery_s_spike_t30 < 1000"],
                              SUMMARY)
    assert res.failed == ["✗ manual.recovery_s < 30: not recovered in 1 of 1 trial(s)",
                          "✗ recovery_s_spike_t30 < 1000 (manual): not recovered in 1 of 1 "
                          "trial(s)"]
    assert not res.ok


def test_a_disturbance_that_did_not_happen_is_named_as_such() -> None:
    res = evaluate_thresholds(["autoscale.recovery_s_crash_t95 < 5"], SUMMARY)
    assert res.failed == ["✗ autoscale.recovery_s_crash_t95 < 5: no disturbance in 1 of 2 "
                          "trial(s)"]


def test_metric_missing_from_this_run_is_an_error() -> None:
    with pytest.raises(ScenarioError, match="recovery_s_kill_t50"):
        evaluate_thresholds(["recovery_s_kill_t50 < 5"], SUMMARY)


# ---------- calibrate (pure part) ----------

SLO = SloSpec(p95_ms=300.0, error_rate=0.01, stable_s=5)


def m(rate: float, p95: float, err: float = 0.0, served: float | None = None) -> RateMeasurement:
    return RateMeasurement(rate, p95, err, rate if served is None else served)


@pytest.mark.parametrize(
    ("measurements", "capacity"),
    [
        ([m(20, 60), m(40, 80), m(80, 250), m(100, 900)], 80.0),
        # error rate over the SLO fails the rate even with fast latency
        ([m(20, 60), m(40, 80, err=0.05)], 20.0),
        # served less than 95% of the rate: not sustained (e.g. requests silently lost)
        ([m(20, 60), m(40, 80, served=30)], 20.0),
        # a lucky pass above a failure is ignored (conservative)
        ([m(20, 60), m(40, 400), m(60, 200)], 20.0),
        # nothing passes
        ([m(20, 400)], None),
    ],
    ids=["latency-bound", "error-bound", "not-served", "lucky-pass-ignored", "none"])
def test_max_rate_within_slo(measurements: list[RateMeasurement],
                             capacity: float | None) -> None:
    assert max_rate_within_slo(measurements, SLO).capacity_rps_per_replica == capacity


def test_next_probe_doubles_then_bisects_to_resolution() -> None:
    true_capacity = 77.0  # a replica that keeps the SLO up to 77 req/s

    def measure(rate: float) -> RateMeasurement:
        return m(rate, 100.0 if rate <= true_capacity else 800.0)

    done: list[RateMeasurement] = []
    rates = []
    for _ in range(30):
        nxt = next_probe(done, SLO, start_rps=10, max_rps=1000, resolution_rps=2)
        if nxt is None:
            break
        rates.append(nxt)
        done.append(measure(nxt))
    assert rates[:4] == [10, 20, 40, 80]  # doubling until 80 fails
    cap = max_rate_within_slo(done, SLO).capacity_rps_per_replica
    assert cap is not None and true_capacity - 2 <= cap <= true_capacity
    assert len(rates) < 12


def test_next_probe_edges() -> None:
    assert next_probe([m(1000, 50)], SLO, start_rps=10, max_rps=1000,
                      resolution_rps=1) is None  # capacity ≥ max: stop
    assert next_probe([m(10, 900)], SLO, start_rps=10, max_rps=1000,
                      resolution_rps=1) == 5.0  # even the first failed: halve
    assert next_probe([m(1, 900)], SLO, start_rps=1, max_rps=1000,
                      resolution_rps=1) is None


def test_measurement_from_seconds_merges_histograms() -> None:
    def hist(v: float, n: int) -> str:
        h = Histogram()
        for _ in range(n):
            h.record(v)
        return h.encode()

    ts = pd.DataFrame({"t_s": [0, 1, 2, 3], "ok_rps": [50, 50, 50, 50],
                       "failed_rps": [10, 0, 0, 0], "p95_ms": [900, 100, 100, 100],
                       "p50_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan,
                       "latency_hist": [hist(900, 60), hist(100, 50), hist(100, 50),
                                        hist(100, 50)]})
    r = measurement_from_seconds(ts, 50.0, skip_s=1)  # the first second is settling
    assert r.seconds == 3 and r.error_rate == 0.0 and r.served_rps == 50.0
    assert r.p95_ms == pytest.approx(100.0, rel=0.01)


def test_gate_run_over_a_run_folder(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path, thresholds=["autoscale.recovery_s < 30",
                                                   "compose.recovery_s < 30"])
    res = gate_run(run)
    assert res.passed == ["✓ autoscale.recovery_s < 30: 6.99"]
    assert res.failed == ["✗ compose.recovery_s < 30: 39.99"]
    assert gate_run(make_synthetic_run(tmp_path, run_id="nogates")).ok
