"""The app's Prometheus metrics, in a registry of its own (no module-level globals).

- `app_requests_total{code,path}` (counter): responses by status and route (`other` for
  unknown paths);
- `app_request_duration_seconds` (histogram): served (200) `/work` requests, arrival to
  response, queueing included;
- `app_in_flight`: requests holding a worker slot; `app_queue_depth`: requests waiting;
- `app_capacity_workers`: WORKERS; `app_service_time_seconds`: SERVICE_MS / 1000 (the
  configured mean, in seconds);
- `app_ready`: 1 while `/readyz` answers 200;
- `app_utilization`: in-flight / WORKERS, 0..1, what an autoscaler targets;
- `app_info{replica,service_dist}`: always 1;
- `process_*`: prometheus_client's process collector (CPU seconds, memory, fds).

Rejected (503) requests are counted but kept out of the latency histogram: they are fast
by design, and mixing them in would make an overloaded replica look quicker.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from sample_app.model import Slots

# 1 ms … 10 s, about three buckets per decade, denser where SLOs usually sit
DURATION_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2,
                    0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0)

ROUTES = ("/work", "/healthz", "/readyz", "/metrics", "/admin/crash")


class AppMetrics:
    """Owns the registry; gauges read the live state through callbacks at scrape time."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, *, slots: Slots, service_ms: float, ready: Callable[[], bool],
                 replica_id: str, service_dist: str,
                 registry: CollectorRegistry | None = None, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._requests = Counter("app_requests", "Responses by status code and route",
                                 ["code", "path"], registry=r)
        self._children: dict[tuple[int, str], Counter] = {}
        for code in (200, 503):  # so rate() sees these series from their first increment
            self._child(code, "/work")
        self.duration = Histogram("app_request_duration_seconds",
                                  "Latency of served /work requests (queueing included)",
                                  buckets=DURATION_BUCKETS, registry=r)
        Gauge("app_in_flight", "Requests holding a worker slot",
              registry=r).set_function(lambda: slots.in_use)
        Gauge("app_queue_depth", "Requests waiting for a worker slot",
              registry=r).set_function(lambda: slots.queued)
        Gauge("app_capacity_workers", "Worker slots (WORKERS)",
              registry=r).set(slots.workers)
        # base unit (Prometheus convention): seconds, though SERVICE_MS is configured in ms
        Gauge("app_service_time_seconds", "Configured mean service time (SERVICE_MS / 1000)",
              registry=r).set(service_ms / 1000.0)
        Gauge("app_ready", "1 when /readyz answers 200",
              registry=r).set_function(lambda: 1.0 if ready() else 0.0)
        Gauge("app_utilization", "Busy worker slots / worker slots",
              registry=r).set_function(lambda: slots.utilization)
        Gauge("app_info", "Replica identity", ["replica", "service_dist"],
              registry=r).labels(replica_id, service_dist).set(1)
        if process:
            ProcessCollector(registry=r)

    def _child(self, code: int, path: str) -> Counter:
        key = (code, path)
        child = self._children.get(key)
        if child is None:
            child = self._requests.labels(str(code), path if path in ROUTES else "other")
            self._children[key] = child
        return child

    def count(self, code: int, path: str) -> None:
        # unknown paths share one label value, so a scanner cannot blow up cardinality
        self._child(code, path if path in ROUTES else "other").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
