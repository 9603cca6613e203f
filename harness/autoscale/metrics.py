"""Metric presets and the pure arithmetic behind the metric sources (no I/O).

A preset names one per-replica metric of the sample app twice: as PromQL for the run's
Prometheus server (one instant query returning one series per replica, told apart by the
``instance`` label) and as a ``ScrapeRule`` for reading each replica's /metrics directly
where there is no server. Both compute the same quantity over the same window.

The sample app exposes app_requests_total{code,path}, app_request_duration_seconds
(histogram), app_in_flight, app_queue_depth, app_capacity_workers,
app_service_time_seconds, app_ready, app_utilization (= in-flight / worker slots, read
at scrape time, hence averaged over the window) and prometheus_client's process metrics.
app_requests_total counts every route (health checks and scrapes too); the latency
histogram only served /work requests.

Two presets read the load balancer instead (``scope="backend"``): HAProxy's built-in
``prometheus-exporter`` (scraped as job ``haproxy``, harness/deploy/prometheus.py) counts
requests as they *arrive* at the backend, so the controller sees demand beyond what the
replicas can complete — where ``utilization`` saturates at 1.0. A backend-level value is
one number for the whole deployment; the source divides it by the number of ready replicas
and gives every ready replica that share, as the HPA does for an Object/External metric with
an ``AverageValue`` target (value / current pods). The ratio to the target is then the
total demand over target × ready replicas.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client.parser import text_string_to_metric_families

from harness.autoscale.spec import AutoscalerSpec, CustomMetric, ScrapeRule


@dataclass(frozen=True)
class Preset:
    promql: str  # '{window}' → e.g. "10s"
    scrape: ScrapeRule | None  # None: not on a replica's /metrics (needs Prometheus)
    doc: str
    scope: Literal["replica", "backend"] = "replica"  # backend: ÷ ready replicas


# HAProxy's exporter labels its backend series with proxy="<backend name>"
_LB = 'proxy="app"'


PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        "sum by (instance) (rate(process_cpu_seconds_total[{window}]))",
        ScrapeRule(kind="rate", metric="process_cpu_seconds_total"),
        "CPU cores used per replica (prometheus_client's process collector)"),
    "latency_p95_ms": Preset(
        "1000 * histogram_quantile(0.95, sum by (instance, le) "
        "(rate(app_request_duration_seconds_bucket[{window}])))",
        ScrapeRule(kind="quantile", metric="app_request_duration_seconds", quantile=0.95,
                   scale=1000.0),
        "95th percentile request latency per replica, ms (no traffic → missing)"),
    "lb_queue": Preset(
        f"sum by (instance) (avg_over_time(haproxy_backend_current_queue{{{_LB}}}[{{window}}])"
        f" + avg_over_time(haproxy_backend_current_sessions{{{_LB}}}[{{window}}]))",
        None,
        "requests waiting in HAProxy's backend queue plus sessions open to the replicas, "
        "per ready replica (backend-level, ÷ ready)", scope="backend"),
    "lb_rps": Preset(
        f"sum by (instance) (rate(haproxy_backend_http_requests_total{{{_LB}}}[{{window}}]))",
        None,
        "requests per second arriving at the load balancer's backend, per ready replica "
        "(backend-level, ÷ ready): demand, not completions", scope="backend"),
    "rps": Preset(
        # /work only: health checks and scrapes would add a few requests per second
        'sum by (instance) (rate(app_requests_total{path="/work"}[{window}]))',
        ScrapeRule(kind="rate", metric="app_requests_total", labels={"path": "/work"}),
        "/work requests per second per replica (served and rejected)"),
    "utilization": Preset(
        "max by (instance) (avg_over_time(app_utilization[{window}]))",
        ScrapeRule(kind="gauge", metric="app_utilization"),
        "busy worker slots / worker slots per replica (in-flight / capacity), 0..1"),
}


def backend_level(spec: AutoscalerSpec) -> bool:
    """True for a metric the LB reports once for all replicas (divided by ready ones)."""
    m = spec.metric
    return isinstance(m, str) and PRESETS[m].scope == "backend"


def scrape_options(spec: AutoscalerSpec | None) -> dict[str, float]:
    """The deployer options that make the trial's Prometheus scrape what this autoscaler
    reads at its ``scrape_interval_s``: HAProxy's exporter for a backend-level preset, the
    replicas for the others, both for a custom PromQL (it may read either). {}: the
    platform's own pace. Deployers take the ones they declare (harness/deploy/registry.py)."""
    if spec is None or spec.scrape_interval_s is None:
        return {}
    every = spec.scrape_interval_s
    if isinstance(spec.metric, CustomMetric):
        return {"scrape_interval_s": every, "lb_scrape_interval_s": every}
    if backend_level(spec):
        return {"lb_scrape_interval_s": every}
    return {"scrape_interval_s": every}


def window_text(window_s: float) -> str:
    ms = max(1, round(window_s * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def promql_for(spec: AutoscalerSpec) -> str:
    """The PromQL the Prometheus source runs for this autoscaler."""
    m = spec.metric
    template = m.promql if isinstance(m, CustomMetric) else PRESETS[m].promql
    return template.replace("{window}", window_text(spec.window_s))


def scrape_rule_for(spec: AutoscalerSpec) -> ScrapeRule | None:
    """How the direct-scrape source computes the metric; None for a custom metric without a
    ``scrape`` rule (it then needs a Prometheus server)."""
    m = spec.metric
    return m.scrape if isinstance(m, CustomMetric) else PRESETS[m].scrape


def fresh_only(promql: str, stale_after_s: float) -> str:
    """Keep only replicas whose last scrape succeeded and is recent. A failed scrape or a
    Prometheus that stopped scraping must read as a *missing* metric (as the HPA treats pods
    without one), not as the last value seen up to 5 minutes ago."""
    return (f"({promql}) and on (instance) (up == 1) "
            f"and on (instance) (time() - timestamp(up) < {stale_after_s:g})")


# --- direct scrape arithmetic -------------------------------------------------------------


def parse_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(sample name, labels, value) of every sample of a /metrics page (text format)."""
    return [(s.name, dict(s.labels), float(s.value))
            for fam in text_string_to_metric_families(text) for s in fam.samples]


def _matches(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def sum_samples(samples: Iterable[tuple[str, dict[str, str], float]], name: str,
                labels: Mapping[str, str]) -> float | None:
    """Sum of the matching series (a counter with code/path labels → its total); None when
    the page has no such series."""
    vals = [v for n, lab, v in samples if n == name and _matches(lab, labels)]
    return math.fsum(vals) if vals else None


def bucket_counts(samples: Iterable[tuple[str, dict[str, str], float]], histogram: str,
                  labels: Mapping[str, str]) -> dict[float, float] | None:
    """Cumulative count per upper bound of a histogram, summed over the other labels."""
    out: dict[float, float] = {}
    for n, lab, v in samples:
        if n == f"{histogram}_bucket" and "le" in lab and _matches(lab, labels):
            le = float(lab["le"])
            out[le] = out.get(le, 0.0) + v
    return out or None


def counter_increase(values: Sequence[float]) -> float:
    """Increase over a run of counter samples, counting a drop as a restart from 0 (as
    Prometheus' rate() does)."""
    inc = 0.0
    for prev, cur in itertools.pairwise(values):
        inc += cur - prev if cur >= prev else cur
    return inc


def bucket_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """Prometheus' histogram_quantile over cumulative bucket counts (promql/quantile.go
    ``bucketQuantile``): linear interpolation inside the bucket holding the rank; NaN when
    there are no observations or no +Inf bucket."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    bounds = sorted(buckets.items())
    if len(bounds) < 2 or not math.isinf(bounds[-1][0]):
        return math.nan
    # ensure monotonic counts (a scrape racing an observation can make them dip)
    fixed: list[tuple[float, float]] = []
    top = 0.0
    for le, c in bounds:
        top = max(top, c)
        fixed.append((le, top))
    observations = fixed[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i, (_, c) in enumerate(fixed[:-1]) if c >= rank), len(fixed) - 1)
    if b == len(fixed) - 1:
        return fixed[-2][0]
    if b == 0 and fixed[0][0] <= 0:
        return fixed[0][0]
    start, end, count = 0.0, fixed[b][0], fixed[b][1]
    if b > 0:
        start = fixed[b - 1][0]
        count -= fixed[b - 1][1]
        rank -= fixed[b - 1][1]
    return start + (end - start) * (rank / count)
