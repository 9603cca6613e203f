"""Remote load workers: `harness worker --master HOST:PORT` joins a trial's Locust master.

Real processes on 127.0.0.1, nothing mocked: ``LoadRun`` starts the master (waiting for
``remote_workers``), the test starts the installed `harness worker` CLI as separate
processes with the command the master printed, against the real sample app. Loads stay
small (200 req/s, a few seconds): the machine has 2 cores.
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from harness.load.profile import Profile
from harness.load.runner import LoadError, LoadRun, LoadSpec, free_port
from harness.record.histogram import Histogram
from harness.scenario.loader import load_scenario
from tests.test_load_run import (
    App,
    Recorded,
    assert_locust_totals_equal,
    assert_no_process_left,
    assert_one_worker_lost,
    contiguous,
    kill_worker_at,
    sleep_until,
)

ROOT = Path(__file__).resolve().parent.parent
HARNESS = Path(sys.executable).parent / "harness"  # the installed CLI of this venv


@pytest.fixture
def app() -> Iterator[App]:
    a = App(WORKERS=200, SERVICE_MS=5, SERVICE_DIST="constant", QUEUE_LIMIT=1000)
    yield a
    a.stop()


class Workers:
    """`harness worker` processes, stopped for sure at the end of the test."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        p = subprocess.Popen([str(HARNESS), "worker", *args], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=10)


@pytest.fixture
def workers() -> Iterator[Workers]:
    w = Workers()
    yield w
    w.stop()


def start_waiting(spec: LoadSpec, rec: Recorded) -> tuple[LoadRun, threading.Thread,
                                                          list[str], list[BaseException]]:
    """Start the run in a thread (start() returns only once every worker is there) and
    wait until the master printed the command for the workers."""
    waiting: list[str] = []
    errors: list[BaseException] = []
    run = LoadRun(spec, on_second=rec.on_second, on_event=rec.on_event,
                  on_waiting=waiting.append)

    def start() -> None:
        try:
            run.start()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=start, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while not waiting and not errors and time.monotonic() < deadline:
        time.sleep(0.05)
    assert waiting, f"the master did not say it waits: {errors}"
    return run, t, waiting, errors


def command_args(text: str) -> list[str]:
    m = re.search(r"harness worker (--master \S+)$", text)
    assert m, text
    return m.group(1).split()


@contextlib.contextmanager
def remote_run(spec: LoadSpec, rec: Recorded, workers: Workers, n: int = 2,
               waiting_says: str | None = None
               ) -> Iterator[tuple[LoadRun, list[subprocess.Popen[str]]]]:
    """The run with n `harness worker` processes started from the command the master
    printed (that line is waiting_says, where given), joined and running; the run is
    stopped for sure when the block ends."""
    run, t, waiting, errors = start_waiting(spec, rec)
    try:
        if waiting_says is not None:
            assert waiting == [waiting_says]
        ws = [workers.start(*command_args(waiting[0])) for _ in range(n)]
        t.join(timeout=90)
        assert not errors, errors
        yield run, ws
    finally:
        run.stop()


def test_two_remote_workers_merge_exactly(app: App, workers: Workers, tmp_path: Path) -> None:
    port = free_port()
    spec = LoadSpec(base_url=app.url, profile=Profile.constant(200, 4), warmup_s=1,
                    warmup_rps=100, max_in_flight=100, remote_workers=2,
                    master_bind=f"127.0.0.1:{port}", raw_latencies_dir=str(tmp_path))
    rec = Recorded()
    says = (f"waiting up to 60 s for 2 remote load workers: on each machine run  harness "
            f"worker --master 127.0.0.1:{port}")
    with remote_run(spec, rec, workers, waiting_says=says) as (run, ws):
        assert run.wait(timeout=60)
    assert_no_process_left(run)
    outs = [w.communicate(timeout=30) for w in ws]
    assert [w.returncode for w in ws] == [0, 0], outs
    assert all("run 1 served" in out for out, _err in outs)
    joined = [d for k, d in rec.events if k == "worker_joined"]
    assert len(joined) == 2 and all(d.endswith("(remote)") for d in joined)
    assert "worker_lost" not in rec.kinds()
    ts = contiguous(rec)
    assert ts[0] == -1
    assert all(s.workers_reporting == 2 and s.workers_alive == 2 for s in rec.seconds)
    by_t = {s.t_s: s for s in rec.seconds}
    assert sum(by_t[t].sent for t in range(4)) == 800  # uniform slots: exactly the integral
    # Each worker wrote every latency it measured: the per-second records are their sums.
    files = sorted(tmp_path.glob("raw-*.txt"))
    assert len(files) == 2
    per_worker = [[float(x) for x in f.read_text().split()] for f in files]
    assert all(len(r) > 300 for r in per_worker), [len(r) for r in per_worker]
    raw = sorted(x for r in per_worker for x in r)
    merged = Histogram()
    for s in rec.seconds:
        assert s.histogram.total == s.requests
        merged.merge(s.histogram)
    tot = run.totals()
    assert merged.total == len(raw) == tot.requests_all
    assert tot.sent == 800 and tot.requests == tot.ok + tot.failed
    exact_p95 = raw[math.ceil(0.95 * len(raw)) - 1]
    assert merged.percentile(95) == pytest.approx(exact_p95, rel=0.01)
    assert merged.max_ms == pytest.approx(raw[-1])
    assert_locust_totals_equal(run)


def test_the_master_gives_up_naming_how_many_joined(app: App, workers: Workers) -> None:
    port = free_port()
    spec = LoadSpec(base_url=app.url, profile=Profile.constant(50, 2), max_in_flight=20,
                    remote_workers=2, remote_workers_timeout_s=6,
                    master_bind=f"127.0.0.1:{port}")
    rec = Recorded()
    run, t, waiting, errors = start_waiting(spec, rec)
    try:
        w = workers.start(*command_args(waiting[0]), "--timeout", "20")
        t.join(timeout=60)
    finally:
        run.stop()
    assert len(errors) == 1 and isinstance(errors[0], LoadError)
    assert (f"1 of 2 remote load workers joined in 6 s (master 127.0.0.1:{port}; start "
            f"each with `harness worker --master 127.0.0.1:{port}`)") in str(errors[0])
    assert_no_process_left(run)
    _out, err = w.communicate(timeout=30)
    assert w.returncode == 1
    assert f"the master at 127.0.0.1:{port} ended before its run started" in err


def test_a_killed_remote_worker_is_lost_and_the_run_finishes(app: App,
                                                             workers: Workers) -> None:
    spec = LoadSpec(base_url=app.url, profile=Profile.constant(200, 10), warmup_s=1,
                    warmup_rps=100, max_in_flight=100, remote_workers=2,
                    master_bind=f"127.0.0.1:{free_port()}")
    rec = Recorded()
    with remote_run(spec, rec, workers) as (run, ws):
        # the Locust worker process itself (the CLI's child), as if its machine died
        victim, killed_at = kill_worker_at(
            run, 3.5, lambda: psutil.Process(ws[0].pid).children()[0].pid)
    by_t, k = assert_one_worker_lost(run, rec, victim, killed_at)
    assert all(by_t[t].workers_alive == 1 for t in range(k + 5, 10))
    assert all(by_t[t].sent > 0 and by_t[t].ok > 0 for t in range(10))
    # (Locust's own totals miss the dead worker's last stats report: not compared here)
    _out, err = ws[0].communicate(timeout=30)
    assert ws[0].returncode == 1 and "exit code -9" in err
    assert ws[1].wait(timeout=30) == 0


def test_sigterm_leaves_the_run_cleanly(app: App, workers: Workers) -> None:
    spec = LoadSpec(base_url=app.url, profile=Profile.constant(100, 8), max_in_flight=50,
                    remote_workers=2, master_bind=f"127.0.0.1:{free_port()}")
    rec = Recorded()
    with remote_run(spec, rec, workers) as (run, ws):
        sleep_until(run, 2.5)
        child = psutil.Process(ws[0].pid).children()[0]
        ws[0].send_signal(signal.SIGTERM)
        left_at = time.monotonic() - run.t0_monotonic
        assert ws[0].wait(timeout=30) == 130
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
        assert run.wait(timeout=60)
    lost = [d for k, d in rec.events if k == "worker_lost"]
    assert len(lost) == 1 and "left: stopped by SIGTERM" in lost[0], rec.events
    assert run.totals().complete
    by_t = {s.t_s: s for s in rec.seconds}
    for t in range(math.floor(left_at) + 3, 8):  # the survivor took over the share
        assert by_t[t].sent + by_t[t].dropped == 100 and by_t[t].workers_alive == 1, t
    assert ws[1].wait(timeout=30) == 0


def test_no_master_is_a_clear_error_within_the_timeout(workers: Workers) -> None:
    port = free_port()
    t0 = time.monotonic()
    w = workers.start("--master", f"127.0.0.1:{port}", "--timeout", "3")
    _out, err = w.communicate(timeout=60)
    assert w.returncode == 1
    assert err.strip() == (f"harness: no master answered at 127.0.0.1:{port} within 3 s (is "
                           "the trial waiting for workers, and is the port reachable from "
                           "here?)")
    assert time.monotonic() - t0 < 20


def test_a_custom_locustfile_is_never_taken_from_the_network(app: App, workers: Workers,
                                                              tmp_path: Path) -> None:
    lf = tmp_path / "lf.py"
    lf.write_text("from locust import HttpUser, task\n\n\nclass U(HttpUser):\n"
                  "    @task\n    def t(self):\n        self.client.get('/work')\n")
    spec = LoadSpec(base_url=app.url, profile=Profile.constant(20, 2), max_in_flight=10,
                    remote_workers=1, locustfile=str(lf),
                    master_bind=f"127.0.0.1:{free_port()}")
    rec = Recorded()
    run, t, waiting, errors = start_waiting(spec, rec)
    try:
        w = workers.start(*command_args(waiting[0]))
        t.join(timeout=60)
    finally:
        run.stop()
    assert len(errors) == 1 and "a worker never runs code sent over the network" in str(
        errors[0])
    _out, err = w.communicate(timeout=30)
    assert w.returncode == 2 and "cannot serve the master's run" in err


# -- the scenario keys ------------------------------------------------------------------------

SCENARIO = """\
name: t
load:
  stages:
    - {duration_s: 10, rps: 100}
  max_in_flight: 90
%s
strategies:
  - {name: m, kind: manual, replicas: 2}
"""


def _validate(tmp_path: Path, extra: str) -> subprocess.CompletedProcess[str]:
    p = tmp_path / "s.yaml"
    p.write_text(SCENARIO % extra)
    return subprocess.run([str(HARNESS), "validate", str(p)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("extra", "line", "key", "needle"), [
    ("  remote_workers: -1", 6, "load.remote_workers", "greater than or equal to 0"),
    ("  remote_workers: 1000", 6, "load.remote_workers", "less than or equal to 64"),
    ("  remote_workers_timeout_s: 0", 6, "load.remote_workers_timeout_s", "greater than 0"),
    ("  master_bind: example.com", 6, "load.master_bind", "must be an IPv4 address"),
    ("  master_bind: '::'", 6, "load.master_bind", "must be an IPv4 address"),
    ("  master_port: 80", 6, "load.master_port", "greater than or equal to 1024"),
    ("  remote_workers: 64\n  workers: 32", 5, "load.max_in_flight",
     "90 gives fewer than one user to each of the 96 workers"),
], ids=["negative", "too-many", "zero-timeout", "hostname-bind", "ipv6-bind", "low-port",
     "too-few-users"])
def test_bad_remote_keys_exit_2_located(tmp_path: Path, extra: str, line: int, key: str,
                                        needle: str) -> None:
    r = _validate(tmp_path, extra)
    assert r.returncode == 2, r.stdout
    assert r.stderr.startswith(f"harness: {tmp_path / 's.yaml'}:{line}: {key}: "), r.stderr
    assert needle in r.stderr and r.stderr.count("\n") == 1


def test_the_scenario_keys_reach_the_load_spec(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(SCENARIO % "  remote_workers: 2\n  remote_workers_timeout_s: 30\n"
                            "  master_port: 15557")
    spec = LoadSpec.from_scenario(load_scenario(p), base_url="http://127.0.0.1:1")
    assert (spec.remote_workers, spec.remote_workers_timeout_s, spec.master_bind) == (
        2, 30, "127.0.0.1:15557")
    p.write_text(SCENARIO % "  remote_workers: 1")
    spec = LoadSpec.from_scenario(load_scenario(p), base_url="http://127.0.0.1:1")
    assert spec.master_bind is not None and spec.master_bind.startswith("127.0.0.1:")
    p.write_text(SCENARIO % "")
    assert LoadSpec.from_scenario(load_scenario(p), base_url="http://x:1").master_bind is None


def test_a_bad_master_address_is_a_usage_error(workers: Workers) -> None:
    w = workers.start("--master", "nowhere")
    _out, err = w.communicate(timeout=30)
    assert w.returncode == 2 and "--master 'nowhere': give HOST:PORT" in err


# -- a whole `harness run` ------------------------------------------------------------------

RUN_SCENARIO = """\
name: remote
output: {out}
app:
  env: {{WORKERS: 50, SERVICE_MS: 5, SERVICE_DIST: constant, QUEUE_LIMIT: 100}}
load:
  warmup_s: 1
  timeout_s: 2
  max_in_flight: 50
  remote_workers: 1
  remote_workers_timeout_s: 60
  master_port: {port}
  stages:
    - {{duration_s: 4, rps: 100}}
strategies:
  - {{name: one, kind: manual, replicas: 1}}
  - {{name: two, kind: compose, replicas: 1}}
"""


def test_a_run_waits_for_its_remote_worker_trial_after_trial(tmp_path: Path,
                                                             workers: Workers) -> None:
    import json

    import pandas as pd

    port = free_port()
    p = tmp_path / "remote.yaml"
    p.write_text(RUN_SCENARIO.format(out=tmp_path / "results", port=port))
    w = workers.start("--master", f"127.0.0.1:{port}", "--runs", "0", "--timeout", "15")
    r = subprocess.run([str(HARNESS), "run", str(p), "--platform", "local"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    cmd = f"on each machine run  harness worker --master 127.0.0.1:{port}"
    assert r.stdout.count(cmd) == 2, r.stdout  # printed while each trial waits
    out, err = w.communicate(timeout=60)
    assert w.returncode == 0, out + err
    assert "run 2 served" in out and "no further run" in out
    (run_dir,) = list((tmp_path / "results").iterdir())
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["load_workers"] == {"local": 0, "remote": 1}
    assert [t["status"] for t in meta["trials"]] == ["complete", "complete"]
    ev = pd.read_csv(run_dir / "events.csv")
    assert sorted(ev[ev.kind == "worker_joined"].strategy) == ["one", "two"]
    ts = pd.read_csv(run_dir / "timeseries.csv")
    assert ts[ts.t_s >= 0].groupby("strategy")["sent_rps"].sum().to_dict() == {"one": 400,
                                                                            "two": 400}
