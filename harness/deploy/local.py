"""The `local` platform: replicas as host processes, HAProxy and Prometheus as host processes.

This is what `harness run spike.yaml` uses when no Docker engine answers (docs/architecture.md,
"Strategies"). One `LocalDeployer` runs one strategy kind and emulates its Docker
counterpart (the rules themselves are pure functions in `local_policy.py`):

| kind         | a crashed replica                                   | id after a restart |
| ------------ | --------------------------------------------------- | ------------------ |
| manual       | stays dead (listed EXITED; desired stays N)          | —                  |
| compose      | restarted after Docker's back-off (0.1 s doubling…)  | same, restarts + 1 |
| orchestrated | replaced by a new replica after `restart_delay_s`    | new (a new task)   |

Each replica is `spec.app.command` (default `python -m sample_app`) with PORT (a free
port on 127.0.0.1), HOST=127.0.0.1 and REPLICA_ID in its environment, in its own process
group, logging to `<workdir>/logs/<replica>.log`. A background thread (`_tick`, every
0.1 s) notices exits, starts due restarts, polls `/readyz` (STARTING → READY), pushes the
replica set to HAProxy over its runtime API (`local_haproxy.py` says why not reloads) and
to Prometheus' file_sd targets file (`local_prometheus.py`). `replicas()` carries the
details the run loop's `ReplicaWatcher` turns into lifecycle events (wall-clock start and
ready times, Docker-style exit code, address), and `lb_servers()` HAProxy's per-slot view.

Faults: `crash` is SIGKILL of the replica's process group (what the kernel does to a
container whose main process is SIGKILLed); `kill` is the same signal but marks the
replica stopped for good, so no restart policy undoes it; `pause`/`unpause` are
SIGSTOP/SIGCONT (a frozen process still accepts TCP, as a paused container does).
HAProxy learns of crashes and freezes the way it would on Docker: by its health checks,
with retries and redispatch absorbing most of the failed attempts; the deployer tells it
only about topology (a new replica ready, a replica removed or replaced).

`teardown()` is idempotent, SIGCONTs paused replicas, ends every process group it
started (SIGTERM, then SIGKILL after 2 s), and removes the work directory; an `atexit`
hook does the same if the harness exits without calling it.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.clock import Clock
from harness.deploy import haproxy, local_haproxy, local_prometheus
from harness.deploy.base import DeployEvent, DeploySpec, EventSink, Replica, ReplicaState
from harness.deploy.local_policy import (
    KINDS,
    Kind,
    counts_toward_scale,
    on_exit,
    plan_scale,
)
from harness.deploy.local_procs import (
    child_env,
    exit_description,
    free_port,
    signal_group,
    spawn,
    stop_groups,
    tail,
    wait_tcp,
)
from harness.errors import DeployError, HarnessError, PrerequisiteError

TICK_S = 0.1  # how often exits, due restarts and starting replicas are looked at
READY_RECHECK_S = 0.5  # how often a READY replica's readiness is polled again
STARTING_PROBE_TIMEOUT_S = 0.3
READY_PROBE_TIMEOUT_S = 0.5
NOT_READY_AFTER = 2  # consecutive failed polls before a READY replica counts as not ready
SCALE_DOWN_GRACE_S = 2.0  # SIGTERM, then SIGKILL after this long
TEARDOWN_GRACE_S = 2.0
UNIX_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux; stay clear of it


@dataclass
class _Rep:
    """One replica as the deployer tracks it (mutable; guarded by the deployer's lock)."""

    id: str
    slot: int  # HAProxy server slot rN
    port: int
    proc: subprocess.Popen[bytes] | None = None
    state: ReplicaState = ReplicaState.STARTING
    restarts: int = 0
    incarnation: int = 0  # bumps on every (re)start: late probe results are discarded
    started_at: float = 0.0  # clock.now() of the current (re)start
    started_wall: float | None = None  # the same on the wall clock (Replica.started_at)
    ready_wall: float | None = None  # first readiness success since started_wall
    exit_code: int | None = None  # Docker-style: 128 + signal for a signalled exit
    exited_at: float | None = None
    due_at: float | None = None  # when a restart / replacement is due
    backoff_s: float = 0.0  # Docker back-off state (compose)
    stopped_for_good: bool = False
    pre_pause_state: ReplicaState = ReplicaState.READY
    in_lb: bool = False  # HAProxy slot enabled (from the first READY on)
    force_up: bool = False  # tell HAProxy "health up" at the next sync
    last_probe_at: float = -1e9
    failed_probes: int = 0


def docker_exit_code(returncode: int) -> int:
    """Popen's -N (killed by signal N) as Docker reports it: 128 + N (SIGKILL → 137)."""
    return 128 - returncode if returncode < 0 else returncode


def default_command() -> tuple[str, ...]:
    return (sys.executable, "-m", "sample_app")


def _probe(port: int, path: str, timeout_s: float) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return 200 <= resp.status < 300
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class LocalDeployer:
    """Deployer + FaultTarget on local processes (see the module docstring)."""

    platform = "local"

    def __init__(self, spec: DeploySpec, kind: str, on_event: EventSink, clock: Clock,
                 restart_delay_s: float = 1.0, haproxy_bin: str | None = None,
                 prometheus_bin: str | None = None, workdir: Path | None = None, *,
                 use_prometheus: bool = True, max_replicas: int = 64,
                 deploy_timeout_s: float = 30.0, balance: str = "leastconn",
                 server_timeout_s: float = 5.0, keep_workdir: bool = False,
                 emit_replica_events: bool = False, client: Any = None) -> None:
        """`haproxy_bin`/`prometheus_bin` default to what `shutil.which` finds; with no
        Prometheus binary (or `use_prometheus=False`) `prometheus_url()` is None and the
        autoscaler scrapes replicas directly (`metrics_targets()`). `workdir` is the
        parent of the per-trial directory this deployer creates and removes. `client` is
        accepted (and ignored) so the registry can call every platform alike.

        Replica lifecycle events: the run loop's `ReplicaWatcher` derives them from
        `replicas()` (whose started_at / ready_at / exit_code / address this deployer
        fills) for every platform alike, so by default this deployer sends only
        `deployed`, `scale_applied` and `torn_down`, as the Docker deployers do.
        `emit_replica_events=True` adds its own replica_started / replica_ready /
        replica_exited / replica_restarted events, stamped when they happened — for use
        without a watcher (doubling them with one would count every event twice)."""
        if kind not in KINDS:
            raise DeployError(f"unknown strategy kind {kind!r} (one of {', '.join(KINDS)})")
        self.kind: Kind = kind  # type: ignore[assignment]
        self.spec = spec
        self._on_event = on_event
        self._clock = clock
        self.restart_delay_s = restart_delay_s
        self.haproxy_bin = haproxy_bin or shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.prometheus_bin = (prometheus_bin or shutil.which("prometheus")) \
            if use_prometheus else None
        self._workdir_parent = workdir
        self.max_replicas = max_replicas
        self.deploy_timeout_s = deploy_timeout_s
        self.balance = balance
        self.server_timeout_s = server_timeout_s
        self.keep_workdir = keep_workdir
        self.emit_replica_events = emit_replica_events
        self.command: tuple[str, ...] = tuple(spec.app.command or default_command())

        self._lock = threading.RLock()
        self._event_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._teardown_lock = threading.Lock()
        self._stop = threading.Event()
        self._reps: list[_Rep] = []
        self._seq = 0
        self._desired = spec.replicas
        self._events: list[DeployEvent] = []
        self._all_procs: list[subprocess.Popen[bytes]] = []
        self._stoppers: list[threading.Thread] = []
        self._lb_applied: dict[int, tuple[int, bool]] = {}
        self._targets_applied: dict[str, int] | None = None
        self._monitor: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._deployed = False
        self._deploy_done = False
        # replicas that exited before ever becoming ready while deploy() waited
        self._early_exits: list[tuple[str, str]] = []
        self._torn_down = False
        self.root: Path | None = None
        self._socket_dir: Path | None = None
        self._haproxy: subprocess.Popen[bytes] | None = None
        self._prometheus: subprocess.Popen[bytes] | None = None
        self._api: haproxy.RuntimeAPI | None = None
        self._lb_port = 0
        self._exporter_port = 0
        self._prom_port = 0
        self.last_sync_error: str | None = None
        # seconds from a replica's (re)start to its first READY, in order of readiness
        self.start_to_ready_s: list[float] = []

    # ── Deployer ────────────────────────────────────────────────────────────────────
    def deploy(self) -> None:
        if self._deployed or self._torn_down:
            raise DeployError("a LocalDeployer deploys once; create a new one per trial")
        if not (os.path.isfile(self.haproxy_bin) and os.access(self.haproxy_bin, os.X_OK)):
            raise PrerequisiteError(
                f"the local platform needs HAProxy; {self.haproxy_bin} is not an executable "
                "(apt-get install haproxy, or run scripts/setup.sh)")
        if self.spec.replicas > self.max_replicas:
            raise DeployError(f"{self.spec.replicas} replicas exceed the local platform's "
                              f"pool of {self.max_replicas} load-balancer slots")
        self._deployed = True
        atexit.register(self._atexit_teardown)
        t0 = self._clock.now()
        try:
            self._deploy()
        except BaseException as e:
            self.teardown()
            if isinstance(e, HarnessError):
                raise
            if isinstance(e, Exception):
                raise DeployError(f"local {self.kind} deploy failed: {e}") from e
            raise
        self._emit_deploy_event("deployed", f"replicas={self.spec.replicas} lb={self.lb_url()} "
                                            f"took_s={self._clock.now() - t0:.2f}")

    def _deploy(self) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.spec.trial_id)[:40]
        parent = self._workdir_parent
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=f"harness-local-{safe}-", dir=parent))
        (self.root / "logs").mkdir()
        deadline = self._clock.now() + self.deploy_timeout_s

        sock = self.root / "haproxy.sock"
        if len(str(sock)) > UNIX_SOCKET_MAX:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="hx-", dir="/tmp"))
            sock = self._socket_dir / "haproxy.sock"
        self._lb_port, self._exporter_port = free_port(), free_port()

        # Prometheus first: it is the slowest to start, and starts while the rest does.
        if self.prometheus_bin:
            self._prom_port = free_port()
            targets = self.root / "targets.json"
            local_prometheus.write_targets(targets, {})
            self._targets_applied = {}
            cfg = self.root / "prometheus.yml"
            cfg.write_text(local_prometheus.render_config(
                targets_file=targets, exporter_port=self._exporter_port,
                metrics_path=self.spec.app.metrics_path))
            (self.root / "prometheus-data").mkdir()
            self._prometheus = self._spawn_aux(
                local_prometheus.command(self.prometheus_bin, config_file=cfg,
                                         storage_dir=self.root / "prometheus-data",
                                         port=self._prom_port),
                self.root / "prometheus.log")

        hcfg = self.root / "haproxy.cfg"
        hcfg.write_text(local_haproxy.render_config(local_haproxy.HAProxyConfig(
            lb_port=self._lb_port, exporter_port=self._exporter_port, stats_socket=sock,
            max_servers=self.max_replicas,
            settings=replace(local_haproxy.LOCAL_SETTINGS, ready_path=self.spec.app.ready_path,
                             balance=self.balance, server_timeout_s=self.server_timeout_s))))
        self._haproxy = self._spawn_aux([self.haproxy_bin, "-db", "-f", str(hcfg)],
                                        self.root / "haproxy.log")
        self._api = local_haproxy.runtime_api(sock)
        if not self._api.wait_answers(min(10.0, self.deploy_timeout_s)) or \
                not wait_tcp("127.0.0.1", self._lb_port, 2.0):
            raise DeployError("HAProxy did not start: "
                              + (tail(self.root / "haproxy.log", 600) or "no output"))

        with self._lock:
            for _ in range(self.spec.replicas):
                self._add_replica_locked()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="local-probe")
        self._monitor = threading.Thread(target=self._run_monitor, name="local-deployer",
                                         daemon=True)
        self._monitor.start()
        self._flush_events()
        self._wait_deployed(deadline)

    def _wait_deployed(self, deadline: float) -> None:
        """All replicas READY and in HAProxy's rotation, Prometheus ready; or DeployError."""
        assert self._api is not None and self.root is not None
        while True:
            with self._lock:
                reps = list(self._reps)
                early = list(self._early_exits)
                ready_ports = {r.port for r in reps if r.state == ReplicaState.READY}
            if early:
                # fail fast: a command that cannot start would only crash-loop until the
                # timeout (compose) or never come back (manual)
                rid, how = early[0]
                raise DeployError(f"replica {rid} exited during deploy ({how}): "
                                  + (tail(self.root / "logs" / f"{rid}.log", 600)
                                     or "no output"))
            if len(ready_ports) == len(reps):
                try:
                    up = haproxy.up_ports(self._api.servers_state())
                except OSError:
                    up = set()
                if ready_ports <= up and self._prometheus_ready():
                    self._deploy_done = True
                    return
            if self._haproxy is not None and self._haproxy.poll() is not None:
                raise DeployError("HAProxy exited: " + tail(self.root / "haproxy.log", 600))
            if self._prometheus is not None and self._prometheus.poll() is not None:
                raise DeployError("Prometheus exited: "
                                  + tail(self.root / "prometheus.log", 600))
            if self._clock.now() > deadline:
                raise DeployError(
                    f"local {self.kind}: {len(ready_ports)} of {len(reps)} replicas ready "
                    f"(Prometheus {'ready' if self._prometheus_ready() else 'not ready'}) "
                    f"after {self.deploy_timeout_s:.0f} s")
            time.sleep(0.05)

    def _prometheus_ready(self) -> bool:
        if self._prometheus is None:
            return True
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self._prom_port, timeout=1.0)
            try:
                conn.request("GET", "/-/ready")
                return conn.getresponse().status == 200
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return False

    def scale(self, replicas: int) -> None:
        if replicas < 0 or replicas > self.max_replicas:
            raise DeployError(f"cannot scale to {replicas}: the local platform takes "
                              f"0..{self.max_replicas} replicas")
        self._require_running()
        t0 = self._clock.now()
        to_stop: list[_Rep] = []
        with self._lock:
            old = self._desired
            self._desired = replicas
            members = [r for r in self._reps if counts_toward_scale(
                self.kind, alive=r.state != ReplicaState.EXITED,
                stopped_for_good=r.stopped_for_good)]
            plan = plan_scale([r.id for r in members], replicas)
            free = self.max_replicas - len(self._reps) + len(plan.remove)
            if plan.add > free:
                self._desired = old
                raise DeployError(f"no free load-balancer slot for {plan.add} more replicas "
                                  f"(pool of {self.max_replicas})")
            for rid in plan.remove:
                rep = next(r for r in self._reps if r.id == rid)
                self._reps.remove(rep)
                rep.stopped_for_good = True
                rep.due_at = None
                if rep.proc is not None and rep.state != ReplicaState.EXITED:
                    to_stop.append(rep)
            for _ in range(plan.add):
                self._add_replica_locked()
        # Removed replicas leave HAProxy (maint) before they are asked to stop, so no new
        # request reaches a process that is shutting down.
        self._sync()
        if to_stop:
            t = threading.Thread(target=self._stop_removed, args=(to_stop,),
                                 name="local-scale-down", daemon=True)
            with self._lock:
                self._stoppers.append(t)
            t.start()
        self._flush_events()
        self._emit_deploy_event("scale_applied", f"from={old} to={replicas} "
                                                 f"command_s={self._clock.now() - t0:.2f}")

    def desired(self) -> int:
        with self._lock:
            return self._desired

    def replicas(self) -> list[Replica]:
        with self._lock:
            return [Replica(id=r.id, name=r.id, state=r.state, restarts=r.restarts,
                            started_at=r.started_wall, ready_at=r.ready_wall,
                            exit_code=r.exit_code if r.state == ReplicaState.EXITED else None,
                            address=f"127.0.0.1:{r.port}")
                    for r in self._reps]

    def crash(self, replica_id: str) -> None:
        self._sigkill(replica_id, for_good=False)

    def lb_url(self) -> str:
        return f"http://127.0.0.1:{self._lb_port}"

    def prometheus_url(self) -> str | None:
        return f"http://127.0.0.1:{self._prom_port}" if self._prometheus is not None else None

    def teardown(self, keep: bool = False) -> None:
        """End every process this deployer started; remove its work directory.

        Idempotent; safe after a failed or partial deploy and from the atexit hook.
        """
        with self._teardown_lock:
            if self._torn_down:
                return
            self._torn_down = True
        self._stop.set()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(timeout=5)
        with self._lock:
            procs = list(self._all_procs)
            stoppers = list(self._stoppers)
        # stop_groups sends SIGCONT first: a paused replica could not act on SIGTERM.
        stop_groups(procs, grace_s=TEARDOWN_GRACE_S)
        for t in stoppers:
            t.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._flush_events()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        if self.root is not None and not (keep or self.keep_workdir):
            shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self._atexit_teardown)
        if self._deployed:
            left = [p.pid for p in procs if p.returncode is None]
            self._emit_deploy_event("torn_down", f"left_running={left}" if left else "")

    # ── FaultTarget ─────────────────────────────────────────────────────────────────
    def kill(self, replica_id: str) -> None:
        self._sigkill(replica_id, for_good=True)

    def pause(self, replica_id: str) -> None:
        with self._lock:
            rep = self._live(replica_id)
            if rep.state == ReplicaState.PAUSED:
                return
            assert rep.proc is not None
            signal_group(rep.proc, signal.SIGSTOP)
            rep.pre_pause_state = rep.state
            rep.state = ReplicaState.PAUSED

    def unpause(self, replica_id: str) -> None:
        with self._lock:
            rep = self._find(replica_id)
            if rep is None or rep.state != ReplicaState.PAUSED or rep.proc is None:
                return  # gone or crashed meanwhile: nothing is frozen any more
            signal_group(rep.proc, signal.SIGCONT)
            # the next readiness poll confirms or corrects this
            rep.state = rep.pre_pause_state
            rep.last_probe_at = -1e9

    # ── extras for the autoscaler's metric sources and the tests ───────────────────
    def instance_of(self, replica: str | Replica) -> str:
        """Prometheus' `instance` label of a replica: "127.0.0.1:PORT" (KeyError if gone)."""
        return f"127.0.0.1:{self._port_of(replica)}"

    def metrics_url_of(self, replica: str | Replica) -> str:
        """http://127.0.0.1:PORT/metrics of a replica (KeyError if it is gone)."""
        return f"http://127.0.0.1:{self._port_of(replica)}{self.spec.app.metrics_path}"

    def metrics_targets(self) -> dict[str, str]:
        """replica id → metrics URL of every replica with a live process, one snapshot."""
        with self._lock:
            return {r.id: f"http://127.0.0.1:{r.port}{self.spec.app.metrics_path}"
                    for r in self._reps if r.state != ReplicaState.EXITED}

    def lb_ready_replicas(self) -> set[str]:
        """Ids of the replicas HAProxy is sending traffic to right now (runtime API)."""
        if self._api is None:
            return set()
        up = haproxy.up_ports(self._api.servers_state())
        with self._lock:
            return {r.id for r in self._reps if r.in_lb and r.port in up}

    def lb_servers(self) -> list[haproxy.ServerStat]:
        """HAProxy's view of its server slots (`show stat`); [] when it is not running."""
        return [] if self._torn_down else haproxy.servers_of(self._api)

    def haproxy_exporter_url(self) -> str:
        return f"http://127.0.0.1:{self._exporter_port}/metrics"

    def pids(self) -> list[int]:
        """Every process (group leader) this deployer started, for leak checks."""
        with self._lock:
            return [p.pid for p in self._all_procs]

    # ── internals ──────────────────────────────────────────────────────────────────
    def _atexit_teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.teardown()

    def _require_running(self) -> None:
        if not self._deployed or self._torn_down:
            raise DeployError("the local deployer is not running (deploy first)")

    def _find(self, replica_id: str) -> _Rep | None:
        return next((r for r in self._reps if r.id == replica_id), None)

    def _live(self, replica_id: str) -> _Rep:
        rep = self._find(replica_id)
        if rep is None or rep.proc is None or rep.state == ReplicaState.EXITED:
            raise DeployError(f"replica {replica_id} is not running")
        return rep

    def _port_of(self, replica: str | Replica) -> int:
        rid = replica.id if isinstance(replica, Replica) else replica
        with self._lock:
            rep = self._find(rid)
            if rep is None:
                raise KeyError(rid)
            return rep.port

    def _spawn_aux(self, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        proc = spawn(cmd, env=os.environ, log_path=log, cwd=self.root,
                     run_id=self.spec.run_id)
        with self._lock:
            self._all_procs.append(proc)
        return proc

    def _emit(self, kind: str, replica: str, detail: str) -> None:
        """Queue a replica event (delivered by _flush_events, outside the state lock)."""
        if self.emit_replica_events:
            self._events.append(DeployEvent(kind, replica, detail, self._clock.now()))

    def _emit_deploy_event(self, kind: str, detail: str) -> None:
        with contextlib.suppress(Exception):  # a broken sink never breaks a deployment
            self._on_event(DeployEvent(kind, "", detail))

    def _flush_events(self) -> None:
        # event lock before state lock, always: delivery keeps the order events happened
        with self._event_lock:
            with self._lock:
                events, self._events = self._events, []
            for ev in events:
                with contextlib.suppress(Exception):  # a sink's bug must not stop the loop
                    self._on_event(ev)

    def _free_slot_locked(self) -> int:
        used = {r.slot for r in self._reps}
        for slot in range(1, self.max_replicas + 1):
            if slot not in used:
                return slot
        raise DeployError(f"no free load-balancer slot (pool of {self.max_replicas})")

    def _add_replica_locked(self, replaces: str | None = None) -> _Rep:
        self._seq += 1
        rep = _Rep(id=f"{self.spec.trial_id}-r{self._seq}", slot=self._free_slot_locked(),
                   port=free_port())
        self._reps.append(rep)
        self._start_locked(rep)
        detail = f"pid={rep.proc.pid if rep.proc else 0} port={rep.port} slot={rep.slot}"
        self._emit("replica_started", rep.id,
                   detail + (f" replaces={replaces}" if replaces else ""))
        return rep

    def _start_locked(self, rep: _Rep) -> None:
        assert self.root is not None
        env = child_env(os.environ, self.spec.app.env, {
            "PORT": str(rep.port), "HOST": "127.0.0.1", "REPLICA_ID": rep.id,
            "PYTHONUNBUFFERED": "1"})
        log = self.root / "logs" / f"{rep.id}.log"
        try:
            rep.proc = spawn(self.command, env=env, log_path=log, cwd=self.root,
                             run_id=self.spec.run_id)
        except OSError as e:
            raise DeployError(f"cannot start replica {rep.id} ({' '.join(self.command)}): "
                              f"{e}") from e
        self._all_procs.append(rep.proc)
        rep.state = ReplicaState.STARTING
        rep.incarnation += 1
        rep.started_at = self._clock.now()
        rep.started_wall = self._clock.wall()
        rep.ready_wall = None
        rep.exited_at = None
        rep.due_at = None
        rep.failed_probes = 0
        rep.last_probe_at = -1e9

    def _sigkill(self, replica_id: str, *, for_good: bool) -> None:
        with self._lock:
            rep = self._live(replica_id)
            proc = rep.proc
            assert proc is not None
            if for_good:
                rep.stopped_for_good = True
            signal_group(proc, signal.SIGKILL)
        # Reap right away so the exit (and the restart decision) is stamped at the crash,
        # not at the next tick; SIGKILL ends even a stopped process at once.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
        with self._lock:
            if rep.proc is proc and rep.state != ReplicaState.EXITED and \
                    proc.returncode is not None:
                self._on_exit_locked(rep, self._clock.now())
        self._sync()
        self._flush_events()

    def _on_exit_locked(self, rep: _Rep, now: float) -> None:
        assert rep.proc is not None
        ran_s = now - rep.started_at
        rep.state = ReplicaState.EXITED
        rep.exit_code = docker_exit_code(rep.proc.returncode or 0)
        rep.exited_at = now
        rep.in_lb = rep.in_lb and self.kind != "orchestrated"
        d = on_exit(self.kind, stopped_for_good=rep.stopped_for_good,
                    prev_backoff_s=rep.backoff_s, ran_s=ran_s,
                    restart_delay_s=self.restart_delay_s)
        rep.backoff_s = d.backoff_s
        if not self._deploy_done and not rep.in_lb:
            self._early_exits.append((rep.id, exit_description(rep.proc.returncode)))
        what = "stays dead"
        if d.action != "stay_dead":
            rep.due_at = now + d.delay_s
            what = f"{'restart' if d.action == 'restart_same' else 'replace'}_in_s={d.delay_s:g}"
        self._emit("replica_exited", rep.id,
                   f"exit_code={rep.exit_code} {exit_description(rep.proc.returncode)} "
                   f"ran_s={ran_s:.2f} "
                   f"reason={d.reason} {what}")

    def _due_locked(self, rep: _Rep, now: float) -> None:
        """A restart (compose) or replacement (orchestrated) has come due."""
        assert rep.exited_at is not None
        after = now - rep.exited_at
        rep.due_at = None
        if self.kind == "orchestrated":
            # Swarm starts a new task; the failed one leaves the list (task history).
            self._reps.remove(rep)
            self._add_replica_locked(replaces=rep.id)
            return
        rep.restarts += 1
        self._start_locked(rep)
        self._emit("replica_restarted", rep.id,
                   f"restarts={rep.restarts} after_s={after:.2f} "
                   f"pid={rep.proc.pid if rep.proc else 0} port={rep.port}")

    def _stop_removed(self, reps: list[_Rep]) -> None:
        procs = [r.proc for r in reps if r.proc is not None]
        stop_groups(procs, grace_s=SCALE_DOWN_GRACE_S)
        with self._lock:
            for r in reps:
                if r.state != ReplicaState.EXITED and r.proc is not None:
                    r.state = ReplicaState.EXITED
                    rc = r.proc.returncode
                    r.exit_code = docker_exit_code(rc) if rc is not None else None
                    self._emit("replica_exited", r.id,
                               f"exit_code={r.exit_code} {exit_description(rc)} "
                               "reason=ScaledDown")
        self._flush_events()

    def _run_monitor(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self._tick()
            except Exception as e:  # keep watching; the next tick retries
                self.last_sync_error = f"{type(e).__name__}: {e}"

    def _tick(self) -> None:
        now = self._clock.now()
        probes: list[tuple[_Rep, int, int, float]] = []
        with self._lock:
            for rep in list(self._reps):
                if rep.proc is not None and rep.state != ReplicaState.EXITED and \
                        rep.proc.poll() is not None:
                    self._on_exit_locked(rep, now)
            for rep in list(self._reps):
                if rep.due_at is not None and now >= rep.due_at and not rep.stopped_for_good:
                    self._due_locked(rep, now)
            for rep in self._reps:
                if rep.state == ReplicaState.STARTING:
                    probes.append((rep, rep.incarnation, rep.port, STARTING_PROBE_TIMEOUT_S))
                elif rep.state == ReplicaState.READY and \
                        now - rep.last_probe_at >= READY_RECHECK_S:
                    probes.append((rep, rep.incarnation, rep.port, READY_PROBE_TIMEOUT_S))
        if probes and self._pool is not None:
            path = self.spec.app.ready_path
            results = list(self._pool.map(lambda p: _probe(p[2], path, p[3]), probes))
            done = self._clock.now()
            with self._lock:
                for (rep, inc, _, _), ok in zip(probes, results, strict=True):
                    if rep.incarnation != inc or rep not in self._reps:
                        continue
                    rep.last_probe_at = done
                    self._probed_locked(rep, ok, done)
        self._sync()
        self._flush_events()

    def _probed_locked(self, rep: _Rep, ok: bool, now: float) -> None:
        if ok:
            rep.failed_probes = 0
            if rep.state == ReplicaState.STARTING:
                rep.state = ReplicaState.READY
                rep.in_lb = True
                rep.force_up = True
                if rep.ready_wall is not None:  # ready again after failing readiness
                    self._emit("replica_ready", rep.id, "readiness recovered")
                    return
                rep.ready_wall = self._clock.wall()
                took = now - rep.started_at
                self.start_to_ready_s.append(took)
                self._emit("replica_ready", rep.id, f"start_to_ready_s={took:.3f}")
            return
        if rep.state == ReplicaState.READY:
            rep.failed_probes += 1
            if rep.failed_probes >= NOT_READY_AFTER:
                rep.state = ReplicaState.STARTING  # alive but not ready

    def _sync(self) -> None:
        """Push the replica set to HAProxy (runtime API) and Prometheus (targets file)."""
        if self._api is None or self._stop.is_set():
            return
        with self._sync_lock:
            with self._lock:
                want: dict[int, tuple[int, bool]] = {}
                force: set[int] = set()
                for r in self._reps:
                    if self.kind == "orchestrated" and r.state == ReplicaState.EXITED:
                        continue  # the failed task is gone from the orchestrator's DNS
                    want[r.slot] = (r.port, r.in_lb)
                    if r.force_up and r.state == ReplicaState.READY:
                        force.add(r.slot)
                        r.force_up = False
                targets = {r.id: r.port for r in self._reps if r.state != ReplicaState.EXITED}
            try:
                for slot in sorted(set(want) | set(self._lb_applied)):
                    cur = self._lb_applied.get(slot)
                    new = want.get(slot, (cur[0] if cur else 1, False))
                    if new == cur and slot not in force:
                        continue
                    if cur is None and not new[1]:
                        # configured disabled already: only the address needs setting
                        self._api.set_server(slot, local_haproxy.slot_addr(new[0]), False)
                    else:
                        addr = (local_haproxy.slot_addr(new[0])
                                if cur is None or cur[0] != new[0] else None)
                        self._api.set_server(slot, addr, new[1], force_up=slot in force)
                    self._lb_applied[slot] = new
                if self._targets_applied is not None and targets != self._targets_applied:
                    assert self.root is not None
                    local_prometheus.write_targets(self.root / "targets.json", targets)
                    self._targets_applied = targets
                self.last_sync_error = None
            except (OSError, haproxy.RuntimeAPIError) as e:
                # put the force-ups back; the next tick retries the whole diff
                with self._lock:
                    for r in self._reps:
                        if r.slot in force:
                            r.force_up = True
                self.last_sync_error = f"{type(e).__name__}: {e}"


# Options `factory(kind)` forwards to LocalDeployer (for `registry.register`'s allow-list).
OPTIONS: tuple[str, ...] = (
    "restart_delay_s", "haproxy_bin", "prometheus_bin", "workdir", "use_prometheus",
    "max_replicas", "deploy_timeout_s", "balance", "server_timeout_s", "keep_workdir",
    "emit_replica_events")


def factory(kind: str) -> Callable[..., LocalDeployer]:
    """A registry factory for ("local", kind):
    `for k in KINDS: registry.register("local", k, factory(k), OPTIONS)`."""

    def make(*, spec: DeploySpec, on_event: EventSink, clock: Clock,
             **options: Any) -> LocalDeployer:
        return LocalDeployer(spec, kind, on_event, clock, **options)

    make.__name__ = f"local_{kind}"
    return make
