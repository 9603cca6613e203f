"""The harness's own metrics on a /metrics endpoint during a run (`--metrics-port`).

Declared once here (HARNESS_METRICS) in Prometheus' conventions: what adds up is a
counter (`_total`, use `rate()`), latency is a histogram in seconds, gauges hold only
levels (the offered rate the profile asks for, replicas, requests in flight), base units
everywhere. dashboards/grafana/dashboards/harness.json queries these names;
tests/test_dashboards.py checks every name a panel uses exists here, and that a real
Prometheus scraping a run (dashboards/prometheus/prometheus.yml) answers the panels.

The run loop creates them on a registry it owns (no globals) and feeds every
timeseries row (`observe_second`) and events row (`observe_event`) to them; the
exposition is served with `prometheus_client.start_http_server(port, addr="127.0.0.1")`.
Label `strategy` everywhere; the trial running is the level `harness_trial`.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from harness.record.histogram import Histogram, bucket_value_ms


@dataclass(frozen=True)
class MetricDef:
    name: str  # as exposed (counters end in _total)
    type: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ("strategy",)


HARNESS_METRICS: tuple[MetricDef, ...] = (
    MetricDef("harness_requests_total", "counter",
              "requests completed, by outcome (ok | failed)", ("strategy", "outcome")),
    MetricDef("harness_requests_sent_total", "counter", "requests sent"),
    MetricDef("harness_requests_dropped_total", "counter",
              "open-model send slots no free user could take"),
    MetricDef("harness_faults_total", "counter", "faults injected, by action",
              ("strategy", "action")),
    MetricDef("harness_loadgen_cpu_seconds_total", "counter",
              "CPU time of the load generator processes"),
    MetricDef("harness_request_duration_seconds", "histogram",
              "latency of completed requests from their intended send time"),
    MetricDef("harness_offered_requests_per_second", "gauge",
              "request rate the load profile asks for (open model; users in the closed)"),
    MetricDef("harness_replicas", "gauge", "replicas, by state (desired | running | ready)",
              ("strategy", "state")),
    MetricDef("harness_requests_in_flight", "gauge", "requests in flight"),
    MetricDef("harness_autoscaler_metric", "gauge",
              "the autoscaler's observed per-replica metric"),
    MetricDef("harness_autoscaler_target", "gauge", "the autoscaler's target for it"),
    MetricDef("harness_loadgen_saturated", "gauge",
              "1 while the load generator is saturated"),
    MetricDef("harness_load_stage", "gauge", "index of the current load stage (-1: warm-up)"),
    MetricDef("harness_trial", "gauge", "repetition number of the trial running"),
)

# Latency bucket bounds, seconds (Prometheus' defaults stretched to the request timeout).
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REPLICA_COLUMNS = (("desired", "replicas_desired"), ("running", "replicas_running"),
                   ("ready", "replicas_ready"))
LEVEL_COLUMNS = (("harness_offered_requests_per_second", "offered_rps"),
                 ("harness_requests_in_flight", "in_flight"),
                 ("harness_autoscaler_metric", "autoscaler_metric"),
                 ("harness_autoscaler_target", "autoscaler_target"),
                 ("harness_loadgen_saturated", "loadgen_saturated"))


def exposed_names() -> set[str]:
    """Names as they appear in the exposition (a histogram as its three series)."""
    out = set()
    for m in HARNESS_METRICS:
        if m.type == "histogram":
            out |= {f"{m.name}_bucket", f"{m.name}_sum", f"{m.name}_count"}
        else:
            out.add(m.name)
    return out


def _num(v: Any) -> float | None:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


class LatencyHistogram(Collector):
    """harness_request_duration_seconds from the per-second histograms the load generator
    already keeps: bucket counts added up, no per-request call."""

    def __init__(self, definition: MetricDef) -> None:
        self.d = definition
        self._lock = threading.Lock()
        # strategy → (cumulative count per bucket bound, +Inf count, sum of seconds)
        self._series: dict[str, tuple[list[int], list[int], list[float]]] = {}

    def observe(self, strategy: str, h: Histogram) -> None:
        with self._lock:
            counts, inf, total = self._series.setdefault(
                strategy, ([0] * len(LATENCY_BUCKETS_S), [0], [0.0]))
            for i, c in h.counts.items():
                v = bucket_value_ms(i) / 1000.0
                k = bisect.bisect_left(LATENCY_BUCKETS_S, v)
                if k < len(counts):
                    counts[k] += c
                inf[0] += c
                total[0] += v * c

    def collect(self) -> Iterator[HistogramMetricFamily]:
        fam = HistogramMetricFamily(self.d.name, self.d.help, labels=list(self.d.labels))
        with self._lock:
            for strategy, (counts, inf, total) in self._series.items():
                cum, buckets = 0, []
                for le, c in zip(LATENCY_BUCKETS_S, counts, strict=True):
                    cum += c
                    buckets.append((repr(le), cum))
                buckets.append(("+Inf", inf[0]))
                fam.add_metric([strategy], buckets, total[0])
        yield fam

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.d.name, self.d.help, labels=list(self.d.labels))


# Fault actions a scenario can ask for (harness.scenario.models.Fault): their counters
# start at 0, so the first fault is an increase PromQL sees, not a series appearing at 1.
FAULT_ACTIONS = ("crash", "kill", "pause")


@dataclass
class LoadgenMetrics:
    counters: dict[str, Counter]
    gauges: dict[str, Gauge]
    latency: LatencyHistogram
    # (strategy, trial) → [(t_s, stage level)]: the stage events are all written when the
    # load starts, the gauge follows the seconds as they pass
    stages: dict[tuple[str, str], list[tuple[float, float]]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def _first_sight(self, s: str) -> None:
        if s not in self.seen:
            self.seen.add(s)
            for action in FAULT_ACTIONS:
                self.counters["harness_faults_total"].labels(strategy=s, action=action).inc(0)

    def observe_second(self, row: Mapping[str, Any]) -> None:
        """One timeseries.csv row (harness.record.schema.TIMESERIES)."""
        s = str(row["strategy"])
        c, g = self.counters, self.gauges
        self._first_sight(s)
        g["harness_trial"].labels(strategy=s).set(float(row.get("trial") or 1))
        t = _num(row.get("t_s"))
        due = [lvl for at, lvl in self.stages.get((s, str(row.get("trial"))), [])
               if t is not None and at <= t]
        if due:
            g["harness_load_stage"].labels(strategy=s).set(due[-1])
        for outcome, col in (("ok", "ok_rps"), ("failed", "failed_rps")):
            # inc(0) too: the series exists from the first second, so rate() is 0, not absent
            c["harness_requests_total"].labels(strategy=s, outcome=outcome).inc(
                max(0.0, _num(row.get(col)) or 0.0))
        c["harness_requests_sent_total"].labels(strategy=s).inc(
            max(0.0, _num(row.get("sent_rps")) or 0.0))
        c["harness_requests_dropped_total"].labels(strategy=s).inc(
            max(0.0, _num(row.get("dropped_rps")) or 0.0))
        # loadgen_cpu_pct is percent of one core over one second
        c["harness_loadgen_cpu_seconds_total"].labels(strategy=s).inc(
            max(0.0, _num(row.get("loadgen_cpu_pct")) or 0.0) / 100.0)
        for state, col in REPLICA_COLUMNS:
            v = _num(row.get(col))
            if v is not None:
                g["harness_replicas"].labels(strategy=s, state=state).set(v)
        for name, col in LEVEL_COLUMNS:
            v = _num(row.get(col))
            if v is not None:
                g[name].labels(strategy=s).set(v)
        hist = row.get("latency_hist")
        self.latency.observe(s, hist if isinstance(hist, Histogram)
                             else Histogram.decode(hist or ""))

    def observe_event(self, row: Mapping[str, Any]) -> None:
        """One events.csv row: faults counted (structured `action`, `outcome`), the load
        stages remembered for observe_second."""
        s, kind = str(row["strategy"]), str(row.get("kind", ""))
        self._first_sight(s)
        if kind == "fault" and str(row.get("outcome") or "ok") == "ok":
            self.counters["harness_faults_total"].labels(
                strategy=s, action=str(row.get("action") or "fault")).inc()
        elif kind == "load_stage":
            stage = str(row.get("stage", ""))
            level = -1.0 if stage == "warmup" else _num(stage)
            at = _num(row.get("t_s"))
            if level is not None and at is not None:
                plan = self.stages.setdefault((s, str(row.get("trial"))), [])
                plan.append((at, level))
                plan.sort()


def make_loadgen_metrics(registry: CollectorRegistry) -> LoadgenMetrics:
    """Create every harness_* metric on `registry` (one registry per run)."""
    counters: dict[str, Counter] = {}
    gauges: dict[str, Gauge] = {}
    latency: LatencyHistogram | None = None
    for m in HARNESS_METRICS:
        if m.type == "counter":
            # prometheus_client appends _total itself
            counters[m.name] = Counter(m.name.removesuffix("_total"), m.help, list(m.labels),
                                       registry=registry)
        elif m.type == "gauge":
            gauges[m.name] = Gauge(m.name, m.help, list(m.labels), registry=registry)
        else:
            latency = LatencyHistogram(m)
            registry.register(latency)
    assert latency is not None
    return LoadgenMetrics(counters=counters, gauges=gauges, latency=latency)
