"""The harness's side of load generation: start the Locust child process(es), read their
per-second records, stop them for sure.

No Locust here (it monkey-patches the interpreter with gevent): the load runs in a child
process, ``python -m harness.load.child``, started in its own process group. With
``workers: N`` that child is a Locust master that starts N local worker processes in the
same group (remote workers may join it too). The child writes one JSON object per line to a
pipe: ``t0`` once (load t=0 on the shared monotonic clock), ``second`` for every complete
second, ``event`` for what the run must know (a worker lost, the generator saturated) and
``end`` with Locust's own totals.

    spec = LoadSpec(base_url="http://127.0.0.1:8080",
                    profile=Profile.from_stages([(10, 100, 0), (10, 600, 1), (10, 100, 1)]))
    run = LoadRun(spec, on_second=print)
    run.start()            # returns once the load's t=0 is known: run.t0_monotonic
    run.wait()             # until the profile (plus drain) is over
    run.stop()             # always (idempotent): graceful, then SIGKILL to the group
    run.totals()
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from harness.errors import HarnessError, ScenarioError
from harness.load.profile import Profile, ProfileError, StageSpec
from harness.load.stats import CAUSES, SecondStats, to_second_stats
from harness.record.histogram import Histogram

if TYPE_CHECKING:
    from harness.scenario.loader import LoadedScenario

log = logging.getLogger("harness.load")

START_TIMEOUT_S = 90.0  # spawn the pool, connect workers; generous on a busy 2-core box


class LoadError(HarnessError):
    """The load generator could not start or died; the message carries its log's tail."""


# Where the LB picks a replica per connection (kube-proxy), the default request closes its
# connection after this many requests, as many clients' short connections would, so replicas
# added during a trial get their share (docs/architecture.md, "Kubernetes").
REQUESTS_PER_CONNECTION_DEFAULTS = {"kubernetes": 10}


def requests_per_connection(configured: int | None, platform: str) -> int | None:
    """The scenario's `load.requests_per_connection`, else the platform's default."""
    return REQUESTS_PER_CONNECTION_DEFAULTS.get(platform) if configured is None else configured


@dataclass
class LoadSpec:
    """Everything the load child needs; plain data, serialised to JSON for it.

    Open model: ``profile`` is the request rate (rps) over time and requests are sent at
    intended times whatever the system's speed, at most ``max_in_flight`` at once (a slot
    no free user can take is *dropped*, and counted). Closed model: ``users`` (or
    ``profile``) is the number of users over time, each sending, waiting for the answer,
    then thinking ``think_time_s``. Warm-up runs ``warmup_s`` before t=0 at ``warmup_rps``
    (users in the closed model); its seconds are reported with negative ``t_s``.
    """

    base_url: str
    profile: Profile
    path: str = "/work"
    model: Literal["open", "closed"] = "open"
    users: Profile | None = None
    think_time_s: float = 1.0
    max_in_flight: int = 1000
    timeout_s: float = 5.0
    warmup_s: float = 0.0
    warmup_rps: float = 0.0
    workers: int = 0  # 0: one load process; N: a Locust master + N local worker processes
    remote_workers: int = 0  # extra workers the master waits for (they join master_bind)
    master_bind: str | None = None  # "host:port" for the master; default 127.0.0.1:<free>
    remote_workers_timeout_s: float = 60.0  # how long the master waits for remote workers
    locustfile: str | None = None  # a user's locustfile replaces the default request
    # the default request closes its connection after this many (None: keep-alive, no limit)
    requests_per_connection: int | None = None
    seed: int = 1
    arrival: Literal["uniform", "poisson"] = "uniform"
    start_timeout_s: float = START_TIMEOUT_S
    log_path: str | None = None  # the child's log; default: a file in a temp folder
    # Validation aid: every load process writes each request's latency (ms, one a line)
    # to raw-<pid>.txt in this folder when it finishes. Costs memory: tests only.
    raw_latencies_dir: str | None = None
    # the run these processes belong to: they carry it as HARNESS_RUN in their environment,
    # so `harness clean` finds them if the harness itself is SIGKILLed
    run_id: str | None = None

    def __post_init__(self) -> None:
        if self.model not in ("open", "closed"):
            raise ValueError(f"model {self.model!r}: use 'open' or 'closed'")
        if self.arrival not in ("uniform", "poisson"):
            raise ValueError(f"arrival {self.arrival!r}: use 'uniform' or 'poisson'")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url {self.base_url!r} must start with http:// or https://")
        if self.max_in_flight < 1 or self.timeout_s <= 0 or self.workers < 0:
            raise ValueError("max_in_flight >= 1, timeout_s > 0 and workers >= 0 please")
        if self.remote_workers < 0 or self.remote_workers_timeout_s <= 0:
            raise ValueError("remote_workers >= 0 and remote_workers_timeout_s > 0 please")
        if self.max_in_flight < self.workers + self.remote_workers:
            raise ValueError("max_in_flight must give every worker at least one user")

    @property
    def users_profile(self) -> Profile:
        return self.users or self.profile

    @property
    def driving_profile(self) -> Profile:
        """The profile the run follows (rps, or users in the closed model), warm-up first."""
        base = self.profile if self.model == "open" else self.users_profile
        return base.with_warmup(self.warmup_s, self.warmup_rps)

    @property
    def duration_s(self) -> float:
        base = self.profile if self.model == "open" else self.users_profile
        return base.end_s

    def offered_in(self, s: int) -> float | None:
        """The profile's intended arrivals in second s (None in the closed model)."""
        if self.model != "open":
            return None
        return self.driving_profile.arrivals_between(float(s), float(s + 1))

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["profile"] = self.profile.to_dict()
        d["users"] = self.users.to_dict() if self.users else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadSpec:
        d = dict(d)
        d["profile"] = Profile.from_dict(d["profile"])
        d["users"] = Profile.from_dict(d["users"]) if d.get("users") else None
        return cls(**d)

    @classmethod
    def from_scenario(cls, loaded: LoadedScenario, *, base_url: str, workers: int | None = None,
                      seed: int | None = None, **overrides: Any) -> LoadSpec:
        """The scenario's ``load`` block (stages or a trace) and ``app.path`` as a spec.

        The first stage ramps from the warm-up rate (so a warm-up at 50 rps followed by
        "ramp to 500 over 30 s" starts at 50); without warm-up it ramps from 0.
        ``workers`` (the CLI's ``--workers``) overrides the scenario's.
        """
        sc = loaded.scenario
        lp = sc.load
        try:
            if lp.trace:
                base = Profile.from_csv(loaded.resolve(lp.trace))
                first = base.rate_at(0.0)
            else:
                targets = [float(s.rps if lp.model == "open" else s.users or 0)
                           for s in lp.stages]
                first = targets[0]
                warm = float(lp.warmup_rps if lp.warmup_rps is not None else first)
                start = warm if lp.warmup_s > 0 else 0.0
                base = Profile.from_stages(
                    [StageSpec(s.duration_s, tgt, s.ramp_s)
                     for s, tgt in zip(lp.stages, targets, strict=True)], start_value=start)
        except ProfileError as e:
            raise ScenarioError(str(e), file=str(loaded.path), key="load") from e
        warmup_rps = float(lp.warmup_rps if lp.warmup_rps is not None else first)
        kw: dict[str, Any] = dict(
            base_url=base_url, path=sc.app.path, model=lp.model,
            profile=base, users=base if lp.model == "closed" else None,
            think_time_s=lp.think_time_s, max_in_flight=lp.max_in_flight,
            timeout_s=lp.timeout_s, warmup_s=float(lp.warmup_s), warmup_rps=warmup_rps,
            workers=lp.workers if workers is None else workers,
            locustfile=str(loaded.resolve(lp.locustfile)) if lp.locustfile else None,
            seed=sc.seed if seed is None else seed,
            remote_workers=lp.remote_workers,
            requests_per_connection=lp.requests_per_connection,
            remote_workers_timeout_s=lp.remote_workers_timeout_s,
            master_bind=_master_bind(lp.master_bind, lp.master_port, lp.remote_workers),
        )
        kw.update(overrides)
        return cls(**kw)


@dataclass
class LoadTotals:
    """Sums over the run's seconds. ``ok``/``failed``/``histogram`` cover t >= 0 (warm-up
    excluded, the drain after the profile included); ``*_all`` every second, which is what
    Locust's own totals count."""

    seconds: int = 0
    offered: float = 0.0
    sent: int = 0
    dropped: int = 0
    ok: int = 0
    failed: int = 0
    failed_by_cause: dict[str, int] = field(default_factory=lambda: {c: 0 for c in CAUSES})
    histogram: Histogram = field(default_factory=Histogram)
    warmup_requests: int = 0
    requests_all: int = 0
    failed_all: int = 0
    locust_requests: int | None = None
    locust_failures: int | None = None
    saturated: bool = False
    saturated_reason: str = ""
    workers_lost: list[str] = field(default_factory=list)
    complete: bool = False  # the child finished and reported its end

    @property
    def requests(self) -> int:
        return self.ok + self.failed


class LoadRun:
    """One load generation: a child process (group) streaming per-second records.

    ``on_second`` and ``on_event`` are called from a reader thread, in order. Event kinds:
    ``worker_lost``, ``loadgen_saturated``, ``warning``, ``worker_joined``, ``load_end``.
    """

    def __init__(self, spec: LoadSpec, on_second: Callable[[SecondStats], None],
                 on_event: Callable[[str, str], None] | None = None,
                 on_waiting: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self._on_second = on_second
        self._on_event = on_event
        # told once the master listens and waits for remote workers: what to run where
        self._on_waiting = on_waiting
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._t0: float | None = None
        self._t0_ready = threading.Event()
        self._finished = threading.Event()  # the pipe closed (child and workers gone)
        self._lock = threading.Lock()
        self._totals = LoadTotals()
        self._end: dict[str, Any] | None = None
        self._callback_error: BaseException | None = None
        self._child_errors: list[str] = []
        self._stopped = False
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self.log_path: Path | None = None
        self.master_address: str | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the child; return once it reported the load's t=0 (after spawning the
        user pool and connecting the workers). Raises LoadError if it cannot start."""
        if self._proc is not None:
            raise LoadError("this LoadRun was already started")
        self._tmpdir = tempfile.TemporaryDirectory(prefix="harness-load-")
        tmp = Path(self._tmpdir.name)
        spec_path = tmp / "spec.json"
        spec_path.write_text(json.dumps(self.spec.to_dict()), encoding="utf-8")
        self.log_path = Path(self.spec.log_path) if self.spec.log_path else tmp / "load.log"
        r, w = os.pipe()
        from harness.platforms.local.local_procs import labelled_env

        env = labelled_env(dict(os.environ, PYTHONUNBUFFERED="1"), self.spec.run_id)
        with open(self.log_path, "ab") as logf:
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "harness.load.child", "run", str(spec_path),
                     "--fd", str(w), "--parent-pid", str(os.getpid())],
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    pass_fds=(w,), start_new_session=True, env=env, close_fds=True)
            finally:
                os.close(w)
        atexit.register(self._kill_group)
        self._reader = threading.Thread(target=self._read, args=(r,), name="load-reader",
                                        daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.spec.start_timeout_s + 10
        if self.spec.remote_workers:
            deadline += self.spec.remote_workers_timeout_s
        while not self._t0_ready.wait(0.1):
            if self._finished.is_set() or time.monotonic() > deadline:
                why = ("exited" if self._finished.is_set()
                       else f"did not start within {self.spec.start_timeout_s:.0f} s")
                self.stop()
                raise LoadError(f"load generator {why}: {self._why()}")

    @property
    def t0_monotonic(self) -> float:
        """time.monotonic() at load t=0 (the end of warm-up), shared with the child."""
        if self._t0 is None:
            raise LoadError("the load has not started")
        return self._t0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and not self._finished.is_set()

    def wait(self, timeout: float | None = None, stop: threading.Event | None = None) -> bool:
        """Until the load finished (True), ``timeout`` passed or ``stop`` was set (False).
        Raises LoadError when the generator died without finishing."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._finished.wait(0.2):
            if stop is not None and stop.is_set():
                return False
            if deadline is not None and time.monotonic() > deadline:
                return False
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
        if self._callback_error is not None:
            err, self._callback_error = self._callback_error, None
            raise err
        if self._end is None and not self._stopped:
            raise LoadError(f"load generator ended without finishing (exit code "
                            f"{self._proc.returncode if self._proc else '?'}): {self._why()}")
        return True

    def stop(self, grace_s: float | None = None) -> None:
        """Finish now: ask the child to stop (it flushes the seconds it has), then SIGKILL
        the whole process group. Safe to call twice, and after the run ended by itself."""
        self._stopped = True
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            grace = self.spec.timeout_s + 15 if grace_s is None else grace_s
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        self._kill_group()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)
        atexit.unregister(self._kill_group)

    def _kill_group(self) -> None:
        # The child leads its own session: its pid is the group id, workers included.
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)

    def totals(self) -> LoadTotals:
        with self._lock:
            t = self._totals
            return LoadTotals(**{**t.__dict__, "failed_by_cause": dict(t.failed_by_cause),
                                 "histogram": Histogram().merge(t.histogram),
                                 "workers_lost": list(t.workers_lost)})

    # -- the child's stream -----------------------------------------------------------------

    def _read(self, fd: int) -> None:
        try:
            with os.fdopen(fd, "rb") as f:
                for raw in f:
                    try:
                        msg = json.loads(raw)
                    except ValueError:
                        log.warning("load child wrote an unreadable line: %r", raw[:200])
                        continue
                    self._handle(msg)
        finally:
            self._finished.set()

    def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "t0":
            self._t0 = float(msg["t0_monotonic"])
            self.master_address = msg.get("master")
            self._t0_ready.set()
        elif kind == "master":
            self.master_address = str(msg["address"])
            n = int(msg.get("remote_workers", 0))
            if n:
                text = (f"waiting up to {float(msg.get('timeout_s', 0)):g} s for {n} remote "
                        f"load worker{'s' if n > 1 else ''}: on each machine run  "
                        f"{worker_command(self.master_address)}")
                if self._on_waiting is not None:
                    self._call(self._on_waiting, text)
                else:
                    log.warning("%s", text)
        elif kind == "second":
            s = to_second_stats(msg, msg.get("offered"), int(msg.get("workers_alive", 1)))
            self._account(s)
            self._call(self._on_second, s)
        elif kind == "event":
            ev, detail = str(msg.get("kind")), str(msg.get("detail", ""))
            with self._lock:
                if ev == "worker_lost":
                    self._totals.workers_lost.append(detail)
                elif ev == "loadgen_saturated":
                    self._totals.saturated = True
                    self._totals.saturated_reason = self._totals.saturated_reason or detail
            if ev in ("worker_lost", "loadgen_saturated", "error"):
                log.warning("load generator: %s: %s", ev, detail)
            if ev == "error":
                self._child_errors.append(detail)
            if self._on_event is not None:
                self._call(self._on_event, ev, detail)
        elif kind == "end":
            self._end = msg
            with self._lock:
                self._totals.locust_requests = msg.get("locust_requests")
                self._totals.locust_failures = msg.get("locust_failures")
                self._totals.complete = True
                if msg.get("saturated"):
                    self._totals.saturated = True

    def _account(self, s: SecondStats) -> None:
        with self._lock:
            t = self._totals
            t.requests_all += s.requests
            t.failed_all += s.failed
            if s.saturated:
                t.saturated = True
            if s.t_s < 0:
                t.warmup_requests += s.requests
                return
            t.seconds = max(t.seconds, s.t_s + 1)
            t.offered += s.offered
            t.sent += s.sent
            t.dropped += s.dropped
            t.ok += s.ok
            t.failed += s.failed
            for c, n in s.failed_by_cause.items():
                t.failed_by_cause[c] = t.failed_by_cause.get(c, 0) + n
            t.histogram.merge(s.histogram)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        # A failing callback must not stop the reading (the child would block on a full
        # pipe); the first error is raised again from wait().
        try:
            fn(*args)
        except BaseException as e:
            log.exception("load callback failed")
            if self._callback_error is None:
                self._callback_error = e

    def _why(self) -> str:
        parts = list(self._child_errors)
        tail = self.log_tail()
        if tail:
            parts.append("log tail:\n" + tail)
        return "\n".join(parts) or "no output"

    def log_tail(self, lines: int = 25) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def worker_command(bind: str) -> str:
    """What a user runs on another machine to join the master listening on ``bind``."""
    host, _, port = bind.rpartition(":")
    if host in ("0.0.0.0", "::", "*", ""):
        import socket

        host = socket.getfqdn()  # all interfaces: this machine's name is a good guess
    return f"harness worker --master {host}:{port}"


def _master_bind(host: str, port: int | None, remote_workers: int) -> str | None:
    """The master's "host:port" (None: the child's default, loopback on a free port); chosen
    here for remote workers, so the harness can print their command before it listens."""
    if port is None and host == "127.0.0.1" and not remote_workers:
        return None
    return f"{host}:{port or free_port(host)}"


def seconds_span(spec: LoadSpec) -> tuple[int, int]:
    """First and last second the run reports at least (warm-up first, profile end last)."""
    first = -math.ceil(spec.warmup_s) if spec.warmup_s > 0 else 0
    return first, math.ceil(spec.duration_s) - 1
