"""The harness's own metrics on a /metrics endpoint during a run (for Prometheus/Grafana).

Declared once here; dashboards/grafana/dashboards/harness.json queries these names and
tests/test_dashboards.py checks that every name a panel uses exists here (or in the app /
HAProxy). The run loop creates them on a registry it owns (docs/architecture.md, "Conventions": no
globals) and
feeds one timeseries row per second with `observe_second`; the exposition is served with
`prometheus_client.start_http_server(port, addr="127.0.0.1", registry=registry)`.

Labels: strategy, trial (as in timeseries.csv). Gauges hold the last second's values;
counters add up so PromQL `rate()` works too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

LABELS = ("strategy", "trial")

# (name, type, help, timeseries.csv column it mirrors or "" when derived)
LOADGEN_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("harness_offered_rps", "gauge", "target request rate of the load profile", "offered_rps"),
    ("harness_sent_rps", "gauge", "requests sent in the last second", "sent_rps"),
    ("harness_ok_rps", "gauge", "requests completed successfully in the last second",
     "ok_rps"),
    ("harness_failed_rps", "gauge", "requests failed in the last second", "failed_rps"),
    ("harness_dropped_rps", "gauge", "open-model send slots no free user could take",
     "dropped_rps"),
    ("harness_latency_p50_ms", "gauge", "median latency of the last second", "p50_ms"),
    ("harness_latency_p95_ms", "gauge", "p95 latency of the last second", "p95_ms"),
    ("harness_latency_p99_ms", "gauge", "p99 latency of the last second", "p99_ms"),
    ("harness_in_flight", "gauge", "requests in flight", "in_flight"),
    ("harness_replicas_desired", "gauge", "replicas the deployer/autoscaler wants",
     "replicas_desired"),
    ("harness_replicas_running", "gauge", "replicas running", "replicas_running"),
    ("harness_replicas_ready", "gauge", "replicas ready", "replicas_ready"),
    ("harness_autoscaler_metric", "gauge", "the autoscaler's observed per-replica metric",
     "autoscaler_metric"),
    ("harness_autoscaler_target", "gauge", "the autoscaler's target", "autoscaler_target"),
    ("harness_loadgen_saturated", "gauge", "1 when the load generator was saturated",
     "loadgen_saturated"),
    ("harness_loadgen_cpu_pct", "gauge", "CPU of the load generator, % of one core",
     "loadgen_cpu_pct"),
    ("harness_requests", "counter", "requests completed, by outcome (ok | failed)", ""),
    ("harness_faults", "counter", "faults injected, by action", ""),
    ("harness_load_stage", "gauge", "index of the current load stage", ""),
)

METRIC_NAMES = tuple(n for n, *_ in LOADGEN_METRICS)


def exposed_names() -> set[str]:
    """Names as they appear in the exposition (counters get `_total`)."""
    return {f"{n}_total" if t == "counter" else n for n, t, _, _ in LOADGEN_METRICS}


@dataclass
class LoadgenMetrics:
    gauges: dict[str, Gauge]
    requests: Counter
    faults: Counter
    load_stage: Gauge

    def observe_second(self, row: Mapping[str, Any]) -> None:
        """Set the gauges from one timeseries row (needs strategy and trial keys)."""
        labels = {"strategy": str(row["strategy"]), "trial": str(row["trial"])}
        for name, _t, _h, col in LOADGEN_METRICS:
            g = self.gauges.get(name)
            if g is None or not col:
                continue
            v = row.get(col)
            if v is None or v == "":
                continue
            try:
                g.labels(**labels).set(float(v))
            except (TypeError, ValueError):
                continue
        for outcome, col in (("ok", "ok_rps"), ("failed", "failed_rps")):
            v = row.get(col)
            if v not in (None, "") and float(v) > 0:
                self.requests.labels(**labels, outcome=outcome).inc(float(v))

    def observe_event(self, strategy: str, trial: int, kind: str, detail: str = "") -> None:
        """Count faults and follow load stages (events.csv kinds)."""
        labels = {"strategy": strategy, "trial": str(trial)}
        if kind == "fault":
            action = "fault"
            for part in detail.split():
                if part.startswith("action="):
                    action = part.split("=", 1)[1]
            self.faults.labels(**labels, action=action).inc()
        elif kind == "load_stage":
            for part in detail.split():
                if part.startswith("stage="):
                    try:
                        self.load_stage.labels(**labels).set(float(part.split("=", 1)[1]))
                    except ValueError:
                        pass


def make_loadgen_metrics(registry: CollectorRegistry) -> LoadgenMetrics:
    """Create every harness_* metric on `registry` (one registry per run)."""
    gauges: dict[str, Gauge] = {}
    requests = faults = load_stage = None
    for name, kind, help_text, _col in LOADGEN_METRICS:
        if name == "harness_requests":
            requests = Counter(name, help_text, [*LABELS, "outcome"], registry=registry)
        elif name == "harness_faults":
            faults = Counter(name, help_text, [*LABELS, "action"], registry=registry)
        elif name == "harness_load_stage":
            load_stage = Gauge(name, help_text, list(LABELS), registry=registry)
        elif kind == "gauge":
            gauges[name] = Gauge(name, help_text, list(LABELS), registry=registry)
    assert requests is not None and faults is not None and load_stage is not None
    return LoadgenMetrics(gauges=gauges, requests=requests, faults=faults,
                          load_stage=load_stage)
