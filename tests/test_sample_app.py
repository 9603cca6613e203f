"""The sample app under test: its pure parts table-tested, then the REAL app as a
subprocess on a free 127.0.0.1 port, showing the capacity model holds (throughput =
WORKERS / SERVICE_MS, queueing, 503 past the queue limit), readiness, metrics that match
the requests sent, HTTP/1.1 details, signals and crashes.

Figures measured on the way are printed (`pytest -s tests/test_sample_app.py`).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sample_app.config import Config, ConfigError, from_env
from sample_app.model import ServiceTime, Slots, is_ready
from sample_app.wire import HttpError, parse_head, response

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 20.0  # a busy 2-core machine can be slow to start an interpreter


# ---------- the real app as a subprocess ----------

@dataclass
class RunningApp:
    proc: subprocess.Popen[bytes]
    port: int

    def conn(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        c = self.conn()
        try:
            c.request(method, path)
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, keyed by (name, sorted labels)."""
        status, _, body = self.get("/metrics")
        assert status == 200
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(body.decode())
                for s in fam.samples}


@contextmanager
def running_app(**env: object) -> Iterator[RunningApp]:
    """Start `python -m sample_app` with PORT=0 and learn the bound port from its first
    log line (no race for a "free" port); always terminated afterwards."""
    full = {**os.environ, "HOST": "127.0.0.1", "PORT": "0", "REPLICA_ID": "test-1",
            **{k: str(v) for k, v in env.items()}}
    proc = subprocess.Popen([sys.executable, "-m", "sample_app"], env=full, cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        fd = proc.stderr.fileno()
        seen = b""
        deadline = time.monotonic() + START_TIMEOUT_S
        while b"\n" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break  # exited
                seen += chunk
        m = re.search(rb"listening on [^ ]+:(\d+)", seen)
        assert m, f"the app did not start: {seen.decode(errors='replace')!r}"
        yield RunningApp(proc, int(m.group(1)))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()


def timed_work(app: RunningApp, conn: http.client.HTTPConnection | None = None
               ) -> tuple[int, float, dict[str, object]]:
    """(status, seconds, JSON body) of one GET /work."""
    c = conn or app.conn()
    t0 = time.perf_counter()
    c.request("GET", "/work")
    r = c.getresponse()
    body = r.read()
    took = time.perf_counter() - t0
    if conn is None:
        c.close()
    return r.status, took, json.loads(body) if body else {}


def raw_exchange(port: int, chunks: list[bytes], *, pause_s: float = 0.0,
                 timeout: float = 5.0) -> bytes:
    """Send `chunks` over one socket (pausing between them), then read until the server
    closes or goes quiet for `timeout`."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        for chunk in chunks:
            s.sendall(chunk)
            if pause_s:
                time.sleep(pause_s)
        out = b""
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                out += data
        except TimeoutError:
            pass
        return out


def split_responses(data: bytes, head_only: frozenset[int] = frozenset()) -> list[
        tuple[int, dict[str, str], bytes]]:
    """Parse back-to-back HTTP responses; the i-th in `head_only` has no body (HEAD)."""
    out = []
    while data:
        end = data.index(b"\r\n\r\n")
        lines = data[:end].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        n = 0 if len(out) in head_only else int(headers.get("content-length", "0"))
        out.append((status, headers, data[end + 4:end + 4 + n]))
        data = data[end + 4 + n:]
    return out


# ---------- configuration (pure) ----------

def test_defaults_match_the_documented_ones() -> None:
    cfg = from_env({}, hostname=lambda: "box-7")
    assert cfg == Config(replica_id="box-7")
    assert (cfg.port, cfg.host, cfg.workers, cfg.service_ms, cfg.service_dist, cfg.sigma,
            cfg.cpu_ms, cfg.queue_limit, cfg.startup_s, cfg.seed, cfg.allow_crash) == \
        (8000, "0.0.0.0", 4, 50.0, "exponential", 0.5, 0.0, 50, 0.0, None, False)
    assert cfg.capacity_rps == 80.0  # 4 slots / 50 ms


@pytest.mark.parametrize(("env", "field", "expected"), [
    ({"WORKERS": "2", "SERVICE_MS": "100"}, "capacity_rps", 20.0),  # 2 / 0.1 s
    ({"SERVICE_MS": "0"}, "capacity_rps", float("inf")),
    ({"SERVICE_DIST": " LogNormal "}, "service_dist", "lognormal"),
    ({"ALLOW_CRASH": "true"}, "allow_crash", True),
    ({"ALLOW_CRASH": "0"}, "allow_crash", False),
    ({"SEED": "-3"}, "seed", -3),
    ({"PORT": "0"}, "port", 0),
    ({"CRASH_AFTER_S": "2.5"}, "crash_after_s", 2.5),
    ({"REPLICA_ID": "  r-2 "}, "replica_id", "r-2"),
    ({"WORKERS": ""}, "workers", 4),  # empty means default, as an unset variable
], ids=["capacity", "zero-service", "dist-case", "crash-on", "crash-off", "seed", "port-0",
        "crash-after", "replica-id", "empty-is-default"])
def test_config_values(env: dict[str, str], field: str, expected: object) -> None:
    assert getattr(from_env(env, hostname=lambda: "h"), field) == expected


@pytest.mark.parametrize(("env", "message"), [
    ({"WORKERS": "0"}, "WORKERS"),
    ({"WORKERS": "2.5"}, "integer"),
    ({"SERVICE_MS": "-1"}, "SERVICE_MS"),
    ({"SERVICE_MS": "nan"}, "SERVICE_MS"),
    ({"SERVICE_DIST": "pareto"}, "SERVICE_DIST"),
    ({"PORT": "70000"}, "PORT"),
    ({"QUEUE_LIMIT": "-1"}, "QUEUE_LIMIT"),
    ({"ALLOW_CRASH": "maybe"}, "ALLOW_CRASH"),
    ({"REPLICA_ID": "a\rX-Evil: 1"}, "REPLICA_ID"),  # would inject a response header
], ids=["no-workers", "fractional-workers", "negative-service", "nan", "dist", "port",
        "queue", "flag", "header-injection"])
def test_bad_config_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_env(env, hostname=lambda: "h")


def test_bad_config_exits_with_code_2() -> None:
    env = {**os.environ, "SERVICE_DIST": "pareto", "PORT": "0"}
    r = subprocess.run([sys.executable, "-m", "sample_app"], env=env, cwd=ROOT,
                       capture_output=True, timeout=30)
    assert r.returncode == 2 and b"SERVICE_DIST" in r.stderr


# ---------- the model (pure) ----------

@pytest.mark.parametrize(("dist", "cv_lo", "cv_hi"), [
    ("constant", 0.0, 0.0),
    ("exponential", 0.95, 1.05),  # an exponential's standard deviation is its mean
    ("lognormal", 0.49, 0.57),  # sqrt(exp(0.5²) − 1) = 0.533
])
def test_service_time_mean_is_preserved(dist: str, cv_lo: float, cv_hi: float) -> None:
    st = ServiceTime(dist, 0.05, sigma=0.5, rng=random.Random(7))
    xs = [st.sample() for _ in range(40_000)]
    mean = statistics.fmean(xs)
    assert mean == pytest.approx(0.05, rel=0.02)
    assert cv_lo <= statistics.pstdev(xs) / mean <= cv_hi
    assert min(xs) >= 0


def test_zero_service_time_is_zero_for_every_distribution() -> None:
    for dist in ("constant", "exponential", "lognormal"):
        assert ServiceTime(dist, 0.0).sample() == 0.0


def test_slots_fifo_queue_and_limit() -> None:
    async def scenario() -> list[str]:
        slots = Slots(workers=1, queue_limit=2)
        order: list[str] = []
        assert slots.try_acquire()
        assert not slots.try_acquire() and not slots.queue_full()

        async def waiter(name: str, place: asyncio.Future[None]) -> None:
            await slots.wait(place)
            order.append(name)
            slots.release()

        # places are taken synchronously: two requests parsed in the same tick fill the
        # queue before either task has run, so a third sees it full (→ 503)
        a = asyncio.create_task(waiter("a", slots.enqueue()))
        b = asyncio.create_task(waiter("b", slots.enqueue()))
        assert slots.queued == 2 and slots.queue_full()
        assert slots.utilization == 1.0
        await asyncio.sleep(0)
        slots.release()  # handed straight to "a": a newcomer cannot overtake
        assert not slots.try_acquire()
        await asyncio.gather(a, b)
        assert slots.in_use == 0 and slots.queued == 0
        return order

    assert asyncio.run(scenario()) == ["a", "b"]


def test_a_cancelled_waiter_leaves_the_queue_and_takes_no_slot() -> None:
    async def scenario() -> None:
        slots = Slots(workers=1, queue_limit=5)
        assert slots.try_acquire()
        gone = asyncio.create_task(slots.wait(slots.enqueue()))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        assert slots.queued == 0
        slots.release()
        assert slots.in_use == 0 and slots.try_acquire()

    asyncio.run(scenario())


@pytest.mark.parametrize(("now", "shutting_down", "ready"), [
    (0.0, False, False), (1.49, False, False), (1.5, False, True), (9.0, True, False)],
    ids=["at-start", "just-before", "after-startup", "shutting-down"])
def test_readiness(now: float, shutting_down: bool, ready: bool) -> None:
    assert is_ready(now, started_at=0.0, startup_s=1.5, shutting_down=shutting_down) is ready


# ---------- the wire format (pure) ----------

@pytest.mark.parametrize(("raw", "method", "path", "keep_alive", "length"), [
    (b"GET /work HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "/work", True, 0),
    (b"GET /work?x=1 HTTP/1.1\r\n\r\n", "GET", "/work", True, 0),
    (b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n", "GET", "/a", False, 0),
    (b"GET /a HTTP/1.0\r\n\r\n", "GET", "/a", False, 0),
    (b"GET /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", "GET", "/a", True, 0),
    (b"POST /work HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello", "POST", "/work", True, 5),
    (b"\r\nGET /a HTTP/1.1\n\n", "GET", "/a", True, 0),  # stray CRLF, bare LFs
    (b"GET http://h:1/work?q HTTP/1.1\r\n\r\n", "GET", "/work", True, 0),  # absolute form
], ids=["plain", "query", "close", "http10", "http10-keepalive", "body", "lf-only",
        "absolute"])
def test_parse_head(raw: bytes, method: str, path: str, keep_alive: bool, length: int
                    ) -> None:
    parsed = parse_head(bytearray(raw))
    assert parsed is not None
    req, head_len = parsed
    assert (req.method, req.path, req.keep_alive, req.content_length) == \
        (method, path, keep_alive, length)
    assert head_len + length == len(raw)


@pytest.mark.parametrize(("raw", "status"), [
    (b"GET /work\r\n\r\n", 400),
    (b"GET /work HTTP/2.0\r\n\r\n", 505),
    (b"GET /work HTTP/1.1\r\nbad header\r\n\r\n", 400),
    (b"GET /work HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET /work HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"POST /work HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"POST /work HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
    (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n", 431),  # incomplete, but already too big
], ids=["no-version", "http2", "header", "negative-length", "conflicting-length", "chunked",
        "huge-body", "huge-head"])
def test_parse_head_refuses(raw: bytes, status: int) -> None:
    with pytest.raises(HttpError) as e:
        parse_head(bytearray(raw))
    assert e.value.status == status


def test_incomplete_head_waits() -> None:
    assert parse_head(bytearray(b"GET /work HTTP/1.1\r\nHost: x\r\n")) is None


def test_response_is_one_buffer_with_length_and_close() -> None:
    data = response(200, b"hi", keep_alive=False, headers="X-Replica: r\r\n")
    head, body = data.split(b"\r\n\r\n", 1)
    assert body == b"hi" and b"Content-Length: 2" in head and b"Connection: close" in head
    assert response(200, b"hi", head_only=True).endswith(b"\r\n\r\n")


# ---------- the real app: the capacity model ----------

def test_one_replica_serves_workers_over_service_time() -> None:
    """WORKERS=2, SERVICE_MS=100 constant → 20 req/s, whatever the offered load."""
    with running_app(WORKERS=2, SERVICE_MS=100, SERVICE_DIST="constant") as app:
        # unqueued: one request at a time never waits for a slot
        c = app.conn()
        alone = [timed_work(app, c) for _ in range(8)]
        c.close()
        assert all(s == 200 for s, _, _ in alone)
        p50 = statistics.median(t for _, t, _ in alone)
        print(f"\nunqueued p50 = {p50 * 1000:.1f} ms")
        assert 0.095 <= p50 <= 0.16
        assert all(b["wait_ms"] < 5 for _, _, b in alone)

        # 8 closed-loop clients for ~3 s: 2 slots busy all the time, 6 requests queued
        done: list[tuple[float, float, float]] = []  # (finished at, latency, wait_ms)
        stop = time.monotonic() + 3.5
        lock = threading.Lock()

        def client() -> None:
            conn = app.conn()
            while time.monotonic() < stop:
                status, took, body = timed_work(app, conn)
                assert status == 200
                with lock:
                    done.append((time.monotonic(), took, float(body["wait_ms"])))
            conn.close()

        t0 = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=15)
        # count completions over a 3 s window after the queue has filled
        window = [d for d in done if t0 + 0.5 <= d[0] < t0 + 3.5]
        rps = len(window) / 3.0
        mean_latency = statistics.fmean(d[1] for d in window)
        print(f"8 clients: {rps:.1f} req/s, mean latency {mean_latency * 1000:.0f} ms")
        assert 17 <= rps <= 23
        # Little's law: 8 in the system / 20 per second = 0.4 s, mostly queueing
        assert 0.3 <= mean_latency <= 0.55
        assert statistics.median(d[2] for d in window) > 200


def test_past_the_queue_limit_the_excess_gets_503_at_once() -> None:
    with running_app(WORKERS=1, SERVICE_MS=500, SERVICE_DIST="constant", QUEUE_LIMIT=2) as app:
        conns = [app.conn() for _ in range(10)]
        for c in conns:  # connect first, so only the requests themselves race
            c.connect()
        gate = threading.Barrier(10)
        results: list[tuple[int, float, str]] = []
        lock = threading.Lock()

        def fire(c: http.client.HTTPConnection) -> None:
            gate.wait()
            t0 = time.perf_counter()
            c.request("GET", "/work")
            r = c.getresponse()
            r.read()
            with lock:
                results.append((r.status, time.perf_counter() - t0,
                                r.getheader("X-Replica") or ""))

        threads = [threading.Thread(target=fire, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=15)
        for c in conns:
            c.close()
        ok = sorted(t for s, t, _ in results if s == 200)
        rejected = sorted(t for s, t, _ in results if s == 503)
        print(f"\n200 after {[round(t, 3) for t in ok]} s; slowest 503 after "
              f"{max(rejected) * 1000:.1f} ms")
        # one in service + two queued; the other seven are turned away immediately
        assert len(ok) == 3 and len(rejected) == 7
        assert max(rejected) < 0.1
        for i, t in enumerate(ok):  # served one after another: 0.5, 1.0, 1.5 s
            assert 0.5 * (i + 1) - 0.02 <= t <= 0.5 * (i + 1) + 0.3
        assert {x for _, _, x in results} == {"test-1"}
        m = app.metrics()
        assert m[("app_requests_total", (("code", "503"), ("path", "/work")))] == 7
        assert m[("app_request_duration_seconds_count", ())] == 3  # 503s stay out of it


def test_readiness_follows_startup_delay() -> None:
    with running_app(STARTUP_S=1.5) as app:
        t0 = time.monotonic()
        assert app.get("/healthz")[0] == 200  # alive at once
        status, _, body = app.get("/readyz")
        if time.monotonic() - t0 < 1.2:  # (the start line came ≥ 1.5 s before readiness)
            assert status == 503 and body == b"starting\n"
            assert app.metrics()[("app_ready", ())] == 0
        time.sleep(max(0.0, 1.6 - (time.monotonic() - t0)))
        deadline = time.monotonic() + 5
        while app.get("/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.get("/readyz")[0] == 200
        assert app.metrics()[("app_ready", ())] == 1


def test_metrics_count_what_was_sent() -> None:
    with running_app(WORKERS=4, SERVICE_MS=5, SERVICE_DIST="constant") as app:
        c = app.conn()
        for _ in range(25):
            assert timed_work(app, c)[0] == 200
        for path, n in (("/nope", 3), ("/healthz", 2)):
            for _ in range(n):
                c.request("GET", path)
                c.getresponse().read()
        c.request("DELETE", "/work")
        r = c.getresponse()
        r.read()
        assert r.status == 405
        c.close()
        m = app.metrics()

        def req(code: str, path: str) -> float:
            return m.get(("app_requests_total", (("code", code), ("path", path))), 0.0)

        assert req("200", "/work") == 25
        assert req("404", "other") == 3
        assert req("200", "/healthz") == 2
        assert req("405", "/work") == 1
        assert m[("app_request_duration_seconds_count", ())] == 25
        mean = m[("app_request_duration_seconds_sum", ())] / 25
        assert 0.005 <= mean < 0.05
        assert m[("app_request_duration_seconds_bucket", (("le", "0.001"),))] == 0
        assert m[("app_request_duration_seconds_bucket", (("le", "+Inf"),))] == 25
        assert m[("app_capacity_workers", ())] == 4
        assert m[("app_service_time_seconds", ())] == 0.005
        assert m[("app_in_flight", ())] == 0 and m[("app_utilization", ())] == 0
        assert m[("app_queue_depth", ())] == 0 and m[("app_ready", ())] == 1
        assert m[("app_info", (("replica", "test-1"), ("service_dist", "constant")))] == 1
        assert ("process_cpu_seconds_total", ()) in m
        # the first scrape is counted once it is answered
        assert app.metrics()[("app_requests_total", (("code", "200"), ("path", "/metrics")))
                             ] == 1


def test_gauges_show_slots_and_queue_under_load() -> None:
    with running_app(WORKERS=2, SERVICE_MS=1500, SERVICE_DIST="constant") as app:
        threads = [threading.Thread(target=timed_work, args=(app,)) for _ in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 1.2
        m = app.metrics()
        while m[("app_queue_depth", ())] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
            m = app.metrics()
        assert m[("app_in_flight", ())] == 2
        assert m[("app_queue_depth", ())] == 1
        assert m[("app_utilization", ())] == 1.0
        for t in threads:
            t.join(timeout=10)


def test_exponential_service_times_have_the_configured_mean() -> None:
    with running_app(WORKERS=64, SERVICE_MS=20, SERVICE_DIST="exponential", SEED=11) as app:
        results: list[tuple[float, float]] = []  # (server-side service ms, client latency s)
        lock = threading.Lock()

        def client() -> None:
            c = app.conn()
            for _ in range(25):
                status, took, body = timed_work(app, c)
                assert status == 200
                with lock:
                    results.append((float(body["service_ms"]), took))
            c.close()

        threads = [threading.Thread(target=client) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert len(results) == 400
        service = [s for s, _ in results]
        mean_ms = statistics.fmean(service)
        short = sum(s < 10 for s in service) / len(service)
        latency_ms = statistics.fmean(t for _, t in results) * 1000
        print(f"\nexponential: mean service {mean_ms:.1f} ms, client mean "
              f"{latency_ms:.1f} ms, share < 10 ms {short:.2f}")
        assert 17 <= mean_ms <= 23  # 3 standard errors (20 / sqrt(400) = 1 ms)
        assert 0.3 <= short <= 0.48  # P(X < mean / 2) = 1 − e^−½ = 0.39; constant: 0
        assert 18 <= latency_ms <= 35  # the sleeps really happen (plus some overhead)


def test_cpu_burn_uses_real_cpu() -> None:
    with running_app(WORKERS=4, SERVICE_MS=0, CPU_MS=20) as app:
        before = app.metrics()[("process_cpu_seconds_total", ())]
        c = app.conn()
        took = [timed_work(app, c)[1] for _ in range(10)]
        c.close()
        used = app.metrics()[("process_cpu_seconds_total", ())] - before
        assert min(took) >= 0.019
        assert used >= 0.18  # 10 × 20 ms, minus the process clock's granularity


# ---------- the real app: HTTP/1.1 ----------

def test_http_keep_alive_pipelining_and_bodies() -> None:
    with running_app(WORKERS=4, SERVICE_MS=20, SERVICE_DIST="constant") as app:
        port = app.port
        # three pipelined requests in one packet, one with a body that must be skipped;
        # answers come in order even though the /work in the middle has to wait
        out = raw_exchange(port, [
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /work HTTP/1.1\r\nContent-Length: 11\r\n\r\nGET /nope\r\n"
            b"GET /readyz HTTP/1.1\r\nConnection: close\r\n\r\n"])
        got = split_responses(out)
        assert [s for s, _, _ in got] == [200, 200, 200]
        assert got[0][2] == b"ok\n" and got[2][2] == b"ready\n"
        assert got[1][1]["x-replica"] == "test-1"
        assert json.loads(got[1][2])["replica"] == "test-1"
        assert got[2][1]["connection"] == "close"  # and the server closed: recv saw EOF

        # a request dribbled in byte by byte
        req = b"GET /work HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        got = split_responses(raw_exchange(port, [bytes([b]) for b in req], pause_s=0.002))
        assert [s for s, _, _ in got] == [200]

        # HTTP/1.0 closes unless asked; HEAD has no body but says how long it would be
        out = raw_exchange(port, [b"HEAD /healthz HTTP/1.0\r\n\r\n"])
        (status, headers, body), = split_responses(out, head_only=frozenset({0}))
        assert status == 200 and headers["content-length"] == "3" and body == b""

        # Expect: 100-continue gets its interim answer, then the real one
        out = raw_exchange(port, [b"POST /work HTTP/1.1\r\nContent-Length: 4\r\n"
                                  b"Expect: 100-continue\r\nConnection: close\r\n\r\n"])
        assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        out = raw_exchange(port, [b"POST /work HTTP/1.1\r\nContent-Length: 4\r\n"
                                  b"Expect: 100-continue\r\nConnection: close\r\n\r\n", b"abcd"],
                           pause_s=0.05)
        assert [s for s, _, _ in split_responses(out[len(b"HTTP/1.1 100 Continue\r\n\r\n"):])
                ] == [200]

        # garbage: 400 and the connection is closed
        got = split_responses(raw_exchange(port, [b"HELLO\r\n\r\n"]))
        assert [(s, h["connection"]) for s, h, _ in got] == [(400, "close")]
        # a half-closed client still gets its answer
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /work HTTP/1.1\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        assert [st for st, _, _ in split_responses(data)] == [200]
        assert app.get("/healthz")[0] == 200  # and the app is fine after all that


def test_keep_alive_has_no_nagle_stall() -> None:
    """Header and body in one write + TCP_NODELAY: sequential keep-alive requests take
    well under the ~40 ms a delayed-ACK stall would add to each."""
    with running_app(WORKERS=8, SERVICE_MS=0) as app:
        c = app.conn()
        took = []
        for path in ("/healthz", "/work", "/metrics") * 20:
            t0 = time.perf_counter()
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            took.append(time.perf_counter() - t0)
            assert r.status == 200 and not r.will_close
        c.close()
        print(f"\nkeep-alive round trip: median {statistics.median(took) * 1000:.2f} ms")
        assert statistics.median(took) < 0.01


def test_app_is_not_the_bottleneck() -> None:
    """SERVICE_MS=0, WORKERS=64: requests per second from one asyncio keep-alive client
    (8 connections, one request at a time each). The client shares the 2 cores."""
    async def bench(port: int, conns: int, duration_s: float) -> float:
        req = b"GET /work HTTP/1.1\r\nHost: x\r\n\r\n"
        count = 0

        async def one(stop: float) -> None:
            nonlocal count
            r, w = await asyncio.open_connection("127.0.0.1", port)
            while time.monotonic() < stop:
                w.write(req)
                head = await r.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200")
                length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
                await r.readexactly(length)
                count += 1
            w.close()

        t0 = time.monotonic()
        await asyncio.gather(*(one(t0 + duration_s) for _ in range(conns)))
        return count / (time.monotonic() - t0)

    with running_app(WORKERS=64, SERVICE_MS=0) as app:
        rps = asyncio.run(bench(app.port, 8, 1.5))
        print(f"\n/work with SERVICE_MS=0: {rps:.0f} req/s")
        assert rps > 1000  # measured ~13 000 on an idle 2-core machine


# ---------- the real app: signals and crashes ----------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_promptly_after_finishing_short_requests(sig: signal.Signals) -> None:
    with running_app(WORKERS=2, SERVICE_MS=300, SERVICE_DIST="constant") as app:
        idle = app.conn()
        idle.request("GET", "/healthz")
        idle.getresponse().read()  # an idle keep-alive connection, closed at once
        result: list[tuple[int, bool]] = []

        def in_flight() -> None:
            c = app.conn()
            c.request("GET", "/work")
            r = c.getresponse()
            r.read()
            result.append((r.status, r.will_close))

        t = threading.Thread(target=in_flight)
        t.start()
        time.sleep(0.1)
        t0 = time.monotonic()
        app.proc.send_signal(sig)
        rc = app.proc.wait(timeout=10)
        took = time.monotonic() - t0
        t.join(timeout=5)
        print(f"\n{sig.name}: exited {rc} after {took * 1000:.0f} ms")
        assert rc == 0 and took < 1.0
        assert result == [(200, True)]  # finished within the grace, told to reconnect
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", app.port), timeout=2).close()


def test_sigterm_does_not_wait_for_long_requests() -> None:
    with running_app(WORKERS=1, SERVICE_MS=5000, SERVICE_DIST="constant") as app:
        outcome: list[str] = []

        def in_flight() -> None:
            try:
                outcome.append(f"answered {timed_work(app)[0]}")
            except (http.client.HTTPException, OSError) as e:
                outcome.append(f"dropped: {type(e).__name__}")

        t = threading.Thread(target=in_flight)
        t.start()
        time.sleep(0.1)
        t0 = time.monotonic()
        app.proc.send_signal(signal.SIGTERM)
        rc = app.proc.wait(timeout=10)
        took = time.monotonic() - t0
        t.join(timeout=5)
        print(f"\nSIGTERM with a 5 s request in flight: exited {rc} after "
              f"{took * 1000:.0f} ms; the request was {outcome}")
        assert rc == 0 and took < 1.0
        assert outcome and outcome[0].startswith("dropped")


def test_crash_endpoint_only_when_allowed() -> None:
    with running_app() as app:
        assert app.get("/admin/crash", method="POST")[0] == 404
        assert app.proc.poll() is None
    with running_app(ALLOW_CRASH=1) as app:
        assert app.get("/admin/crash")[0] == 405  # GET never crashes it
        try:
            app.get("/admin/crash", method="POST")
        except (http.client.HTTPException, OSError):
            pass  # the answer may be lost with the process
        assert app.proc.wait(timeout=10) == 1


def test_crash_after_seconds() -> None:
    with running_app(CRASH_AFTER_S=0.3) as app:
        assert app.proc.wait(timeout=10) == 1
