"""``SimDeployer``: the Deployer protocol over the queueing model.

Replica lives follow the real platforms, with their lags drawn from ``SimParams``:

    scale / replace ──(scale command)──► created (replica_started, STARTING)
        ──(container start + STARTUP_S)──► READY (replica_ready)
        ──(LB: health check, or DNS discovery of a new address)──► in the LB rotation
        ──(Prometheus discovery)──► scraped

What happens after a crash is the local platform's rule, reused as is
(``harness.deploy.local_policy.on_exit``): manual stays dead, compose restarts the same
replica after Docker's back-off (100 ms doubling), orchestrated replaces it by a new one
after the strategy's ``restart_delay_s``. Scaling plans with ``plan_scale`` /
``counts_toward_scale`` of the same module (newest removed first).

Time is the simulated clock's. State changes scheduled for a moment between two ticks take
effect at the next tick; their events carry the exact moment.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from harness.autoscale.spec import AutoscalerSpec
from harness.bounds import MAX_REPLICAS
from harness.clock import Clock
from harness.deploy.base import DeployEvent, DeploysOnce, DeploySpec, Replica, ReplicaState
from harness.deploy.local_policy import counts_toward_scale, on_exit, plan_scale
from harness.errors import DeployError
from harness.platforms.sim.params import SimParams

SIGKILL_EXIT = 137  # a container killed by SIGKILL exits 128 + 9


class World(Protocol):
    """What the deployer needs from the engine: model slots and the crash book-keeping."""

    def new_slot(self) -> int: ...

    def release_slot(self, slot: int, after: float) -> None: ...

    def lose(self, slot: int, t: float) -> None:
        """The replica in ``slot`` died at t: fail what was inside it, empty the slot."""
        ...

    def freeze(self, slot: int, t: float) -> None: ...

    def thaw(self, slot: int, t: float) -> None: ...


@dataclass
class _Rep:
    id: str
    seq: int
    slot: int
    instance: int  # Prometheus instance (its address): kept across a compose restart
    created: bool = False
    state: ReplicaState = ReplicaState.STARTING
    restarts: int = 0
    started_at: float | None = None
    ready_at: float | None = None
    exited_at: float | None = None
    exit_code: int | None = None
    in_lb: bool = False
    known_to_lb: bool = False  # its address is in the LB's server list (static or DNS)
    scrape_from: float | None = None
    stopped_for_good: bool = False
    backoff_s: float = 0.0
    life: int = 0  # bumped on every exit: actions scheduled for an earlier life are void
    replaces: str | None = None


class SimDeployer(DeploysOnce):
    """manual / compose / orchestrated on the model (also a FaultTarget: kill, pause)."""

    def __init__(self, spec: DeploySpec, on_event: Callable[[DeployEvent], None],
                 clock: Clock, *, kind: str, world: World, startup_s: float,
                 params: SimParams | None = None, restart_delay_s: float = 1.0,
                 seed: int = 0, max_replicas: int = MAX_REPLICAS) -> None:
        if kind not in ("manual", "compose", "orchestrated"):
            raise ValueError(f"unknown strategy kind {kind!r}")
        self.kind = kind
        self.spec = spec
        self.params = params or SimParams()
        self._on_event = on_event
        self._clock = clock
        self._world = world
        self._startup_s = startup_s
        self._restart_delay_s = restart_delay_s
        self._rng = np.random.default_rng(seed)
        self.max_replicas = max_replicas
        self._reps: list[_Rep] = []
        self._by_id: dict[str, _Rep] = {}
        self._desired = spec.replicas
        self._seq = itertools.count(1)
        self._instances = itertools.count(1)
        self._heap: list[tuple[float, int, str, str, int]] = []
        self._tie = itertools.count()
        self._deployed = False
        self._torn_down = False
        self.members_version = 0  # bumped whenever the LB rotation changes
        self._members: np.ndarray | None = None
        self._dead = np.zeros(0, bool)
        self.start_to_ready_s: list[float] = []
        self.wall_offset = clock.wall() - clock.now()
        self.source: Any = None  # the SimMetricSource, once metric_source() built it

    # -- helpers --------------------------------------------------------------------------

    def _draw(self, rng_range: tuple[float, float]) -> float:
        lo, hi = rng_range
        return float(self._rng.uniform(lo, hi)) if hi > lo else float(lo)

    def _emit(self, kind: str, replica: str, detail: str, at: float) -> None:
        self._on_event(DeployEvent(kind, replica, detail, at))

    def _schedule(self, t: float, action: str, rep: _Rep, life: int | None = None) -> None:
        heapq.heappush(self._heap, (t, next(self._tie), action, rep.id,
                                    rep.life if life is None else life))

    def _find(self, rid: str) -> _Rep:
        rep = self._by_id.get(rid)
        if rep is not None:
            return rep
        raise DeployError(f"no replica {rid!r} in this {self.kind} deployment")

    def _forget(self, rep: _Rep) -> None:
        self._reps.remove(rep)
        del self._by_id[rep.id]

    def _lb_changed(self) -> None:
        self.members_version += 1
        self._members = None

    def _new(self, at: float, *, initial: bool = False, replaces: str | None = None) -> _Rep:
        n = next(self._seq)
        rep = _Rep(id=f"{self.spec.trial_id}-r{n}", seq=n, slot=self._world.new_slot(),
                   instance=next(self._instances))
        rep.known_to_lb = initial  # the deploy waits for the LB to know its first replicas
        rep.replaces = replaces
        self._reps.append(rep)
        self._by_id[rep.id] = rep
        self._schedule(at, "create", rep)
        return rep

    # -- time -----------------------------------------------------------------------------

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def advance(self, now: float) -> None:
        """Apply every scheduled change due at or before ``now``."""
        while self._heap and self._heap[0][0] <= now:
            t, _, action, rid, life = heapq.heappop(self._heap)
            rep = self._by_id.get(rid)
            if rep is None or rep.life != life:
                continue  # that life ended (crash, scale-down) before this came due
            self._apply(t, action, rep)

    def _apply(self, t: float, action: str, rep: _Rep) -> None:
        if action == "create":
            rep.created = True
            rep.state = ReplicaState.STARTING
            rep.started_at = t
            self._emit("replica_started", rep.id, f"state=starting slot={rep.slot}"
                       + (f" replaces={rep.replaces}" if rep.replaces else ""), t)
            self._after_start(t, rep, new_address=True)
        elif action == "lb_down":
            if rep.in_lb and rep.state in (ReplicaState.EXITED, ReplicaState.PAUSED):
                rep.in_lb = False
                self._lb_changed()
        elif action == "restart":
            if rep.in_lb:  # still in the LB without retries: out until ready again
                rep.in_lb = False
                self._lb_changed()
            rep.restarts += 1
            rep.state = ReplicaState.STARTING
            rep.started_at = t
            rep.exit_code = None
            self._emit("replica_restarted", rep.id,
                       f"restarts={rep.restarts} after_s={t - (rep.exited_at or t):.2f}", t)
            self._after_start(t, rep, new_address=False)
        elif action == "replace":
            self._forget(rep)
            self._world.release_slot(rep.slot, t)
            self._new(t, replaces=rep.id)  # Swarm's new task; due now, so applied next
        elif action == "ready":
            if rep.state != ReplicaState.PAUSED:  # a paused one becomes ready on unpause
                rep.state = ReplicaState.READY
            rep.ready_at = t
            took = t - (rep.started_at or t)
            self.start_to_ready_s.append(round(took, 3))
            self._emit("replica_ready", rep.id, f"start_to_ready_s={took:.3f}", t)
        elif action == "lb_join":
            rep.known_to_lb = True
            if rep.state == ReplicaState.READY and not rep.in_lb:
                rep.in_lb = True
                self._lb_changed()
                self._emit("replica_lb_traffic", rep.id,
                           f"since_start_s={t - (rep.started_at or t):.3f}", t)
        elif action == "scrape":
            if rep.scrape_from is None:
                rep.scrape_from = t
                self._emit("replica_first_scrape", rep.id,
                           f"since_start_s={t - (rep.started_at or t):.3f}", t)

    def _after_start(self, t: float, rep: _Rep, *, new_address: bool) -> None:
        p = self.params
        ready = t + self._draw(p.container_start_s) + self._startup_s
        self._schedule(ready, "ready", rep)
        if rep.known_to_lb and not new_address:
            join = ready + self._draw(p.lb_check_s)
        elif rep.known_to_lb:  # a first replica at deploy time
            join = ready + self._draw(p.lb_check_s)
        elif self.kind == "manual":
            # a static server list: a replica added later is only served once someone
            # edits the LB — the manual deployer's spare slots; the sim adds it at once
            join = ready + self._draw(p.lb_check_s)
        else:
            join = max(t + self._draw(p.dns_discovery_s), ready + self._draw(p.lb_check_s))
        self._schedule(join, "lb_join", rep)
        if rep.scrape_from is None:
            self._schedule(t + self._draw(p.prom_discovery_s), "scrape", rep)

    # -- Deployer protocol ------------------------------------------------------------------

    def deploy(self) -> None:
        self._claim_deploy()
        now = self._clock.now()
        for _ in range(self.spec.replicas):
            self._new(now, initial=True)
        self.advance(now)
        self._emit("deployed", "", f"replicas={self.spec.replicas} lb=sim took_s=0.00", now)

    def scale(self, replicas: int) -> None:
        if replicas < 0 or replicas > self.max_replicas:
            raise DeployError(f"cannot scale to {replicas}: the sim platform takes "
                              f"0..{self.max_replicas} replicas")
        if self._torn_down:
            raise DeployError("torn down")
        now = self._clock.now()
        before = self._desired
        self._desired = replicas
        members = [r for r in self._reps if counts_toward_scale(
            self.kind, alive=r.state != ReplicaState.EXITED,  # type: ignore[arg-type]
            stopped_for_good=r.stopped_for_good)]
        plan = plan_scale([r.id for r in members], replicas)
        for rid in plan.remove:
            self._stop_for_scale(now, self._find(rid))
        if plan.add:
            at = now + self._draw(self.params.scale_command_s)
            for _ in range(plan.add):
                self._new(at)
        self._emit("scale_applied", "", f"from={before} to={replicas} command_s=0.00", now)

    def _stop_for_scale(self, t: float, rep: _Rep) -> None:
        """Scale-down: out of the LB first, then stopped; what it holds finishes (grace)."""
        if rep.state == ReplicaState.PAUSED:
            self._world.thaw(rep.slot, t)
        self._forget(rep)
        rep.life += 1
        rep.stopped_for_good = True
        if rep.in_lb:
            rep.in_lb = False
            self._lb_changed()
        if rep.created:
            self._emit("replica_removed", rep.id, f"last_state={rep.state.value}", t)
        # requests inside may still finish: the slot is reused only after they could have
        self._world.release_slot(rep.slot, t)

    def desired(self) -> int:
        return self._desired

    def replicas(self) -> list[Replica]:
        w = self.wall_offset
        return [Replica(id=r.id, name=r.id, state=r.state, restarts=r.restarts,
                        started_at=None if r.started_at is None else r.started_at + w,
                        ready_at=None if r.ready_at is None else r.ready_at + w,
                        exit_code=r.exit_code if r.state == ReplicaState.EXITED else None,
                        address=f"sim:{r.instance}")
                for r in self._reps if r.created]

    def crash(self, replica_id: str) -> None:
        self._exit(replica_id, for_good=False)

    def kill(self, replica_id: str) -> None:
        self._exit(replica_id, for_good=True)

    def pause(self, replica_id: str) -> None:
        """Freeze the replica (docker pause): it stops answering, health checks fail, the
        LB takes it out after lb_down_after_s; Prometheus' scrapes fail meanwhile."""
        rep = self._find(replica_id)
        if not rep.created or rep.state not in (ReplicaState.READY, ReplicaState.STARTING):
            raise DeployError(f"replica {replica_id} is not running")
        now = self._clock.now()
        rep.state = ReplicaState.PAUSED
        self._world.freeze(rep.slot, now)
        if rep.in_lb:
            self._lb_changed()
            self._schedule(now + self.params.lb_down_after_s, "lb_down", rep)
        self._emit("replica_paused", rep.id, "", now)

    def unpause(self, replica_id: str) -> None:
        rep = self._find(replica_id)
        if rep.state != ReplicaState.PAUSED:
            raise DeployError(f"replica {replica_id} is not paused")
        now = self._clock.now()
        self._thaw(rep, now)
        self._emit("replica_resumed", rep.id, f"state={rep.state.value}", now)

    def _thaw(self, rep: _Rep, now: float) -> None:
        rep.state = ReplicaState.READY if rep.ready_at is not None else ReplicaState.STARTING
        self._world.thaw(rep.slot, now)
        if rep.state == ReplicaState.READY and not rep.in_lb:
            rep.known_to_lb = True
            self._schedule(now + self._draw(self.params.lb_check_s), "lb_join", rep)
        elif rep.in_lb:
            self._lb_changed()

    def _exit(self, replica_id: str, *, for_good: bool) -> None:
        rep = self._find(replica_id)
        if not rep.created or rep.state == ReplicaState.EXITED:
            raise DeployError(f"replica {replica_id} is not running")
        now = self._clock.now()
        if rep.state == ReplicaState.PAUSED:
            self._world.thaw(rep.slot, now)  # what it holds is cut off now, not later
        rep.life += 1
        rep.state = ReplicaState.EXITED
        rep.exit_code = SIGKILL_EXIT
        ran_s = now - (rep.started_at if rep.started_at is not None else now)
        rep.exited_at = now
        if rep.in_lb and self.params.lb_retries:
            rep.in_lb = False  # marked down at the first refused connection (observe layer4)
            self._lb_changed()
        elif rep.in_lb:
            # no retries: the LB keeps sending to the dead server until its health checks
            # fail (requests there are refused); the engine sees it in lb_dead()
            self._lb_changed()
            self._schedule(now + self.params.lb_down_after_s, "lb_down", rep, life=rep.life)
        self._world.lose(rep.slot, now)
        d = on_exit(self.kind, stopped_for_good=for_good,  # type: ignore[arg-type]
                    prev_backoff_s=rep.backoff_s, ran_s=ran_s,
                    restart_delay_s=self._restart_delay_s)
        rep.backoff_s = d.backoff_s
        rep.stopped_for_good = for_good
        what = "stays dead"
        if d.action == "restart_same":
            self._schedule(now + d.delay_s + self._draw(self.params.restart_lag_s), "restart",
                           rep)
            what = f"restart_in_s={d.delay_s:g}"
        elif d.action == "replace_new":
            self._schedule(now + d.delay_s + self._draw(self.params.reschedule_lag_s),
                           "replace", rep)
            what = f"replace_in_s={d.delay_s:g}"
        self._emit("replica_exited", rep.id,
                   f"exit_code={SIGKILL_EXIT} restarts={rep.restarts} ran_s={ran_s:.2f} "
                   f"reason={d.reason} {what}", now)

    def lb_url(self) -> str:
        # nothing listens: the simulated LB is the Balancer inside the engine
        return "http://127.0.0.1:0"

    def prometheus_url(self) -> str | None:
        return None

    def teardown(self) -> None:
        self._torn_down = True
        self._heap.clear()

    # -- what the engine and the metric source read -------------------------------------

    def lb_members(self) -> np.ndarray:
        """Model slots of the replicas in the LB rotation, in server-list order."""
        if self._members is None:
            members = [r for r in self._reps if r.in_lb]
            self._members = np.array([r.slot for r in members], np.int64)
            self._dead = np.array([r.state == ReplicaState.EXITED for r in members], bool)
        return self._members

    def lb_dead(self) -> np.ndarray:
        """Per lb_members() entry: True for a dead server the LB still sends to (only
        without LB retries, until its health checks take it out)."""
        self.lb_members()
        return self._dead

    def scraped(self, now: float) -> list[tuple[int, int]]:
        """(slot, instance) of every replica Prometheus scrapes successfully now."""
        return [(r.slot, r.instance) for r in self._reps
                if r.created and r.state in (ReplicaState.READY, ReplicaState.STARTING)
                and r.scrape_from is not None
                and r.scrape_from <= now]

    def instances(self) -> dict[str, tuple[int, int]]:
        """replica id → (model slot, Prometheus instance)."""
        return {r.id: (r.slot, r.instance) for r in self._reps}

    def counts(self) -> tuple[int, int]:
        """(running, ready): running = starting, ready or paused (as the trial counts)."""
        running = ready = 0
        for r in self._reps:
            if not r.created:
                continue
            if r.state == ReplicaState.READY:
                ready += 1
                running += 1
            elif r.state in (ReplicaState.STARTING, ReplicaState.PAUSED):
                running += 1
        return running, ready

    def metric_source(self, spec: AutoscalerSpec) -> Any:
        """The controller's metric source: the model sampled as Prometheus would (see
        harness.autoscale.wiring: checked before any Prometheus URL)."""
        from harness.platforms.sim.metrics import SimMetricSource

        try:
            self.source = SimMetricSource(spec, self, self._clock, self._world,
                                          params=self.params)
        except ValueError as e:
            raise DeployError(str(e)) from None
        return self.source
