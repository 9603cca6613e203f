"""The local platform's replica supervisor: starts replica processes, notices exits,
applies the strategy kind's restart rules (harness/deploy/local_policy.py), polls readiness
and pushes the replica set to HAProxy and Prometheus. `LocalDeployer` (local.py next to it)
is the Deployer built on it; the split keeps each file readable in one sitting.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness.clock import Clock
from harness.deploy import haproxy
from harness.deploy.base import DeployEvent, DeploySpec, EventSink, Replica, ReplicaState
from harness.deploy.local_policy import Kind, on_exit
from harness.errors import DeployError
from harness.platforms.local import local_haproxy, local_prometheus
from harness.platforms.local.local_procs import (
    child_env,
    exit_description,
    free_port,
    signal_group,
    spawn,
    stop_groups,
)

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

class ReplicaSupervisor:
    """The replica bookkeeping and the monitor thread's work (state set up by
    `LocalDeployer.__init__`; every `_locked` method runs under `self._lock`)."""

    kind: Kind
    spec: DeploySpec
    _on_event: EventSink
    _clock: Clock
    restart_delay_s: float
    max_replicas: int
    emit_replica_events: bool
    command: tuple[str, ...]
    _lock: threading.RLock
    _event_lock: threading.Lock
    _sync_lock: threading.Lock
    _stop: threading.Event
    _reps: list[_Rep]
    _seq: int
    _events: list[DeployEvent]
    _all_procs: list[subprocess.Popen[bytes]]
    _lb_applied: dict[int, tuple[int, bool]]
    _targets_applied: dict[str, int] | None
    _pool: ThreadPoolExecutor | None
    _deployed: bool
    _deploy_done: bool
    _early_exits: list[tuple[str, str]]
    _torn_down: bool
    root: Path | None
    _api: haproxy.RuntimeAPI | None
    last_sync_error: str | None
    start_to_ready_s: list[float]

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
