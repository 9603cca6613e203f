"""Fitting the sim's platform lags to a real run's events (pure, hand-made events)."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.platforms.sim.calibrate import fit_params, observed_lags
from harness.platforms.sim.params import SimParams


def ev(rows: list[tuple[str, float, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"run_id": "r", "strategy": s, "trial": 1, "t_s": t, "kind": k,
                          "replica": rep, "detail": d} for s, t, k, rep, d in rows])


EVENTS = ev([
    # deploy: started before the load, ready 2.5 s later (STARTUP_S=1 → 1.5 s container)
    ("auto", -9.0, "replica_started", "a", "state=starting"),
    ("auto", -6.5, "replica_ready", "a", "start_to_ready_s=2.500"),
    ("auto", -6.0, "replica_lb_traffic", "a", "since_start_s=3.000"),
    ("auto", -3.0, "replica_first_scrape", "a", "since_start_s=6.000"),
    ("auto", -5.0, "load_stage", "", "stage=warmup rps=100"),
    # a scale-up decided at 10 s; the new replica starts 0.8 s later, LB after 3.5 s
    ("auto", 10.0, "scale", "", "1→2 reason=AboveTarget"),
    ("auto", 10.8, "replica_started", "b", "state=starting"),
    ("auto", 13.1, "replica_ready", "b", "start_to_ready_s=2.300"),
    ("auto", 14.3, "replica_lb_traffic", "b", "since_start_s=3.500"),
    ("auto", 17.8, "replica_first_scrape", "b", "since_start_s=7.000"),
    # a crash at 30; Swarm starts the replacement 1.7 s later (restart delay 1 s)
    ("auto", 30.0, "fault", "a", "action=crash fault=0"),
    ("auto", 31.7, "replica_started", "c", "state=starting"),
    # compose: restarted 0.6 s after the crash (Docker's back-off 0.1 s)
    ("comp", 30.0, "fault", "x", "action=crash fault=0"),
    ("comp", -9.0, "replica_started", "x", "state=starting"),
    ("comp", -5.0, "load_stage", "", "stage=warmup rps=100"),
    ("comp", 30.6, "replica_restarted", "x", "restarts=1"),
    ("comp", 32.0, "replica_ready", "x", "start_to_ready_s=1.400"),
    ("comp", 32.4, "replica_lb_traffic", "x", "since_start_s=1.800"),
    ("comp", 30.0, "fault", "", "action=crash error=gone"),  # failed injections: ignored
])


def test_observed_lags_from_events() -> None:
    lags = observed_lags(EVENTS, startup_s=1.0, restart_delay_s={"auto": 1.0})
    assert lags["container_start_s"] == pytest.approx([1.5, 1.3, 0.4])
    # a first replica's LB traffic is skipped (the LB knew it before the watcher looked);
    # a restarted one (same address): ready → LB
    assert lags["lb_check_s"] == pytest.approx([0.4])
    assert lags["dns_discovery_s"] == pytest.approx([3.5])  # added later: since start
    assert lags["prom_discovery_s"] == pytest.approx([6.0, 7.0])
    assert lags["scale_command_s"] == pytest.approx([0.8])
    assert lags["reschedule_lag_s"] == pytest.approx([0.7])
    assert lags["restart_lag_s"] == pytest.approx([0.5])


def test_fit_replaces_observed_ranges_and_keeps_the_rest() -> None:
    base = SimParams(overhead_ms=2.0)
    fitted, report = fit_params(EVENTS, startup_s=1.0, restart_delay_s={"auto": 1.0},
                                base=base)
    assert fitted.overhead_ms == 2.0
    assert fitted.scale_command_s == (0.8, 0.8)
    lo, hi = fitted.container_start_s
    assert 0.4 <= lo < hi <= 1.5
    assert report["restart_lag_s"]["n"] == 1
    empty, rep = fit_params(EVENTS.iloc[:0], startup_s=0.0)
    assert empty == SimParams() and all(v["range"] is None for v in rep.values())
