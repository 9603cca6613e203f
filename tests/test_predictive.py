"""Policy ``predictive`` (Holt's linear trend over the provisioning lag), table-tested like
the HPA: the smoothing arithmetic, one decision per row, and sequences where the state
(level, trend, measured lead, HPA behavior) carries from one decision to the next."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.rundata import load_run
from harness.autoscale.base import Observation, PolicyState
from harness.autoscale.predictive import PredictivePolicy, holt_update
from harness.autoscale.spec import AutoscalerSpec
from harness.replay import replay_run
from harness.report.html import dashboard_data
from harness.run import RunOptions, run_scenario
from tests.scenario_text import spike_yaml


@pytest.mark.parametrize(("level", "trend", "y", "dt", "expected"), [
    (10, 0, 10, 1, (10, 0)),  # flat stays flat
    # predicted 11; ℓ = .5·12 + .5·11 = 11.5; b = .3·(11.5 − 10)/1 + .7·1 = 1.15
    (10, 1, 12, 1, (11.5, 1.15)),
    # 2 s gap: predicted 12 = y; ℓ = 12; b = .3·(2/2) + .7·1 = 1.0 (trend is per second)
    (10, 1, 12, 2, (12, 1.0)),
    (10, 1, 12, 0, (11, 1)),  # same instant: level moves, trend kept
    (10, 0, 0, 1, (5, -1.5)),  # ℓ = 5; b = .3·(−5) = −1.5
], ids=["flat", "rising", "gap-2s", "same-instant", "drop"])
def test_holt_update(level: float, trend: float, y: float, dt: float,
                     expected: tuple[float, float]) -> None:
    got = holt_update(level, trend, y, dt, 0.5, 0.3)
    assert got == pytest.approx(expected)


def spec(**kw: object) -> AutoscalerSpec:
    base: dict[str, object] = {"policy": "predictive", "metric": "rps", "target": 10,
                               "min_replicas": 1, "max_replicas": 12}
    base.update(kw)
    return AutoscalerSpec.model_validate(base)


def obs(cur: int, values: list[float], unready: int = 0, missing: int = 0,
        target: float = 10) -> Observation:
    return Observation(cur, {f"r{i}": v for i, v in enumerate(values)}, unready, missing,
                       target)


@pytest.mark.parametrize(("kw", "o", "expected"), [
    # first decision: level = total = 3 × 15 = 45, no trend yet → forecast 45 → ceil(4.5)
    ({}, obs(3, [15, 15, 15]), (45, 5, 5, "ForecastAboveTarget;DesiredWithinRange")),
    # 31/30 − 1 = 3 % ≤ 10 % tolerance: keep 3
    ({}, obs(3, [10, 10, 11]), (31, 3, 3, "WithinTolerance;DesiredWithinRange")),
    # a missing replica is taken at the mean: total = 20 × 3 = 60 → 6
    ({}, obs(3, [20, 20], missing=1), (60, 6, 6, "ForecastAboveTarget;DesiredWithinRange")),
    # forecast 300 → 30 replicas, the default rate limit allows max(3 + 4, 2 × 3) = 7
    ({}, obs(3, [100, 100, 100]), (300, 30, 7, "ForecastAboveTarget;ScaleUpLimit")),
    # …and max_replicas 5, below that limit, caps it (the HPA's TooManyReplicas)
    ({"max_replicas": 5}, obs(3, [100, 100, 100]),
     (300, 30, 5, "ForecastAboveTarget;TooManyReplicas")),
    # low demand on the first decision: no recommendation in the 300 s window is higher
    ({}, obs(6, [1] * 6), (6, 1, 1, "ForecastBelowTarget;DesiredWithinRange")),
], ids=["above", "tolerance", "missing-at-mean", "rate-limited", "max", "below"])
def test_one_decision(kw: dict[str, object], o: Observation,
                      expected: tuple[float, int, int, str]) -> None:
    d = PredictivePolicy(spec(**kw)).decide(o, PolicyState(), 100.0)
    assert (d.forecast, d.recommended, d.desired, d.reason) == expected


@pytest.mark.parametrize(("o", "desired", "reason"), [
    (obs(0, []), 0, "ScalingDisabled"),
    (obs(13, [1] * 13), 12, "CurrentAboveMaxReplicas"),
], ids=["zero", "above-max"])
def test_out_of_range_never_reads_metrics(o: Observation, desired: int, reason: str) -> None:
    d = PredictivePolicy(spec()).decide(o, PolicyState(), 0.0)
    assert (d.desired, d.reason, d.forecast) == (desired, reason, None)


def test_no_metrics_is_an_error() -> None:
    with pytest.raises(ValueError, match="did not receive metrics"):
        PredictivePolicy(spec()).decide(obs(3, [], missing=3), PolicyState(), 0.0)


def run(policy: PredictivePolicy, steps: list[tuple[float, Observation]]
        ) -> list[tuple[float | None, int, PolicyState]]:
    """Decide on each row and add scale events as the controller does."""
    state, out = PolicyState(), []
    for t, o in steps:
        d = policy.decide(o, state, t)
        state = d.state
        if d.desired != o.current_replicas:
            state = state.with_scale(t, o.current_replicas, d.desired)
        out.append((d.forecast, d.desired, state))
    return out


def test_a_rising_trend_scales_ahead_of_the_load() -> None:
    # totals 30, 45, 60 every 2 s (lead: the initial 10 s, nothing measured yet)
    # t=2: ℓ = .5·45 + .5·30 = 37.5; b = .3·7.5/2 = 1.125/s; 37.5 + 10·1.125 = 48.75 → 5
    # t=4 (5 asked, 3 ready at 20 → total 60): ℓ = .5·60 + .5·(37.5 + 2·1.125) = 49.875;
    #     b = .3·12.375/2 + .7·1.125 = 2.64375; 49.875 + 26.4375 = 76.3125 → 8 wanted,
    #     the rate limit allows max(3 + 4, 2·3) = 7 from the 3 at the period's start
    p = PredictivePolicy(spec())
    res = run(p, [(0, obs(3, [10, 10, 10])), (2, obs(3, [15, 15, 15])),
                  (4, obs(5, [20, 20, 20], unready=2))])
    assert [r[0] for r in res] == pytest.approx([30, 48.75, 76.3125])
    assert [r[1] for r in res] == [3, 5, 7]


def test_the_lead_is_measured_from_scale_up_to_ready() -> None:
    p = PredictivePolicy(spec())
    res = run(p, [(0, obs(3, [20, 20, 20])),  # → 6
                  (2, obs(6, [20, 20, 20], unready=3)),  # pending: 6 since t=0
                  (5, obs(6, [10] * 6))])  # all 6 ready at t=5 → lead 5 s
    lead = res[-1][2].extra[-1]
    assert res[0][1] == 6 and lead == 5.0
    # fixed lead_s wins over the measurement
    fixed = PredictivePolicy(spec(predictive={"lead_s": 0}))
    d = fixed.decide(obs(3, [15, 15, 15]), PolicyState(), 0.0)
    assert d.forecast == 45


def test_a_falling_forecast_waits_for_the_scale_down_window() -> None:
    p = PredictivePolicy(spec())  # default 300 s down-window
    # t=2: ℓ = .5·12 + .5·60 = 36; b = .3·(−24)/2 = −3.6; 36 − 36 = 0 → 0 replicas wanted
    d0 = p.decide(obs(6, [10] * 6), PolicyState(), 0.0)
    d1 = p.decide(obs(6, [2] * 6), d0.state, 2.0)
    assert (d1.forecast, d1.recommended, d1.desired) == (0.0, 0, 6)
    assert d1.reason == "ForecastBelowTarget;ScaleDownStabilized;DesiredWithinRange"


SIM = spike_yaml("predictive-e2e", 3, [("base", 10, 100, None), ("spike", 20, 400, 4),
                               ("after", 15, 100, 1)], """
strategies:
  - name: hpa
    kind: orchestrated
    replicas: 3
    autoscaler: {policy: hpa, metric: lb_rps, target: 48, max_replicas: 12, interval_s: 2}
  - name: predictive
    kind: orchestrated
    replicas: 3
    autoscaler:
      policy: predictive
      metric: lb_rps
      target: 48
      max_replicas: 12
      interval_s: 2
      behavior: {scale_down: {stabilization_window_s: 10}}
""")


def test_closed_loop_on_sim_logs_the_forecast_and_the_report_shows_it(
        tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(textwrap.dedent(SIM), encoding="utf-8")
    code = run_scenario(tmp_path / "s.yaml", RunOptions(platform="sim", out=tmp_path / "o",
                                                          run_id="r", echo=lambda _: None))
    assert code in (0, 1)
    dec = pd.read_csv(tmp_path / "o" / "r" / "decisions.csv")
    pred, hpa = dec[dec["strategy"] == "predictive"], dec[dec["strategy"] == "hpa"]
    assert hpa["forecast"].isna().all()
    assert pred["forecast"].notna().mean() > 0.9
    # during the ramp the forecast runs ahead of the demand measured at that moment
    ramp = pred[(pred["t_s"] > 10) & (pred["t_s"] < 15)]
    assert (ramp["forecast"] > ramp["metric_mean"] * ramp["ready"]).any()
    assert pred["desired"].max() >= 8  # 400 / 48 → 9
    # replaying the run's own predictive policy reproduces it (Holt state and measured
    # lead rebuilt from the recorded inputs)
    (track,) = replay_run(tmp_path / "o" / "r", strategy="predictive", out=tmp_path / "rep",
                          echo=lambda _: None)
    assert [r["desired"] for r in track.replayed["predictive"]] == pred["desired"].tolist()
    series = dashboard_data(load_run(tmp_path / "o" / "r"))["series"]
    assert "forecast" not in series["hpa"]["1"]
    fc = [v for v in series["predictive"]["1"]["forecast"] if v is not None]
    assert len(fc) > 20 and max(fc) > 48
