"""Metric sources: where the controller gets one value per ready replica.

    MetricSource (protocol)  sample(replicas) → {replica id: value | None}
    ├── PrometheusSource     one instant query against the run's Prometheus (HTTP API)
    └── ScrapeSource         every replica's /metrics, parsed with prometheus_client

A source never raises for an unreachable server, a failed query, a dead replica or a
stale series: the affected replicas come back as None ("missing"), which the policy
handles as the HPA handles pods without metrics, and ``last_error`` says why for the
decision log. Only 127.0.0.1 URLs are ever handed to these sources (docs/architecture.md,
"Network").

Deployers say where a replica's metrics are through two small extra
protocols
(docs/architecture.md, "Conventions": an extra ability gets its own protocol):
``PrometheusTargets.instance_of``
(the replica's ``instance`` label in Prometheus, "host:port" as Prometheus scrapes it) and
``ScrapeTargets.metrics_url_of`` (http://127.0.0.1:PORT/metrics, local platform).
"""

from __future__ import annotations

import http.client
import json
import math
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, runtime_checkable
from urllib.parse import urlencode, urlsplit

from harness.autoscale import metrics as m
from harness.autoscale.spec import AutoscalerSpec, ScrapeRule
from harness.clock import Clock
from harness.deploy.base import Replica

# one scrape's reading: a summed gauge/counter, or cumulative counts per histogram bucket
Reading = float | dict[float, float]


class MetricSource(Protocol):
    last_error: str | None  # why the last sample has gaps (None: no trouble)

    def sample(self, replicas: list[Replica]) -> dict[str, float | None]:
        """Replica id → metric value, None when it has none (every id of ``replicas``)."""
        ...


@runtime_checkable
class OwnMetricSource(Protocol):
    """A deployer that builds its own metric source (the simulator reads its model)."""

    def metric_source(self, spec: AutoscalerSpec) -> MetricSource | None: ...


@runtime_checkable
class PrometheusTargets(Protocol):
    def instance_of(self, replica: Replica) -> str:
        """The replica's ``instance`` label in the run's Prometheus (KeyError if gone)."""
        ...


@runtime_checkable
class ScrapeTargets(Protocol):
    def metrics_url_of(self, replica: Replica) -> str:
        """http://127.0.0.1:PORT/metrics of the replica (KeyError if gone)."""
        ...


class MetricFetchError(Exception):
    pass


def http_get(url: str, timeout_s: float) -> str:
    """GET with http.client: no proxy from the environment ever sits between the harness
    and a 127.0.0.1 endpoint, and nothing to share between scrape threads."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise MetricFetchError(f"not an http URL: {url!r}")
    conn_cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(u.hostname, u.port, timeout=timeout_s)
    try:
        conn.request("GET", (u.path or "/") + (f"?{u.query}" if u.query else ""),
                     headers={"Accept": "application/json, text/plain;q=0.9, */*;q=0.1"})
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        if resp.status != 200:
            raise MetricFetchError(f"HTTP {resp.status} from {url}: {body[:200].strip()}")
        return body
    except (OSError, http.client.HTTPException) as e:
        raise MetricFetchError(f"{type(e).__name__} from {url}: {e}") from None
    finally:
        conn.close()


def _lookup(fn: Callable[[Replica], str] | Mapping[str, str], r: Replica) -> str | None:
    try:
        return fn[r.id] if isinstance(fn, Mapping) else fn(r)
    except (KeyError, LookupError):
        return None  # the replica went away between listing and asking


class PrometheusSource:
    """One instant query per sample, returning one series per replica (``instance``)."""

    def __init__(self, base_url: str, promql: str,
                 instance_of: Callable[[Replica], str] | Mapping[str, str], *,
                 timeout_s: float = 2.0, stale_after_s: float = 10.0,
                 get: Callable[[str, float], str] = http_get, per_ready: bool = False
                 ) -> None:
        """``per_ready``: the query returns one backend-level series (the LB's); each ready
        replica gets its total ÷ the number of ready replicas (metrics.py, lb_* presets)."""
        self.per_ready = per_ready
        self.base_url = base_url.rstrip("/")
        self.promql = promql
        self.query = m.fresh_only(promql, stale_after_s)
        self.instance_of = instance_of
        self.timeout_s = timeout_s
        self._get = get
        self.last_error: str | None = None

    def query_vector(self) -> dict[str, float]:
        """instance → value of the query now (non-finite values dropped)."""
        params = urlencode({"query": self.query, "timeout": f"{self.timeout_s:g}s"})
        body = self._get(f"{self.base_url}/api/v1/query?{params}", self.timeout_s + 1.0)
        try:
            doc = json.loads(body)
        except json.JSONDecodeError as e:
            raise MetricFetchError(f"Prometheus answered non-JSON: {e}") from None
        if doc.get("status") != "success":
            raise MetricFetchError(f"Prometheus query failed: {doc.get('errorType')}: "
                                   f"{doc.get('error')}")
        data = doc.get("data") or {}
        if data.get("resultType") != "vector":
            raise MetricFetchError(f"the query must return an instant vector, got "
                                   f"{data.get('resultType')!r}")
        out: dict[str, float] = {}
        for series in data.get("result", []):
            inst = series.get("metric", {}).get("instance")
            try:
                value = float(series["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            if inst is None or not math.isfinite(value):
                continue  # NaN: e.g. a latency quantile over no requests → missing
            # two series for one replica (a custom query not aggregated by instance):
            # keep the larger, the safe side for a scale-up
            out[inst] = max(value, out.get(inst, value))
        return out

    def sample(self, replicas: list[Replica]) -> dict[str, float | None]:
        self.last_error = None
        if not replicas:
            return {}
        try:
            by_instance = self.query_vector()
        except MetricFetchError as e:
            self.last_error = str(e)
            return {r.id: None for r in replicas}
        if self.per_ready:
            if not by_instance:
                self.last_error = "no fresh series from the load balancer"
                return {r.id: None for r in replicas}
            share = math.fsum(by_instance.values()) / len(replicas)
            return {r.id: share for r in replicas}
        out: dict[str, float | None] = {}
        for r in replicas:
            inst = _lookup(self.instance_of, r)
            out[r.id] = by_instance.get(inst) if inst is not None else None
        gaps = [rid for rid, v in out.items() if v is None]
        if gaps:
            self.last_error = (f"no fresh series for {', '.join(gaps)} "
                               f"({len(by_instance)} series answered)")
        return out


class ScrapeSource:
    """Reads every ready replica's /metrics in parallel and computes the metric itself:
    a gauge averaged over the samples of the last ``window_s`` (avg_over_time), a counter's
    per-second rate, or a histogram quantile of the observations within the window. Rates
    need two samples: a replica's first sample is missing, as a fresh pod is for the HPA."""

    def __init__(self, url_of: Callable[[Replica], str] | Mapping[str, str], rule: ScrapeRule,
                 clock: Clock, *, window_s: float = 10.0, timeout_s: float = 1.0,
                 max_workers: int = 16, get: Callable[[str, float], str] = http_get) -> None:
        self.url_of = url_of
        self.rule = rule
        self.clock = clock
        self.window_s = window_s
        self.timeout_s = timeout_s
        self.max_workers = max_workers
        self._get = get
        self._history: dict[str, deque[tuple[float, Reading]]] = {}
        self.last_error: str | None = None

    def _fetch(self, r: Replica) -> tuple[str, float, Reading | None, str | None]:
        url = _lookup(self.url_of, r)
        if url is None:
            return r.id, self.clock.now(), None, f"{r.id}: no metrics URL"
        try:
            text = self._get(url, self.timeout_s)
            reading = self._reading(m.parse_samples(text))
            now = self.clock.now()
            if reading is None:
                return r.id, now, None, f"{r.id}: no {self.rule.metric} on its /metrics"
            return r.id, now, reading, None
        except MetricFetchError as e:
            return r.id, self.clock.now(), None, str(e)
        except ValueError as e:  # an unparsable page
            return r.id, self.clock.now(), None, f"{r.id}: bad /metrics page: {e}"

    def _reading(self, samples: list[tuple[str, dict[str, str], float]]) -> Reading | None:
        if self.rule.kind == "quantile":
            return m.bucket_counts(samples, self.rule.metric, self.rule.labels)
        return m.sum_samples(samples, self.rule.metric, self.rule.labels)

    def sample(self, replicas: list[Replica]) -> dict[str, float | None]:
        self.last_error = None
        if not replicas:
            self._history.clear()
            return {}
        workers = max(1, min(self.max_workers, len(replicas)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scrape") as pool:
            results = list(pool.map(self._fetch, replicas))
        out: dict[str, float | None] = {}
        errors: list[str] = []
        for rid, t, reading, err in results:
            if err is not None:
                errors.append(err)
            out[rid] = None if reading is None else self._value(rid, t, reading)
        for gone in set(self._history) - {r.id for r in replicas}:
            del self._history[gone]
        if errors:
            self.last_error = "; ".join(errors[:5]) + (" …" if len(errors) > 5 else "")
        return out

    def _value(self, rid: str, t: float, reading: Reading) -> float | None:
        hist = self._history.setdefault(rid, deque())
        hist.append((t, reading))
        # keep the window plus the newest sample at or before its start (a rate's baseline)
        start = t - self.window_s
        while len(hist) >= 2 and hist[1][0] <= start:
            hist.popleft()
        if self.rule.kind == "quantile":
            # quantile of the observations in the window: per-bucket increases
            if len(hist) < 2:
                return None
            series = [v for _, v in hist if isinstance(v, dict)]
            les = set().union(*(s.keys() for s in series))
            delta = {le: m.counter_increase([s.get(le, 0.0) for s in series]) for le in les}
            q = m.bucket_quantile(self.rule.quantile, delta)
            return q * self.rule.scale if math.isfinite(q) else None
        points = [(ts, v) for ts, v in hist if isinstance(v, float)]
        if self.rule.kind == "gauge":
            vals = [v for ts, v in points if ts > start or ts == t]
            return math.fsum(vals) / len(vals) * self.rule.scale
        if len(points) < 2 or points[-1][0] <= points[0][0]:
            return None
        dt = points[-1][0] - points[0][0]
        return m.counter_increase([v for _, v in points]) / dt * self.rule.scale
