"""Metric sources: the pure arithmetic by hand, then against REAL processes — sample-app
replicas (`python -m sample_app`) scraped by a REAL Prometheus server (/usr/bin/prometheus)
on 127.0.0.1, and the same replicas read directly by ScrapeSource."""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest

from harness.autoscale import metrics as m
from harness.autoscale.source import MetricFetchError, PrometheusSource, ScrapeSource
from harness.autoscale.spec import AutoscalerSpec, MetricPreset, ScrapeRule
from harness.clock import FakeClock, RealClock
from harness.deploy.base import Replica, ReplicaState
from tests.waiting import eventually

# --- pure arithmetic ------------------------------------------------------------------------


@pytest.mark.parametrize(("q", "buckets", "expected"), [
    (0.5, {0.1: 0, 0.2: 10, math.inf: 10}, 0.15),  # rank 5 of 10 in (0.1, 0.2]: halfway
    (0.95, {0.1: 50, 0.2: 90, 0.4: 100, math.inf: 100}, 0.3),  # rank 95: 5/10 of (0.2, 0.4]
    (0.9, {0.1: 90, math.inf: 100}, 0.1),  # rank 90 in the first bucket: 0 + 0.1 × 90/90
    (0.99, {0.1: 50, 0.2: 90, math.inf: 100}, 0.2),  # in +Inf: the highest finite bound
    (0.5, {0.1: 0, math.inf: 0}, math.nan),  # no observations
    (0.5, {0.1: 5, 0.2: 10}, math.nan),  # no +Inf bucket
    (0.5, {0.1: 6, 0.2: 5, math.inf: 10}, 0.1 * 5 / 6),  # 0.2 evened out to 6; rank 5 ≤ 6
], ids=["mid", "p95", "first-bucket", "inf-bucket", "empty", "no-inf", "non-monotonic"])
def test_bucket_quantile(q: float, buckets: dict[float, float], expected: float) -> None:
    got = m.bucket_quantile(q, buckets)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected)


@pytest.mark.parametrize(("values", "expected"), [
    ([10, 12, 15], 5),
    ([10, 12, 3, 5], 7),  # restart after 12: 2 + 3 (from 0) + 2
    ([7], 0),
], ids=["plain", "reset", "single"])
def test_counter_increase(values: list[float], expected: float) -> None:
    assert m.counter_increase(values) == expected


def test_presets_and_windows() -> None:
    spec = AutoscalerSpec(target=5, max_replicas=4, metric="rps", window_s=10)
    assert m.promql_for(spec) == \
        'sum by (instance) (rate(app_requests_total{path="/work"}[10s]))'
    assert m.window_text(2.5) == "2500ms"
    custom = AutoscalerSpec(target=5, max_replicas=4,
                            metric={"promql": "max by (instance) (app_queue_depth)"})
    assert m.scrape_rule_for(custom) is None
    assert sorted(m.PRESETS) == list(get_args(MetricPreset))
    q = m.fresh_only("x", 10)
    assert q == "(x) and on (instance) (up == 1) and on (instance) (time() - timestamp(up) < 10)"


PAGE = """# HELP app_utilization busy slots
# TYPE app_utilization gauge
app_utilization {util}
# TYPE app_requests_total counter
app_requests_total{{code="200",path="/work"}} {ok}
app_requests_total{{code="503",path="/work"}} {failed}
app_requests_total{{code="200",path="/healthz"}} {health}
# TYPE app_request_duration_seconds histogram
app_request_duration_seconds_bucket{{le="0.1"}} {b1}
app_request_duration_seconds_bucket{{le="0.2"}} {b2}
app_request_duration_seconds_bucket{{le="+Inf"}} {b2}
app_request_duration_seconds_count {b2}
app_request_duration_seconds_sum 1.0
"""


class Pages:
    """A fake `get` serving /metrics pages from a dict port → page (or an exception)."""

    def __init__(self) -> None:
        self.pages: dict[str, str | Exception] = {}

    def set(self, rid: str, **kw: float) -> None:
        self.pages[rid] = PAGE.format(**({"util": 0, "ok": 0, "failed": 0, "b1": 0, "b2": 0,
                                          "health": 0} | kw))

    def get(self, url: str, timeout_s: float) -> str:
        page = self.pages[url.split("/")[2]]
        if isinstance(page, Exception):
            raise page
        return page


def _reps(*ids: str) -> list[Replica]:
    return [Replica(id=i, name=i, state=ReplicaState.READY) for i in ids]


def _scrape(rule: ScrapeRule, pages: Pages, clock: FakeClock, window_s: float = 10
            ) -> ScrapeSource:
    return ScrapeSource(lambda r: f"http://{r.id}/metrics", rule, clock, window_s=window_s,
                        get=pages.get)


def test_scrape_rate_needs_two_samples_and_survives_a_restart() -> None:
    clock, pages = FakeClock(), Pages()
    src = _scrape(m.PRESETS["rps"].scrape, pages, clock)
    pages.set("a", ok=100, failed=10, health=50)
    assert src.sample(_reps("a")) == {"a": None}  # first sample: no rate yet
    clock.advance(2)
    pages.set("a", ok=110, failed=20, health=60)  # +20 /work in 2 s, both codes; not /healthz
    assert src.sample(_reps("a")) == {"a": pytest.approx(10.0)}
    clock.advance(2)
    pages.set("a", ok=4, failed=0)  # the replica restarted: counted from 0
    assert src.sample(_reps("a")) == {"a": pytest.approx((20 + 4) / 4)}


def test_scrape_rate_uses_the_window() -> None:
    clock, pages = FakeClock(), Pages()
    src = _scrape(ScrapeRule(kind="rate", metric="app_requests_total"), pages, clock,
                  window_s=4)
    for i, total in enumerate([0, 10, 20, 60, 100]):  # every 2 s
        if i:
            clock.advance(2)
        pages.set("a", ok=total)
        got = src.sample(_reps("a"))["a"]
    # window 4 s at t=8: samples at t=4 (baseline), 6, 8 → (100 − 20) / 4 s
    assert got == pytest.approx(20.0)


def test_scrape_gauge_is_averaged_over_the_window() -> None:
    clock, pages = FakeClock(), Pages()
    src = _scrape(ScrapeRule(kind="gauge", metric="app_utilization"), pages, clock, window_s=5)
    for util in (1.0, 0.5, 0.0, 0.25):  # every 2 s: t=0, 2, 4, 6
        pages.set("a", util=util)
        got = src.sample(_reps("a"))["a"]
        clock.advance(2)
    assert got == pytest.approx((0.5 + 0.0 + 0.25) / 3)  # t=2, 4, 6 are within 5 s of t=6


def test_scrape_quantile_of_the_observations_in_the_window() -> None:
    clock, pages = FakeClock(), Pages()
    rule = ScrapeRule(kind="quantile", metric="app_request_duration_seconds", scale=1000)
    src = _scrape(rule, pages, clock)
    pages.set("a", b1=100, b2=100)  # 100 old fast requests
    assert src.sample(_reps("a")) == {"a": None}
    clock.advance(2)
    pages.set("a", b1=100, b2=110)  # then 10 new ones in (0.1, 0.2]
    # p95 of the 10 new: rank 9.5 of 10 in (0.1, 0.2] → 100 + 100 × 0.95 ms
    assert src.sample(_reps("a"))["a"] == pytest.approx(195.0)
    clock.advance(2)
    assert src.sample(_reps("a")) == {"a": pytest.approx(195.0)}  # same window, no new ones
    clock.advance(20)
    assert src.sample(_reps("a")) == {"a": None}  # nothing observed in the window: missing


def test_scrape_errors_read_as_missing() -> None:
    clock, pages = FakeClock(), Pages()
    src = _scrape(ScrapeRule(kind="gauge", metric="app_utilization"), pages, clock)
    pages.set("a", util=0.5)
    pages.pages["b"] = MetricFetchError("ConnectionRefusedError from http://b/metrics")
    pages.pages["c"] = "garbage { not prometheus"
    pages.pages["d"] = "# nothing here\n"
    got = src.sample(_reps("a", "b", "c", "d"))
    assert got == {"a": 0.5, "b": None, "c": None, "d": None}
    assert src.last_error is not None
    assert "ConnectionRefusedError" in src.last_error and "d: no app_utilization" in src.last_error
    src.sample(_reps("a"))
    assert set(src._history) == {"a"}  # gone replicas are forgotten


def _prom_answer(result: list[dict[str, Any]], status: str = "success",
                 rtype: str = "vector") -> str:
    return json.dumps({"status": status, "errorType": "bad_data", "error": "parse error",
                       "data": {"resultType": rtype, "result": result}})


def test_prometheus_source_maps_instances_and_drops_nan() -> None:
    answer = _prom_answer([
        {"metric": {"instance": "127.0.0.1:8001"}, "value": [1.0, "0.75"]},
        {"metric": {"instance": "127.0.0.1:8002"}, "value": [1.0, "NaN"]},
        {"metric": {"instance": "127.0.0.1:8004"}, "value": [1.0, "0.2"]},
        {"metric": {"instance": "127.0.0.1:8004"}, "value": [1.0, "0.4"]},  # duplicate: max
    ])
    seen: list[str] = []

    def get(url: str, timeout_s: float) -> str:
        seen.append(url)
        return answer

    def instance_of(r: Replica) -> str:
        if r.id == "gone":
            raise KeyError(r.id)
        return f"127.0.0.1:800{r.id[1:]}"

    src = PrometheusSource("http://127.0.0.1:9090/", "app_utilization", instance_of, get=get)
    got = src.sample(_reps("r1", "r2", "r3", "r4", "gone"))
    assert got == {"r1": 0.75, "r2": None, "r3": None, "r4": 0.4, "gone": None}
    assert src.last_error == "no fresh series for r2, r3, gone (2 series answered)"
    assert seen[0].startswith("http://127.0.0.1:9090/api/v1/query?query=")


@pytest.mark.parametrize("answer", [
    _prom_answer([], status="error"),
    _prom_answer([], rtype="matrix"),
    "<html>proxy error</html>",
], ids=["error-status", "not-a-vector", "not-json"])
def test_prometheus_source_bad_answers_read_as_missing(answer: str) -> None:
    src = PrometheusSource("http://127.0.0.1:9", "x", {"r1": "i1"}, get=lambda u, t: answer)
    assert src.sample(_reps("r1")) == {"r1": None}
    assert src.last_error


# --- real processes -------------------------------------------------------------------------

PROMETHEUS = shutil.which("prometheus") or ("/usr/bin/prometheus"
                                            if os.path.exists("/usr/bin/prometheus") else None)
HAS_APP = importlib.util.find_spec("sample_app") is not None and \
    importlib.util.find_spec("sample_app.__main__") is not None
APP_ENV = {"WORKERS": "2", "SERVICE_MS": "200", "SERVICE_DIST": "constant",
           "QUEUE_LIMIT": "50", "STARTUP_S": "0"}
real = pytest.mark.skipif(not HAS_APP, reason="sample_app (python -m sample_app) not built yet")
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None, reason="no prometheus binary")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(port: int, path: str, timeout_s: float = 1.0) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200
    except OSError:
        return False
    finally:
        conn.close()


class App:
    def __init__(self, tmp: Path, name: str) -> None:
        self.port = free_port()
        self.name = name
        env = os.environ | APP_ENV | {"PORT": str(self.port), "HOST": "127.0.0.1",
                                      "REPLICA_ID": name}
        self.log = (tmp / f"{name}.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "sample_app"], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        eventually(lambda: self.proc.poll() is not None or http_ok(self.port, "/readyz"),
                   timeout_s=30)
        assert self.proc.poll() is None, (tmp / f"{name}.log").read_text()

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def replica(self) -> Replica:
        return Replica(id=self.name, name=self.name, state=ReplicaState.READY)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log.close()


class Load:
    """``clients`` threads sending GET /work back to back: bounded in time and count."""

    def __init__(self, port: int, clients: int, max_s: float = 120, max_requests: int = 5000):
        self.port, self.stop = port, threading.Event()
        self.sent = 0
        self.deadline = time.monotonic() + max_s
        self.max_requests = max_requests
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while (not self.stop.is_set() and time.monotonic() < self.deadline
               and self.sent < self.max_requests):
            self.sent += 1
            http_ok(self.port, "/work", timeout_s=5)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)


class Prometheus:
    def __init__(self, tmp: Path) -> None:
        assert PROMETHEUS is not None
        self.port = free_port()
        self.targets = tmp / "targets.json"
        self.set_targets([])
        cfg = tmp / "prometheus.yml"
        cfg.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 800ms, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: app\n"
            f"    file_sd_configs: [{{files: ['{self.targets}'], refresh_interval: 1s}}]\n")
        self.log = (tmp / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        eventually(lambda: self.proc.poll() is not None or http_ok(self.port, "/-/ready"), 60)
        assert self.proc.poll() is None, (tmp / "prometheus.log").read_text()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_targets(self, instances: list[str]) -> None:
        tmp = self.targets.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": instances}]))
        os.replace(tmp, self.targets)

    def up(self) -> dict[str, float]:
        src = PrometheusSource(self.url, "up", {})
        return src.query_vector() if http_ok(self.port, "/-/ready") else {}

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[App, App]]:
    if not HAS_APP:
        pytest.skip("sample_app (python -m sample_app) not built yet")
    tmp = tmp_path_factory.mktemp("apps")
    started: list[App] = []
    try:
        started.append(App(tmp, "busy"))
        started.append(App(tmp, "idle"))
        yield started[0], started[1]
    finally:
        for a in started:
            a.kill()


@pytest.fixture(scope="module")
def loaded(apps: tuple[App, App]) -> Iterator[tuple[App, App]]:
    """2 clients back to back on `busy` (2 workers × 200 ms): utilization ≈ 1, ≈ 10 req/s."""
    load = Load(apps[0].port, clients=2)
    try:
        yield apps
    finally:
        load.close()


@pytest.fixture(scope="module")
def prometheus(loaded: tuple[App, App], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Prometheus]:
    if PROMETHEUS is None:
        pytest.skip("no prometheus binary")
    prom = Prometheus(tmp_path_factory.mktemp("prom"))
    try:
        prom.set_targets([a.instance for a in loaded])
        eventually(lambda: sum(prom.up().values()) == 2, timeout_s=60)
        yield prom
    finally:
        prom.close()


def _source(prom: Prometheus, preset: str, apps: tuple[App, ...], window_s: float = 5
            ) -> PrometheusSource:
    spec = AutoscalerSpec(target=1, max_replicas=4, metric=preset, window_s=window_s)  # type: ignore[arg-type]
    return PrometheusSource(prom.url, m.promql_for(spec), {a.name: a.instance for a in apps})


@real
@needs_prometheus
def test_prometheus_utilization_per_replica(prometheus: Prometheus,
                                            loaded: tuple[App, App]) -> None:
    busy, idle = loaded
    src = _source(prometheus, "utilization", loaded)

    def settled() -> dict[str, float | None] | None:
        v = src.sample([busy.replica, idle.replica])
        b, i = v[busy.name], v[idle.name]
        return v if b is not None and i is not None and b > 0.6 and i < 0.2 else None

    got = eventually(settled, timeout_s=40)
    print(f"\nFIGURE prometheus utilization: busy={got[busy.name]:.3f} idle={got[idle.name]:.3f}")
    assert src.last_error is None


@real
@needs_prometheus
def test_prometheus_rps_and_latency(prometheus: Prometheus, loaded: tuple[App, App]) -> None:
    busy, idle = loaded
    rps = _source(prometheus, "rps", loaded)
    p95 = _source(prometheus, "latency_p95_ms", loaded)
    cpu = _source(prometheus, "cpu", loaded)

    def busy_rps() -> float | None:
        v = rps.sample([busy.replica])[busy.name]
        return v if v is not None and 5 < v < 15 else None  # 2 slots / 0.2 s = 10 req/s

    got_rps = eventually(busy_rps, timeout_s=40)
    lat = eventually(lambda: p95.sample([busy.replica])[busy.name], timeout_s=20)
    assert 150 <= lat <= 450  # 200 ms constant service time, bucket interpolation
    c = cpu.sample([busy.replica, idle.replica])
    assert all(v is not None and 0 <= v < 4 for v in c.values())
    print(f"\nFIGURE prometheus busy replica: {got_rps:.2f} req/s, p95 {lat:.0f} ms, "
          f"cpu {c[busy.name]:.3f} cores")


@real
@needs_prometheus
def test_prometheus_stale_replica_reads_missing(prometheus: Prometheus,
                                                loaded: tuple[App, App],
                                                tmp_path: Path) -> None:
    extra = App(tmp_path, "doomed")
    try:
        prometheus.set_targets([a.instance for a in (*loaded, extra)])
        src = _source(prometheus, "utilization", (*loaded, extra))
        reps = [loaded[0].replica, extra.replica]
        eventually(lambda: src.sample(reps)[extra.name] is not None, timeout_s=30)
        extra.kill()  # a crash: its last sample stays in the TSDB, but its scrapes fail
        t = time.monotonic()
        got = eventually(lambda: (v := src.sample(reps))[extra.name] is None and v, 30, 0.25)
        print(f"\nFIGURE stale replica read as missing {time.monotonic() - t:.1f} s after "
              "SIGKILL")
        assert got[loaded[0].name] is not None  # the others still read
        assert src.last_error is not None and extra.name in src.last_error
    finally:
        if extra.proc.poll() is None:
            extra.kill()
        prometheus.set_targets([a.instance for a in loaded])


@real
def test_prometheus_down_or_bad_query_reads_missing(apps: tuple[App, App]) -> None:
    nobody = PrometheusSource(f"http://127.0.0.1:{free_port()}", "app_utilization",
                              {apps[0].name: apps[0].instance}, timeout_s=0.5)
    assert nobody.sample([apps[0].replica]) == {apps[0].name: None}
    assert nobody.last_error is not None and "Connection" in nobody.last_error


@needs_prometheus
def test_prometheus_rejects_bad_promql_without_raising(tmp_path: Path) -> None:
    prom = Prometheus(tmp_path)
    try:
        src = PrometheusSource(prom.url, "sum by (instance) (rate(x[5s]", {"r1": "i1"})
        assert src.sample(_reps("r1")) == {"r1": None}
        assert src.last_error is not None and "bad_data" in src.last_error
    finally:
        prom.close()


@real
def test_scrape_source_against_real_replicas(loaded: tuple[App, App]) -> None:
    busy, idle = loaded
    urls = {a.name: f"http://{a.instance}/metrics" for a in loaded}
    clock = RealClock()
    rules = {name: p.scrape for name, p in m.PRESETS.items() if p.scrape is not None}
    sources = {name: ScrapeSource(urls, rule, clock, window_s=5) for name, rule in rules.items()}
    reps = [busy.replica, idle.replica]
    for src in sources.values():
        src.sample(reps)  # baseline for rates and quantiles
    time.sleep(2.0)
    got = {name: src.sample(reps) for name, src in sources.items()}
    assert got["rps"][busy.name] is not None and 5 < got["rps"][busy.name] < 15
    # a gauge read at one instant: 2 back-to-back clients on 2 slots read 1.0, or 0.5 at the
    # instant one of them is between requests (each opens a new connection)
    assert got["utilization"][busy.name] is not None and got["utilization"][busy.name] >= 0.5
    assert got["utilization"][idle.name] is not None and got["utilization"][idle.name] < 0.2
    lat = got["latency_p95_ms"][busy.name]
    assert lat is not None and 150 <= lat <= 450
    assert got["cpu"][busy.name] is not None
    print(f"\nFIGURE scrape busy replica: {got['rps'][busy.name]:.2f} req/s, "
          f"util {got['utilization'][busy.name]:.2f}, p95 {lat:.0f} ms")


@real
def test_scrape_source_dead_replica_reads_missing(apps: tuple[App, App], tmp_path: Path) -> None:
    extra = App(tmp_path, "short-lived")
    urls = {a.name: f"http://{a.instance}/metrics" for a in (apps[1], extra)}
    src = ScrapeSource(urls, m.PRESETS["utilization"].scrape, RealClock(), timeout_s=1.0)
    reps = [apps[1].replica, extra.replica]
    assert all(v is not None for v in src.sample(reps).values())
    extra.kill()
    got = src.sample(reps)
    assert got[extra.name] is None and got[apps[1].name] is not None
    assert src.last_error is not None and "Connection" in src.last_error
