"""Load-balancer demand presets (lb_rps, lb_queue): the PromQL the Docker platform runs
against HAProxy's exporter, the backend-level value shared among ready replicas, and on
the sim platform a spike where lb_rps scales earlier than utilization (which saturates)."""

from __future__ import annotations

import json
import textwrap

import pandas as pd
import pytest

from harness.autoscale import metrics as m
from harness.autoscale.source import PrometheusSource
from harness.autoscale.spec import AutoscalerSpec
from harness.deploy.base import Replica, ReplicaState
from harness.run import RunOptions, run_scenario
from tests.scenario_text import spike_yaml


def spec(metric: str) -> AutoscalerSpec:
    return AutoscalerSpec(target=48, max_replicas=12, metric=metric, window_s=5)


@pytest.mark.parametrize(("metric", "promql"), [
    ("lb_rps", 'sum by (instance) (rate(haproxy_backend_http_requests_total{proxy="app"}'
               '[5s]))'),
    ("lb_queue", 'sum by (instance) (avg_over_time(haproxy_backend_current_queue'
                 '{proxy="app"}[5s]) + avg_over_time(haproxy_backend_current_sessions'
                 '{proxy="app"}[5s]))'),
], ids=["lb_rps", "lb_queue"])
def test_docker_promql_reads_haproxys_backend(metric: str, promql: str) -> None:
    s = spec(metric)
    assert m.promql_for(s) == promql
    assert m.backend_level(s) and not m.backend_level(spec("rps"))
    assert m.scrape_rule_for(s) is None  # not on any replica's /metrics page


def _reps(*ids: str) -> list[Replica]:
    return [Replica(id=i, name=i, state=ReplicaState.READY) for i in ids]


def _answer(*values: float) -> str:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"instance": f"lb{i}:8404", "job": "haproxy"}, "value": [0, str(v)]}
        for i, v in enumerate(values)]}})


@pytest.mark.parametrize(("answer", "replicas", "expected"), [
    (_answer(300.0), ("a", "b", "c"), {"a": 100.0, "b": 100.0, "c": 100.0}),  # 300 ÷ 3
    (_answer(90.0), ("a",), {"a": 90.0}),
    (_answer(), ("a", "b"), {"a": None, "b": None}),  # the LB was not scraped: missing
], ids=["shared", "one", "no-series"])
def test_backend_value_is_shared_by_the_ready_replicas(
        answer: str, replicas: tuple[str, ...], expected: dict[str, float | None]) -> None:
    seen: list[str] = []

    def get(url: str, timeout: float) -> str:
        seen.append(url)
        return answer

    src = PrometheusSource("http://127.0.0.1:9", m.promql_for(spec("lb_rps")), {},
                           get=get, per_ready=True)
    assert src.sample(_reps(*replicas)) == expected
    assert (src.last_error is None) == (expected["a"] is not None)
    assert "haproxy_backend_http_requests_total" in seen[0]


SPIKE = spike_yaml("lb-spike", 7, [("base", 15, 100, None), ("spike", 30, 450, 1)], """
strategies:
""")

STRATEGY = """
  - name: {name}
    kind: orchestrated
    replicas: 3
    autoscaler:
      policy: hpa
      metric: {metric}
      target: {target}
      min_replicas: 2
      max_replicas: 14
      interval_s: 2
      window_s: 4
      behavior:
        scale_up: {{policies: [{{type: Percent, value: 900, period_s: 15}}]}}
"""


@pytest.fixture(scope="module")
def spike(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    tmp = tmp_path_factory.mktemp("lbspike")
    # 48 req/s per replica = 60 % of the 80 req/s a replica serves, the utilization target
    text = textwrap.dedent(SPIKE) + STRATEGY.format(
        name="util", metric="utilization", target=0.6) + STRATEGY.format(
        name="lb", metric="lb_rps", target=48)
    (tmp / "s.yaml").write_text(text, encoding="utf-8")
    lines: list[str] = []
    code = run_scenario(tmp / "s.yaml", RunOptions(platform="sim", out=tmp / "out",
                                                     run_id="r", echo=lines.append))
    assert code in (0, 1), "\n".join(lines)
    return pd.read_csv(tmp / "out" / "r" / "decisions.csv")


def first_t(dec: pd.DataFrame, strategy: str, replicas: int) -> float:
    rows = dec[(dec["strategy"] == strategy) & (dec["t_s"] >= 15)
               & (dec["desired"] >= replicas)]
    return float(rows["t_s"].min()) if len(rows) else float("inf")


def test_lb_rps_sees_the_spike_beyond_capacity_and_scales_earlier(
        spike: pd.DataFrame) -> None:
    spike_rows = spike[(spike["t_s"] >= 25) & (spike["t_s"] < 45)]
    util = spike_rows[spike_rows["strategy"] == "util"]
    lb = spike_rows[spike_rows["strategy"] == "lb"]
    assert util["metric_mean"].max() <= 1.0  # busy slots / slots cannot say "2.5×"
    # lb_rps × ready = the arrival rate at the LB, ~450 req/s once the spike is on
    total = (lb["metric_mean"] * lb["ready"]).median()
    assert 400 < total < 500, total
    # 450 / 48 = 9.4 → 9 replicas (within the tolerance): lb_rps asks for them as soon as
    # its 4 s window holds the spike (t = 18 with this seed); the utilization HPA climbs
    # 3 → 4 → 5 → 7 → 8 → 10, at most 1/0.6 × per decision (t = 26 with this seed)
    t_lb, t_util = first_t(spike, "lb", 9), first_t(spike, "util", 9)
    assert t_lb < t_util, (t_lb, t_util)
    assert t_lb <= 15 + 6, t_lb
