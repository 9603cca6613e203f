"""Load generation end to end: the real Locust child process(es) against the real sample app.

Nothing is mocked: ``LoadRun`` starts ``python -m harness.load.child`` (Locust as a library,
master + workers where asked), the sample app runs as a local process on 127.0.0.1. Loads
stay small (<= 600 req/s) and short; what the generator controls (offered, sent) is held
to 5%, what the machine controls (completions) is only judged when the generator was not
saturated — otherwise the test says so and skips rather than flake on a busy machine.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.load.profile import Profile, StageSpec
from harness.load.runner import LoadError, LoadRun, LoadSpec, free_port
from harness.load.stats import SecondStats
from harness.record.histogram import Histogram

ROOT = Path(__file__).resolve().parent.parent


class App:
    def __init__(self, **env: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        e = dict(os.environ, PORT=str(self.port), HOST="127.0.0.1",
                 **{k: str(v) for k, v in env.items()})
        self.proc = subprocess.Popen([sys.executable, "-m", "sample_app"], cwd=ROOT, env=e,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            if self.proc.poll() is not None:
                raise RuntimeError(f"sample app exited with {self.proc.returncode}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("sample app did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def app_factory() -> Iterator[Any]:
    apps: list[App] = []

    def make(**env: Any) -> App:
        a = App(**env)
        apps.append(a)
        return a

    yield make
    for a in apps:
        a.stop()


@pytest.fixture
def fast_app(app_factory: Any) -> App:
    # High capacity (200 slots x 5 ms: 40,000 req/s virtual), so it stays healthy.
    return app_factory(WORKERS=200, SERVICE_MS=5, SERVICE_DIST="constant", QUEUE_LIMIT=1000)


class Recorded:
    def __init__(self) -> None:
        self.seconds: list[SecondStats] = []
        self.events: list[tuple[str, str]] = []

    def on_second(self, s: SecondStats) -> None:
        self.seconds.append(s)

    def on_event(self, kind: str, detail: str) -> None:
        self.events.append((kind, detail))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


def run_load(spec: LoadSpec, timeout: float = 120) -> tuple[LoadRun, Recorded]:
    rec = Recorded()
    run = LoadRun(spec, on_second=rec.on_second, on_event=rec.on_event)
    run.start()
    try:
        assert run.wait(timeout=timeout), "the load did not finish in time"
    finally:
        run.stop()
    assert_no_process_left(run)
    return run, rec


def assert_no_process_left(run: LoadRun) -> None:
    pid = run.pid
    assert pid is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == pid]
        if not left:
            return
        time.sleep(0.2)
    raise AssertionError(f"load processes left behind: {[p.pid for p in left]}")


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def skip_if_saturated(rec: Recorded, what: str) -> None:
    sat = [s.t_s for s in rec.seconds if s.saturated]
    if sat:
        pytest.skip(f"load generator saturated at t={sat[:6]} s (machine too busy for this "
                    f"test): {what} is not measurable; see loadgen_saturated")


def assert_locust_totals_equal(run: LoadRun) -> None:
    t = run.totals()
    assert t.complete
    assert t.locust_requests is not None and t.locust_requests > 0
    assert (t.requests_all, t.failed_all) == (t.locust_requests, t.locust_failures), \
        "per-second totals must equal Locust's own totals exactly"


def contiguous(rec: Recorded) -> list[int]:
    ts = [s.t_s for s in rec.seconds]
    assert ts == list(range(ts[0], ts[0] + len(ts))), f"seconds not contiguous: {ts}"
    return ts


def sleep_until(run: LoadRun, t_s: float) -> None:
    """Sleep until t_s seconds past the run's t=0 (not at all once that is past)."""
    time.sleep(max(0.0, run.t0_monotonic + t_s - time.monotonic()))


def kill_worker_at(run: LoadRun, t_s: float, worker_pid: Callable[[], int]) -> tuple[int, float]:
    """SIGKILL the load worker process worker_pid() names at t_s, as if its machine died,
    and let the run finish: the victim's pid and the run time of the kill."""
    sleep_until(run, t_s)
    victim = worker_pid()
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic() - run.t0_monotonic
    assert run.wait(timeout=60)
    return victim, killed_at


def assert_one_worker_lost(run: LoadRun, rec: Recorded, victim: int,
                           killed_at: float) -> tuple[dict[int, SecondStats], int]:
    """After kill_worker_at (and run.stop): the victim is the one worker lost, the run is
    complete, no second is missing, both workers reported until the second before the
    kill. The seconds by t and the second of the kill, for the caller's own checks."""
    assert_no_process_left(run)
    lost = [d for k, d in rec.events if k == "worker_lost"]
    assert len(lost) == 1 and f"pid {victim}" in lost[0], rec.events
    tot = run.totals()
    assert tot.workers_lost == lost and tot.complete
    contiguous(rec)  # no second is missing: the survivor's data goes on
    by_t = {s.t_s: s for s in rec.seconds}
    k = math.floor(killed_at)
    assert all(by_t[t].workers_reporting == 2 for t in range(-1, k - 1))
    return by_t, k


# -- the open model ---------------------------------------------------------------------------


def test_spike_100_600_100_is_followed_within_5_percent_per_stage(fast_app: App) -> None:
    stages = [StageSpec(5, 100), StageSpec(5, 600), StageSpec(5, 100)]
    spec = LoadSpec(base_url=fast_app.url, profile=Profile.from_stages(stages, start_value=100),
                    warmup_s=2, warmup_rps=100, max_in_flight=500, timeout_s=3)
    run, rec = run_load(spec)
    ts = contiguous(rec)
    assert ts[0] == -2 and ts[-1] >= 14
    by_t = {s.t_s: s for s in rec.seconds}
    # The profile's intended arrivals per second, exactly.
    assert [round(by_t[t].offered) for t in range(15)] == [100] * 5 + [600] * 5 + [100] * 5
    assert all(by_t[t].offered == 100 for t in (-2, -1))  # warm-up, shown with t < 0
    for i, rate in enumerate((100, 600, 100)):
        window = [by_t[t] for t in range(5 * i, 5 * i + 5)]
        offered = sum(s.offered for s in window)
        sent = sum(s.sent for s in window)
        assert offered == pytest.approx(5 * rate)
        assert sent == pytest.approx(offered, rel=0.05), f"stage {i}: sent {sent}"
    assert_locust_totals_equal(run)
    for s in rec.seconds:
        assert s.histogram.total == s.ok + s.failed
        assert s.workers_alive == 1
    t = run.totals()
    assert t.warmup_requests == pytest.approx(200, abs=5)
    assert t.offered == pytest.approx(4000)
    skip_if_saturated(rec, "completions per stage")
    assert t.failed == 0
    for i, rate in enumerate((100, 600, 100)):
        ok = sum(by_t[t].ok for t in range(5 * i, 5 * i + 5))
        assert ok == pytest.approx(5 * rate, rel=0.05), f"stage {i}: ok {ok}"
    # Latency from the intended send time: a healthy 5 ms service stays well under 1 s.
    assert t.histogram.percentile(50) is not None and t.histogram.percentile(50) < 1000


def test_csv_trace_replays_the_users_own_shape(fast_app: App, tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("t_s,rps\n0,50\n2,50\n3,250\n5,250\n")
    spec = LoadSpec(base_url=fast_app.url, profile=Profile.from_csv(trace), max_in_flight=100)
    run, rec = run_load(spec)
    by_t = {s.t_s: s for s in rec.seconds}
    assert [round(by_t[t].offered) for t in range(5)] == [50, 50, 150, 250, 250]
    assert [by_t[t].sent + by_t[t].dropped for t in range(5)] == [50, 50, 150, 250, 250]
    assert_locust_totals_equal(run)


def test_closed_model_users_with_think_time(fast_app: App) -> None:
    users = Profile.from_stages([StageSpec(3, 4), StageSpec(3, 8)])
    spec = LoadSpec(base_url=fast_app.url, model="closed", profile=users, think_time_s=0.1,
                    warmup_s=1, warmup_rps=2, max_in_flight=20)
    run, rec = run_load(spec)
    by_t = {s.t_s: s for s in rec.seconds}
    assert by_t[-1].users == 2 and by_t[1].users == 4 and by_t[4].users == 8
    assert_locust_totals_equal(run)
    for s in rec.seconds:
        assert s.offered == s.sent and s.dropped == 0  # closed: what users sent was offered
    skip_if_saturated(rec, "the closed loop's rate")
    # Each user: ~5 ms service + 100 ms think -> a little under 10 req/s.
    low = sum(by_t[t].sent for t in (1, 2)) / 2
    high = sum(by_t[t].sent for t in (4, 5)) / 2
    assert 4 * 6 <= low <= 4 * 10
    assert 8 * 6 <= high <= 8 * 10
    assert high / low == pytest.approx(2, rel=0.2)


# -- failures, by cause ---------------------------------------------------------------------


def test_dead_backend_shows_up_as_connection_failures_not_a_stuck_run() -> None:
    port = free_port()  # nothing listens there
    spec = LoadSpec(base_url=f"http://127.0.0.1:{port}", profile=Profile.constant(50, 3),
                    max_in_flight=50, timeout_s=1)
    t = time.monotonic()
    run, _ = run_load(spec, timeout=60)
    assert time.monotonic() - t < 40
    tot = run.totals()
    assert tot.ok == 0 and tot.failed == pytest.approx(150, abs=3)
    assert tot.failed_by_cause["conn"] == tot.failed
    assert_locust_totals_equal(run)


def test_timeouts_and_error_statuses_are_counted_by_cause(app_factory: Any) -> None:
    slow = app_factory(WORKERS=50, SERVICE_MS=3000, SERVICE_DIST="constant", QUEUE_LIMIT=100)
    spec = LoadSpec(base_url=slow.url, profile=Profile.constant(20, 2), max_in_flight=100,
                    timeout_s=0.5)
    run, rec = run_load(spec)
    tot = run.totals()
    assert tot.ok == 0 and tot.failed == 40
    assert tot.failed_by_cause["timeout"] == 40
    # timeouts complete timeout_s after their intended time
    assert tot.histogram.percentile(50) == pytest.approx(500, rel=0.2)
    assert_locust_totals_equal(run)

    tiny = app_factory(WORKERS=1, SERVICE_MS=200, SERVICE_DIST="constant", QUEUE_LIMIT=0)
    spec = LoadSpec(base_url=tiny.url, profile=Profile.constant(40, 2), max_in_flight=100,
                    timeout_s=2)
    run, rec = run_load(spec)
    tot = run.totals()
    statuses: dict[int, int] = {}
    for s in rec.seconds:
        for code, n in s.failed_by_status.items():
            statuses[code] = statuses.get(code, 0) + n
    assert tot.failed >= 60  # one slot of 200 ms: ~5 of 40 per second can be served
    assert tot.failed_by_cause["status"] == tot.failed
    assert statuses == {503: tot.failed}
    assert tot.ok + tot.failed == 80
    assert_locust_totals_equal(run)


# -- distributed --------------------------------------------------------------------------------


def test_two_workers_merge_exactly_p95_matches_raw_latencies(app_factory: Any,
                                                             tmp_path: Path) -> None:
    app = app_factory(WORKERS=200, SERVICE_MS=10, SERVICE_DIST="exponential",
                      QUEUE_LIMIT=1000, SEED=3)
    spec = LoadSpec(base_url=app.url, profile=Profile.constant(300, 5), warmup_s=1,
                    warmup_rps=100, max_in_flight=200, workers=2,
                    raw_latencies_dir=str(tmp_path))
    run, rec = run_load(spec)
    contiguous(rec)
    assert all(s.workers_reporting == 2 and s.workers_alive == 2 for s in rec.seconds)
    files = sorted(tmp_path.glob("raw-*.txt"))
    assert len(files) == 2, "one raw file per worker"
    raw = sorted(float(x) for f in files for x in f.read_text().split())
    merged = Histogram()
    for s in rec.seconds:
        merged.merge(s.histogram)
    assert merged.total == len(raw) == run.totals().requests_all
    exact_p95 = raw[math.ceil(0.95 * len(raw)) - 1]  # nearest rank, as the histogram
    assert merged.percentile(95) == pytest.approx(exact_p95, rel=0.01)
    assert merged.max_ms == pytest.approx(raw[-1])
    assert_locust_totals_equal(run)
    by_t = {s.t_s: s for s in rec.seconds}
    assert sum(by_t[t].sent for t in range(5)) == pytest.approx(1500, rel=0.05)


def test_killed_worker_is_reported_and_the_others_data_is_kept(fast_app: App) -> None:
    spec = LoadSpec(base_url=fast_app.url, profile=Profile.constant(200, 10), warmup_s=1,
                    warmup_rps=100, max_in_flight=200, workers=2)
    rec = Recorded()
    run = LoadRun(spec, on_second=rec.on_second, on_event=rec.on_event)
    run.start()

    def first_of_two_workers() -> int:
        pid = run.pid
        assert pid is not None
        workers = psutil.Process(pid).children()
        assert len(workers) == 2
        return workers[0].pid

    try:
        victim, killed_at = kill_worker_at(run, 3.5, first_of_two_workers)
    finally:
        run.stop()
    by_t, k = assert_one_worker_lost(run, rec, victim, killed_at)
    assert all(by_t[t].workers_alive == 1 and by_t[t].workers_reporting == 1
               for t in range(k + 1, 10))
    assert all(by_t[t].sent > 0 and by_t[t].ok > 0 for t in range(10))
    # The survivor took over the lost share from a whole second soon after the loss.
    for t in range(k + 4, 10):
        assert by_t[t].sent + by_t[t].dropped == pytest.approx(200, abs=2), t


# -- honesty of the load generator ---------------------------------------------------------------


BURNING_LOCUSTFILE = '''
import time
from locust import task
from locust.contrib.fasthttp import FastHttpUser


class Burner(FastHttpUser):
    """Requests /work, then burns 15 ms of CPU: a load generator that cannot keep up."""

    @task
    def work(self):
        self.client.get("/work")
        end = time.process_time() + 0.015
        while time.process_time() < end:
            pass
'''


def test_saturated_load_generator_is_flagged(fast_app: App, tmp_path: Path) -> None:
    lf = tmp_path / "burner.py"
    lf.write_text(BURNING_LOCUSTFILE)
    # 100 slots/s x 15 ms of CPU = 1.5 cores of demand for a single-core process.
    spec = LoadSpec(base_url=fast_app.url, profile=Profile.constant(100, 6), max_in_flight=50,
                    locustfile=str(lf), timeout_s=3)
    run, rec = run_load(spec)
    tot = run.totals()
    assert tot.saturated and tot.saturated_reason
    assert "loadgen_saturated" in rec.kinds()
    assert any(s.saturated for s in rec.seconds)
    # (its CPU share may stay under 90% on a busy machine: waiting for a core counts too)
    assert max(s.loadgen_cpu_pct for s in rec.seconds) > 30
    # the user's own locustfile still gets the per-second recording
    assert tot.ok > 0
    assert_locust_totals_equal(run)


def test_users_locustfile_closed_model_counts_sent_through_its_client(fast_app: App,
                                                                      tmp_path: Path) -> None:
    lf = tmp_path / "mine.py"
    lf.write_text('''
from locust import HttpUser, constant, task


class Mine(HttpUser):
    wait_time = constant(0.05)

    @task
    def two_requests(self):
        self.client.get("/work")
        self.client.get("/healthz")
''')
    spec = LoadSpec(base_url=fast_app.url, model="closed", profile=Profile.constant(3, 3),
                    locustfile=str(lf))
    run, rec = run_load(spec)
    tot = run.totals()
    assert tot.ok > 20 and tot.failed == 0
    assert sum(s.sent for s in rec.seconds) == tot.requests_all  # every request counted
    assert_locust_totals_equal(run)


# -- lifecycle --------------------------------------------------------------------------------


def test_stop_mid_run_flushes_what_was_measured_and_leaves_no_process(fast_app: App) -> None:
    spec = LoadSpec(base_url=fast_app.url, profile=Profile.constant(100, 60), warmup_s=1,
                    warmup_rps=50, max_in_flight=100, workers=1)
    rec = Recorded()
    run = LoadRun(spec, on_second=rec.on_second, on_event=rec.on_event)
    run.start()
    sleep_until(run, 2.5)
    t = time.monotonic()
    run.stop()
    assert time.monotonic() - t < 20
    assert_no_process_left(run)
    contiguous(rec)
    assert rec.seconds[0].t_s == -1 and rec.seconds[-1].t_s >= 2
    assert_locust_totals_equal(run)


def test_a_broken_locustfile_fails_the_start_with_its_error(tmp_path: Path) -> None:
    lf = tmp_path / "broken.py"
    lf.write_text("def broken(:\n")
    spec = LoadSpec(base_url="http://127.0.0.1:9", profile=Profile.constant(10, 2),
                    locustfile=str(lf))
    run = LoadRun(spec, on_second=lambda s: None)
    with pytest.raises(LoadError, match=r"broken\.py failed to load: SyntaxError"):
        run.start()
    run.stop()
    assert_no_process_left(run)


def test_a_remote_worker_joins_through_the_masters_host_and_port(fast_app: App) -> None:
    port = free_port()
    # A "remote" worker: started by hand with only the master's address, as on another
    # machine; it gets the spec from the master and leaves when the run is over.
    remote = subprocess.Popen([sys.executable, "-m", "harness.load.child", "worker",
                               "--master-host", "127.0.0.1", "--master-port", str(port)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        spec = LoadSpec(base_url=fast_app.url, profile=Profile.constant(100, 3), workers=1,
                        remote_workers=1, master_bind=f"127.0.0.1:{port}", max_in_flight=100)
        run, rec = run_load(spec)
        assert run.master_address == f"127.0.0.1:{port}"
        assert all(s.workers_reporting == 2 for s in rec.seconds)
        assert sum(s.sent for s in rec.seconds) == 300
        assert_locust_totals_equal(run)
        assert remote.wait(timeout=20) == 0
    finally:
        if remote.poll() is None:
            remote.kill()
            remote.wait()
