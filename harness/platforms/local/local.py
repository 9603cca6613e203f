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
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.bounds import REAL_PLATFORM_MAX_REPLICAS
from harness.clock import Clock
from harness.deploy import haproxy
from harness.deploy.base import (
    DeployEvent,
    DeploysOnce,
    DeploySpec,
    EventSink,
    Replica,
    ReplicaState,
)
from harness.deploy.local_policy import (
    KINDS,
    Kind,
    counts_toward_scale,
    plan_scale,
)
from harness.errors import DeployError, HarnessError, PrerequisiteError
from harness.platforms.local import local_haproxy, local_prometheus
from harness.platforms.local.local_procs import (
    free_port,
    signal_group,
    stop_groups,
    tail,
    wait_tcp,
)
from harness.platforms.local.local_supervisor import (
    TEARDOWN_GRACE_S,
    UNIX_SOCKET_MAX,
    ReplicaSupervisor,
    _Rep,
    default_command,
)


class LocalDeployer(ReplicaSupervisor, DeploysOnce):
    """Deployer + FaultTarget on local processes (see the module docstring)."""

    platform = "local"

    def __init__(self, spec: DeploySpec, kind: str, on_event: EventSink, clock: Clock,
                 restart_delay_s: float = 1.0, haproxy_bin: str | None = None,
                 prometheus_bin: str | None = None, workdir: Path | None = None, *,
                 use_prometheus: bool = True,
                 max_replicas: int = REAL_PLATFORM_MAX_REPLICAS,
                 deploy_timeout_s: float = 30.0, balance: str = "leastconn",
                 server_timeout_s: float = 5.0, keep_workdir: bool = False,
                 emit_replica_events: bool = False, client: Any = None,
                 scrape_interval_s: float = 1.0,
                 lb_scrape_interval_s: float | None = None) -> None:
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
        # Prometheus' pace for the replicas and for HAProxy (an autoscaler's
        # scrape_interval_s, harness/autoscale/metrics.py scrape_options)
        self.scrape_interval_s = scrape_interval_s
        self.lb_scrape_interval_s = lb_scrape_interval_s
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
        # marked deployed only past the prerequisite checks: a missing HAProxy leaves the
        # deployer deployable (and its teardown a no-op)
        self._refuse_redeploy()
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
                metrics_path=self.spec.app.metrics_path,
                scrape_interval_s=self.scrape_interval_s,
                lb_scrape_interval_s=self.lb_scrape_interval_s))
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
