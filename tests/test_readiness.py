"""The readiness prober (harness/platforms/docker/probe_agent.py) as the real process it is in a
trial, against real sockets on 127.0.0.1: a server that answers 503 and then 200, a port
nobody listens on, a socket that accepts and never answers. Plus the host side
(StatusReader) and the cgroup CPU reader."""

from __future__ import annotations

import contextlib
import http.server
import itertools
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.clock import FakeClock
from harness.platforms.docker.cgroups import ContainerCpu, container_cpu_ns
from harness.platforms.docker.readiness import AGENT, Probe, StatusReader, first_ready_at

DEADLINE_S = 30.0


class _Handler(http.server.BaseHTTPRequestHandler):
    unready_answers = 4  # the first N requests get 503, then 200

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:  # type: ignore[attr-defined]
            srv.count += 1  # type: ignore[attr-defined]
            n = srv.count  # type: ignore[attr-defined]
        code = 503 if n <= self.unready_answers or self.path != "/readyz" else 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def http_server() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.lock = threading.Lock()  # type: ignore[attr-defined]
    srv.count = 0  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


@contextlib.contextmanager
def prober(port: int, out: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    # "127.0.0.1" resolves to itself: the same code path as Docker's DNS name
    p = subprocess.Popen([sys.executable, "-I", "-S", str(AGENT), "--name", "127.0.0.1",
                          "--port", str(port), "--path", "/readyz", "--out", str(out),
                          *extra], stderr=subprocess.PIPE)
    try:
        yield p
    finally:
        p.terminate()
        p.wait(timeout=10)


def wait_for(reader: StatusReader, addr: str, pred: object) -> list[Probe]:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        probes = list(reader.read().probes.get(addr, ()))
        if pred(probes):  # type: ignore[operator]
            return probes
        time.sleep(0.1)
    raise AssertionError(f"timed out; probes so far: {reader.read().probes}")


def test_unready_then_ready_fast_while_failing_on_the_grid_once_ready(tmp_path: Path) -> None:
    out = tmp_path / "status.json"
    reader = StatusReader(out)
    with http_server() as port, prober(port, out):
        addr = f"127.0.0.1:{port}"
        probes = wait_for(reader, addr, lambda ps: sum(p.ok for p in ps) >= 4)
    outcomes = [p.outcome for p in probes]
    assert outcomes[:4] == ["http 503"] * 4 and not any(p.ok for p in probes[:4])
    assert set(outcomes[4:]) == {"http 200"} and all(p.ok for p in probes[4:])
    # failing: again FAST_S (0.25 s) after the previous start, never sooner
    for a, b in itertools.pairwise(probes[:5]):
        assert b.start - a.start >= 0.25 - 0.01
    # ready: one probe per whole second of the shared grid, after the previous ended
    oks = [p for p in probes if p.ok]
    for a, b in itertools.pairwise(oks):
        assert math.floor(b.start) > math.floor(a.end)
    assert first_ready_at(probes, probes[0].start) == probes[4].end
    assert first_ready_at(probes, probes[4].start + 1e-6) == oks[1].end


def test_refused(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nobody listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "status.json"
    reader = StatusReader(out)
    with prober(port, out):
        probes = wait_for(reader, f"127.0.0.1:{port}", lambda ps: len(ps) >= 3)
    assert {p.outcome for p in probes} == {"refused"} and not any(p.ok for p in probes)


def test_frozen_socket_times_out_and_does_not_hold_up_the_prober(tmp_path: Path) -> None:
    # listens (the kernel completes the handshake) but never reads or answers: a paused
    # container looks like this from outside
    frozen = socket.socket()
    frozen.bind(("127.0.0.1", 0))
    frozen.listen(64)
    port = frozen.getsockname()[1]
    out = tmp_path / "status.json"
    reader = StatusReader(out)
    try:
        with prober(port, out, "--timeout", "0.5"):
            probes = wait_for(reader, f"127.0.0.1:{port}", lambda ps: len(ps) >= 2)
    finally:
        frozen.close()
    assert {p.outcome for p in probes} == {"timeout"}
    assert all(p.end - p.start >= 0.45 for p in probes)


def test_resolve_error_is_reported(tmp_path: Path) -> None:
    out = tmp_path / "status.json"
    p = subprocess.Popen([sys.executable, "-I", "-S", str(AGENT), "--name",
                          "no-such-host.invalid", "--port", "1", "--out", str(out)])
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        doc = json.loads(out.read_text())
    finally:
        p.terminate()
        p.wait(timeout=10)
    assert doc["addresses"] == {} and "no-such-host.invalid" in doc["resolve_error"]


def test_status_reader_parses_only_changed_files(tmp_path: Path) -> None:
    out = tmp_path / "status.json"
    reader = StatusReader(out)
    assert reader.read().probes == {}  # no file yet
    doc = {"updated": 1.0, "resolve_error": None, "addresses": {
        "10.0.0.2:8000": [{"start": 1.0, "end": 1.1, "ok": False, "outcome": "refused"}]}}
    out.write_text(json.dumps(doc))
    first = reader.read()
    assert first.probes["10.0.0.2:8000"] == [Probe(1.0, 1.1, False, "refused")]
    assert reader.read() is first  # unchanged on disk: not parsed again
    doc["addresses"]["10.0.0.2:8000"].append(
        {"start": 2.0, "end": 2.1, "ok": True, "outcome": "http 200"})
    tmp = tmp_path / ".status.json.tmp"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, out)  # as the prober writes: a new inode
    assert len(reader.read().probes["10.0.0.2:8000"]) == 2
    out.write_text("{half a fi")  # never happens with os.replace, but must not break us
    assert len(reader.read().probes["10.0.0.2:8000"]) == 2


@pytest.mark.parametrize("layout", ["v1-cgroupfs", "v1-systemd", "v2-systemd", "v2-cgroupfs",
                                    "v1-kubepods", "v2-kubepods-guaranteed"])
def test_cgroup_cpu_reader(tmp_path: Path, layout: str) -> None:
    cid = "ab" * 32
    paths = {
        "v1-cgroupfs": (tmp_path / "cpuacct" / "docker" / cid / "cpuacct.usage", "{ns}\n"),
        "v1-systemd": (tmp_path / "cpuacct" / "system.slice" / f"docker-{cid}.scope"
                       / "cpuacct.usage", "{ns}\n"),
        "v2-systemd": (tmp_path / "system.slice" / f"docker-{cid}.scope" / "cpu.stat",
                       "usage_usec {us}\nuser_usec 1\n"),
        "v2-cgroupfs": (tmp_path / "docker" / cid / "cpu.stat", "usage_usec {us}\n"),
        # a Kubernetes pod's container (dockershim, kubelet cgroupfs driver)
        "v1-kubepods": (tmp_path / "cpuacct" / "kubepods" / "besteffort" / "pod1234" / cid
                        / "cpuacct.usage", "{ns}\n"),
        "v2-kubepods-guaranteed": (tmp_path / "kubepods" / "pod1234" / cid / "cpu.stat",
                                   "usage_usec {us}\n"),
    }
    path, fmt = paths[layout]
    path.parent.mkdir(parents=True)

    def set_usage(ns: int) -> None:
        path.write_text(fmt.format(ns=ns, us=ns // 1000))

    set_usage(1_000_000_000)
    assert container_cpu_ns(cid, tmp_path) == 1_000_000_000
    assert container_cpu_ns("cd" * 32, tmp_path) is None
    clock = FakeClock()
    meter = ContainerCpu(clock, tmp_path)
    assert meter.sample([cid]) is None  # the first sample only sets the base
    set_usage(1_500_000_000)
    clock.advance(2.0)
    assert meter.sample([cid]) == pytest.approx(25.0)  # 0.5 CPU-s in 2 s
    clock.advance(1.0)
    assert meter.sample(["cd" * 32]) is None  # gone: nothing to measure


class _KeepAliveHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps the connection unless told otherwise

    def setup(self) -> None:
        super().setup()
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.connections += 1  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        # the "restarting replica": it drops every connection right after answering,
        # without saying so — the prober's kept connection is dead at its next probe
        if self.server.drop_after_answer:  # type: ignore[attr-defined]
            self.close_connection = True  # (a client's `Connection: close` is kept too)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def keepalive_server(drop_after_answer: bool) -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveHandler)
    srv.lock = threading.Lock()  # type: ignore[attr-defined]
    srv.connections = 0  # type: ignore[attr-defined]
    srv.drop_after_answer = drop_after_answer  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("drop", [False, True])
def test_ready_replica_is_probed_on_its_kept_connection(tmp_path: Path, drop: bool) -> None:
    """Steady probes reuse one connection (the prober's cost per replica); a replica that
    dropped the kept connection is probed again at once on a new one, never failed."""
    out = tmp_path / "status.json"
    reader = StatusReader(out)
    with keepalive_server(drop) as srv, prober(srv.server_address[1], out):
        addr = f"127.0.0.1:{srv.server_address[1]}"
        probes = wait_for(reader, addr, lambda ps: len(ps) >= 4)
        connections = srv.connections  # type: ignore[attr-defined]
    assert all(p.ok and p.outcome == "http 200" for p in probes)
    if drop:
        assert connections >= len(probes)
    else:
        assert connections == 1


def _resolves_over(out: Path, seconds: float) -> float:
    """Resolves per second the prober reported over about `seconds` (status docs)."""
    first = json.loads(out.read_text())
    time.sleep(seconds)
    last = json.loads(out.read_text())
    return (last["resolves"] - first["resolves"]) / (last["updated"] - first["updated"])


def test_discovery_slows_down_when_settled_and_the_wake_file_speeds_it_up(
        tmp_path: Path) -> None:
    """Every replica ready and unchanged: the name is resolved once a second; touching
    the wake file (the host does on deploy and scale) brings back 4 a second for
    `--settle` seconds, so a new replica is found as soon as it is in DNS."""
    out = tmp_path / "status.json"
    wake_file = tmp_path / "wake"
    reader = StatusReader(out)
    with http_server() as port, prober(port, out, "--wake", str(wake_file), "--settle", "3"):
        addr = f"127.0.0.1:{port}"
        wait_for(reader, addr, lambda ps: sum(p.ok for p in ps) >= 1)
        time.sleep(3.5)  # settled
        slow = _resolves_over(out, 3.0)
        wake_file.write_text("1")
        time.sleep(0.3)
        fast = _resolves_over(out, 2.0)
    assert 0.6 <= slow <= 1.4, slow
    assert fast >= 3.0, fast
