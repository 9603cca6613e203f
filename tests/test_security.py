"""Security and robustness (issue #13) against the real things: the dashboard server on a
real socket, real files with planted links and FIFOs, `harness` subprocesses, a real
HAProxy container for the admin socket.

Hostile command-line input is in tests/test_hostile.py.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import runlock
from harness.fsutil import UnsafeFileError, atomic_write, private_root, read_regular
from harness.record.schema import EVENTS
from harness.record.writer import CsvSink, write_frame_csv
from harness.report.server import REQUEST_TIMEOUT_S, DashboardServer
from harness.report.websec import script_hash
from tests.dashboard_server import serving
from tests.synthetic_run import make_synthetic_run

SECRET = "SECRET-9f1c-not-for-the-dashboard"


def _harness(args: list[str], cwd: Path, timeout: float = 180
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


# ── the dashboard server ────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files outside the results folder that planted links point at."""
    d = tmp_path_factory.mktemp("outside")
    (d / "secret.txt").write_text(SECRET + "\n")
    src = make_synthetic_run(d, run_id="donor", strategies=("leakedstrategy",))
    (src / "timeseries.csv").rename(d / "timeseries.csv")
    return d


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, outside: Path) -> Path:
    root = tmp_path_factory.mktemp("results")
    make_synthetic_run(root, run_id="plain")
    linked = make_synthetic_run(root, run_id="linked")
    for name in ("events.csv", "run.json", "decisions.csv"):
        (linked / name).unlink(missing_ok=True)
        (linked / name).symlink_to(outside / "secret.txt")
    leak = make_synthetic_run(root, run_id="leak")
    (leak / "timeseries.csv").unlink()
    (leak / "timeseries.csv").symlink_to(outside / "timeseries.csv")
    fifo = make_synthetic_run(root, run_id="fifo")
    (fifo / "run.json").unlink()
    os.mkfifo(fifo / "run.json")
    (fifo / "events.csv").unlink()
    os.mkfifo(fifo / "events.csv")
    return root


@pytest.fixture(scope="module")
def server(results: Path) -> Iterator[DashboardServer]:
    with serving(results) as srv:
        yield srv


def request(srv: DashboardServer, path: str, host: str | None = "default"
            ) -> tuple[int, dict[str, str], bytes]:
    port = srv.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest("GET", path, skip_host=True)
        if host == "default":
            conn.putheader("Host", f"127.0.0.1:{port}")
        elif host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


@pytest.mark.parametrize("name", ["events.csv", "run.json", "decisions.csv"])
def test_a_linked_result_file_is_not_served(server: DashboardServer, name: str) -> None:
    status, _h, body = request(server, f"/run/linked/{name}")
    assert status == 404 and SECRET.encode() not in body
    status, _h, body = request(server, f"/run/plain/{name}")  # the same file, not linked
    assert status == 200 and SECRET.encode() not in body


def test_a_linked_timeseries_does_not_leak_into_the_dashboard(server: DashboardServer
                                                               ) -> None:
    for path in ("/run/leak/data.json", "/run/leak/", "/run/leak/timeseries.csv", "/"):
        _status, _h, body = request(server, path)
        assert b"leakedstrategy" not in body, path
    status, _h, _b = request(server, "/run/leak/data.json")
    assert status == 503  # its only timeseries is a link: no data
    status, _h, body = request(server, "/run/plain/data.json")
    assert status == 200 and b"autoscale" in body


@pytest.mark.parametrize("host", ["attacker.example:{port}", "attacker.example",
                                  "127.0.0.1", "127.0.0.1:1", "localhost.attacker:{port}",
                                  "0.0.0.0:{port}"])
def test_a_foreign_host_header_gets_421(server: DashboardServer, host: str) -> None:
    port = server.server_address[1]
    for path in ("/", "/run/plain/run.json", "/run/plain/data.json"):
        status, headers, body = request(server, path, host=host.format(port=port))
        assert status == 421, (host, path)
        assert b"autoscale" not in body and "content-security-policy" in headers


def test_a_request_without_host_gets_421(server: DashboardServer) -> None:
    status, _h, body = request(server, "/run/plain/run.json", host=None)
    assert status == 421 and b"scenario" not in body


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}",
                                  "LOCALHOST:{port}"])
def test_the_loopback_names_are_answered(server: DashboardServer, host: str) -> None:
    status, _h, _b = request(server, "/", host=host.format(port=server.server_address[1]))
    assert status == 200


def test_every_response_carries_a_csp(server: DashboardServer) -> None:
    js = (Path(__file__).resolve().parent.parent / "harness" / "report" / "dashboard.js")
    for path, want in (("/", 200), ("/run/plain/", 200), ("/run/plain/data.json", 200),
                       ("/run/plain/run.json", 200), ("/run/plain", 301), ("/nope", 404),
                       ("/run/linked/events.csv", 404)):
        status, headers, _b = request(server, path)
        assert status == want, path
        policy = headers["content-security-policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        # the dashboard's own script is the only one allowed to run
        assert script_hash(js.read_text(encoding="utf-8")) in policy


def test_report_html_carries_its_own_csp(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path)
    r = _harness(["report", str(run)], tmp_path)
    assert r.returncode == 0, r.stderr
    page = (run / "report.html").read_text(encoding="utf-8")
    m = re.search(r'<meta http-equiv=Content-Security-Policy content="([^"]+)">', page)
    assert m, "no CSP meta tag"
    policy = m[1]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    assert len(scripts) == 1 and script_hash(scripts[0]) in policy
    assert page.index("Content-Security-Policy") < page.index("<script")


def test_a_fifo_run_json_does_not_hang_the_dashboard(server: DashboardServer) -> None:
    t0 = time.monotonic()
    status, _h, body = request(server, "/")
    assert status == 200 and b"fifo" in body
    assert request(server, "/run/fifo/run.json")[0] == 404
    assert request(server, "/run/fifo/events.csv")[0] == 404
    assert request(server, "/run/fifo/data.json")[0] == 200  # timeseries is a real file
    assert time.monotonic() - t0 < 50  # each request had 60 s; a blocking open never returns


def test_a_stalled_client_is_dropped(server: DashboardServer) -> None:
    """A client that sends half a request and waits is disconnected after the request
    timeout instead of holding a thread forever."""
    s = socket.create_connection(server.server_address[:2], timeout=REQUEST_TIMEOUT_S * 6)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        t0 = time.monotonic()
        data = s.recv(4096)  # b"" once the server closes; socket.timeout fails the test
        assert data == b"" or data.startswith(b"HTTP/")
        assert time.monotonic() - t0 >= REQUEST_TIMEOUT_S * 0.5
    finally:
        s.close()


# ── files: one atomic writer, never through a link ──────────────────────────────────────


def test_harness_report_ignores_planted_temp_links(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched\n")
    for name in (".summary.csv.tmp", ".report.html.tmp", ".disturbances.csv.tmp",
                 ".summary_aggregate.csv.tmp", ".run.json.tmp"):
        (run / name).symlink_to(victim)
    r = _harness(["report", str(run)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "untouched\n"
    assert not (run / "report.html").is_symlink() and (run / "summary.csv").stat().st_size


@pytest.mark.parametrize("name", ["report.html", "summary.csv"])
def test_harness_report_refuses_an_output_that_is_a_link(tmp_path: Path, name: str) -> None:
    run = make_synthetic_run(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched\n")
    (run / name).unlink(missing_ok=True)
    (run / name).symlink_to(victim)
    r = _harness(["report", str(run)], tmp_path)
    assert r.returncode == 2 and "link" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert victim.read_text() == "untouched\n"


def test_harness_compare_refuses_a_linked_comparison_csv(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched\n")
    (run / "comparison.csv").symlink_to(victim)
    r = _harness(["compare", str(run)], tmp_path)
    assert r.returncode == 2 and "link" in r.stderr, r.stderr
    assert victim.read_text() == "untouched\n"


def test_two_reports_at_once_do_not_race(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-m", "harness.cli", "report", str(run)],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    for p in procs:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert (run / "report.html").read_text(encoding="utf-8").endswith("</html>\n")
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temp left


def test_atomic_write_and_sinks_refuse_links(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched\n")
    (tmp_path / "link.csv").symlink_to(victim)
    with pytest.raises(UnsafeFileError):
        atomic_write(tmp_path / "link.csv", "x")
    with pytest.raises(UnsafeFileError):
        CsvSink(tmp_path / "link.csv", EVENTS)
    os.mkfifo(tmp_path / "fifo.csv")
    with pytest.raises(UnsafeFileError):  # would block forever on open without a reader
        CsvSink(tmp_path / "fifo.csv", EVENTS)
    with pytest.raises(UnsafeFileError):
        atomic_write(tmp_path / "fifo.csv", "x")
    with pytest.raises(UnsafeFileError):
        read_regular(tmp_path / "fifo.csv")
    with pytest.raises(UnsafeFileError):
        read_regular(tmp_path / "link.csv")
    assert victim.read_text() == "untouched\n"
    out = atomic_write(tmp_path / "ok.txt", "fine\n")
    assert out.read_text() == "fine\n" and (out.stat().st_mode & 0o777) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.csv", "link.csv", "ok.txt",
                                                          "victim.txt"]


def test_csv_text_cells_cannot_be_formulas(tmp_path: Path) -> None:
    import pandas as pd

    sink = CsvSink(tmp_path / "events.csv", EVENTS)
    for detail in ("=HYPERLINK(\"http://x\",\"y\")", "+1+cmd", "-2+3", "@SUM(A1)",
                   "\tx", "\rx", "plain", "-3.5"):
        sink.write({"run_id": "r", "strategy": "s", "trial": 1, "t_s": 1.0,
                    "kind": "fault", "detail": detail})
    sink.close()
    df = pd.read_csv(tmp_path / "events.csv", dtype=str, keep_default_na=False)
    assert list(df["detail"]) == ["'=HYPERLINK(\"http://x\",\"y\")", "'+1+cmd", "'-2+3",
                                  "'@SUM(A1)", "'\tx", "'\rx", "plain", "-3.5"]
    write_frame_csv(pd.DataFrame({"strategy": ["=cmd|' /C calc'!A0"], "x": [-1.5]}),
                    tmp_path / "t.csv")
    t = pd.read_csv(tmp_path / "t.csv", dtype=str)
    assert t["strategy"][0] == "'=cmd|' /C calc'!A0" and t["x"][0] == "-1.5"


# ── runs: run.json never stays `running`, live runs are not swept ───────────────────────


SIM_SCENARIO = """\
name: sec
platform: sim
output: results
app:
  env:
    WORKERS: {workers}
load:
  stages: [{{duration_s: {duration}, rps: 20}}]
strategies:
  - name: fixed
    kind: compose
    replicas: 1
"""


def _run_json(results: Path) -> dict:
    runs = list(results.glob("*/run.json"))
    assert len(runs) == 1, runs
    return json.loads(runs[0].read_text())


def test_a_run_whose_every_trial_failed_is_failed(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SIM_SCENARIO.format(workers="many", duration=5))
    _harness(["run", "s.yaml", "--repetitions", "2"], tmp_path)
    meta = _run_json(tmp_path / "results")
    assert [t["status"] for t in meta["trials"]] == ["failed", "failed"]
    assert meta["status"] == "failed"


def test_a_second_ctrl_c_still_marks_the_run_incomplete(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SIM_SCENARIO.format(workers=2, duration=14000))
    p = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "s.yaml",
                          "--repetitions", "50"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "results").glob("*/timeseries.csv")):
            assert p.poll() is None and time.monotonic() < deadline, p.stderr
            time.sleep(0.2)
        meta = _run_json(tmp_path / "results")
        assert meta["status"] == "running" and meta["pid"] == p.pid
        # two different signals back to back (two SIGINTs could merge into one pending
        # signal): the second reaches the handler before the first has stopped the trial
        os.kill(p.pid, signal.SIGINT)
        os.kill(p.pid, signal.SIGTERM)
        p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130
    meta = _run_json(tmp_path / "results")
    assert meta["status"] == "incomplete"
    assert runlock.is_held(meta["run_id"]) is None  # no stale lock file left behind


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_running_run_whose_process_died_is_not_shown_live(tmp_path: Path) -> None:
    import platform as pyplatform

    results = tmp_path / "results"
    held_id = f"sec-held-{os.getpid()}"
    for rid, pid in (("sec-dead", _dead_pid()), ("sec-alive", os.getpid()),
                     (held_id, _dead_pid())):
        run = make_synthetic_run(results, run_id=rid, status="running")
        meta = json.loads((run / "run.json").read_text())
        meta.update(pid=pid, host={"hostname": pyplatform.node()})
        (run / "run.json").write_text(json.dumps(meta))
    fd = runlock.hold(held_id)  # a live run holding its lock wins over a dead pid
    with serving(results) as srv:
        try:
            idx = request(srv, "/")[2].decode()
            rows = {rid: re.search(rf"'/run/{rid}/'>.*?class='badge (\w+)'", idx)
                    for rid in ("sec-dead", "sec-alive", held_id)}
            assert {k: m[1] for k, m in rows.items() if m} == {
                "sec-dead": "incomplete", "sec-alive": "running", held_id: "running"}
            data = json.loads(request(srv, "/run/sec-dead/data.json")[2])
            assert data["run"]["status"] == "incomplete"
        finally:
            runlock.release(fd, held_id)
    assert runlock.is_held(held_id) is None  # released and removed


def _labelled_sleep(run_id: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HARNESS_MANAGED": "true", "HARNESS_RUN": run_id}
    return subprocess.Popen(["sleep", "300"], env=env)


def test_clean_skips_a_live_run_unless_all(tmp_path: Path) -> None:
    from harness.platforms.local.local_procs import MANAGED_ENV, RUN_ENV

    assert (MANAGED_ENV, RUN_ENV) == ("HARNESS_MANAGED", "HARNESS_RUN")
    live_id, dead_id = f"t-sec-live-{os.getpid()}", f"t-sec-dead-{os.getpid()}"
    fd = runlock.hold(live_id)
    live, dead = _labelled_sleep(live_id), _labelled_sleep(dead_id)
    try:
        r = _harness(["clean"], tmp_path)
        assert r.returncode == 0, r.stderr
        assert dead.wait(timeout=30) == -signal.SIGKILL
        assert live.poll() is None, "a live run's process was killed"
        assert f"skipped run {live_id}" in r.stdout
        r = _harness(["clean", "--all"], tmp_path)
        assert r.returncode == 0, r.stderr
        assert live.wait(timeout=30) == -signal.SIGKILL
    finally:
        runlock.release(fd, live_id)
        for p in (live, dead):
            if p.poll() is None:
                p.kill()
                p.wait()


# ── the private workdir root ────────────────────────────────────────────────────────────


def test_a_workdir_root_of_someone_else_is_refused(tmp_path: Path) -> None:
    if os.getuid() == 0:  # root: make a folder that belongs to someone else
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o777)
        os.chown(theirs, 65534, 65534)
    else:
        theirs = Path("/")  # exists, and is root's
    with pytest.raises(UnsafeFileError, match="owned by uid"):
        private_root(theirs)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeFileError, match="link"):
        private_root(tmp_path / "link")
    ours = private_root(tmp_path / "ours")
    assert (ours.stat().st_mode & 0o777) == 0o700 and ours.stat().st_uid == os.getuid()


# ── the HAProxy admin socket, in the real container ─────────────────────────────────────


def test_the_real_haproxy_admin_socket_is_mode_600(docker_client: object, run_id: str
                                                   ) -> None:
    """The docker platform's HAProxy, with the config and folders the deployer makes: the
    admin socket is 0600 and ours, in a 0700 trial folder under our 0700 root."""
    import stat as st

    from harness.deploy import haproxy
    from harness.deploy.base import AppSpec, DeploySpec, labels_for
    from harness.platforms.docker.docker_common import WORKDIR_ROOT, default_image, make_workdir
    from harness.platforms.docker.docker_objects import remove_workdirs, write_text

    client: object = docker_client
    spec = DeploySpec(run_id=run_id, trial_id="sock-1", app=AppSpec(), replicas=1)
    d = make_workdir(spec, "test")
    container = None
    try:
        write_text(d / "haproxy" / "haproxy.cfg",
                   haproxy.render_config(haproxy.StaticServers(["127.0.0.1:1"])))
        image = default_image("haproxy", "harness-haproxy:latest")
        container = client.containers.run(  # type: ignore[attr-defined]
            image, detach=True, labels=labels_for(run_id, **{"harness.role": "lb"}),
            volumes={str(d / "haproxy"): {"bind": haproxy.CONFIG_DIR, "mode": "ro"},
                     str(d / "haproxy-run"): {"bind": haproxy.RUN_DIR, "mode": "rw"}})
        sock = d / "haproxy-run" / haproxy.SOCKET_NAME
        deadline = time.monotonic() + 90
        while not sock.exists():
            container.reload()
            assert container.status in ("created", "running"), container.logs()[-2000:]
            assert time.monotonic() < deadline, container.logs()[-2000:]
            time.sleep(0.3)
        s = os.stat(sock)
        assert st.S_ISSOCK(s.st_mode)
        assert st.S_IMODE(s.st_mode) == 0o600, oct(s.st_mode)
        assert (s.st_uid, s.st_gid) == (os.getuid(), os.getgid())
        assert st.S_IMODE(os.stat(d).st_mode) == 0o700
        root = os.lstat(WORKDIR_ROOT)
        assert st.S_IMODE(root.st_mode) == 0o700 and root.st_uid == os.getuid()
        # and we, its owner, can still drive HAProxy through it
        assert "Name: HAProxy" in haproxy.RuntimeAPI(sock, timeout_s=10).command("show info")
    finally:
        if container is not None:
            container.remove(force=True)
        remove_workdirs(run_id)


# ── the harness's swarm: which ports it opens ───────────────────────────────────────────


def _listening(proto: str, port: int) -> list[str]:
    """Local addresses listening on `port` (`ss`, iproute2), e.g. ["127.0.0.1:2377"]."""
    out = subprocess.run(["ss", "-H", "-ln", f"-{proto}"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    addrs = [line.split()[3] for line in out.splitlines() if len(line.split()) > 4]
    return [a for a in addrs if a.rsplit(":", 1)[-1] == str(port)]


def _wait_for(pred: object, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.5)
    return False


def test_swarm_ports_while_the_harness_swarm_exists(docker_client: object, run_id: str
                                                    ) -> None:
    """What README.md and harness/platforms/docker/DOCKER.md state: the swarm's control ports
    (TCP 2377, 7946) stay on 127.0.0.1, Docker's VXLAN data port UDP 4789 listens on all
    addresses while the swarm exists, and it is gone once the harness leaves the swarm."""
    from harness.platforms.docker.swarm_state import ensure_swarm, leave_swarm_if_ours

    client: object = docker_client
    state = (client.info().get("Swarm") or {}).get("LocalNodeState")  # type: ignore[attr-defined]
    assert state == "inactive", f"a swarm exists already ({state}); this test makes its own"
    assert not _listening("u", 4789)
    assert ensure_swarm(client, run_id)
    try:
        assert _wait_for(lambda: _listening("u", 4789)), "no VXLAN port while in a swarm"
        vxlan = _listening("u", 4789)
        assert any(a.split(":")[0] in ("0.0.0.0", "*", "[::]") for a in vxlan), vxlan
        control = _listening("t", 2377) + _listening("t", 7946)
        assert control and all(a.startswith("127.0.0.1:") for a in control), control
    finally:
        left = leave_swarm_if_ours(client)
    assert left
    assert _wait_for(lambda: not _listening("u", 4789)), "UDP 4789 still open after leave"
