"""Replica lifecycle events, observed: started, ready, exited, restarted, removed, paused,
and the discovery lag of every new replica — when it first got traffic through the LB and
when Prometheus first scraped it.

`ReplicaWatcher` polls `deployer.replicas()` (every 0.5 s, on the clock it is given) and
turns the differences into `DeployEvent`s; the pure parts (`transitions`,
`LbFirstTraffic`, `first_scrapes`) are tested on hand-made snapshots. Where the platform
knows when something happened (Docker's StartedAt, the end of the first successful
readiness probe, Prometheus' scrape timestamp) the event carries that time (`at`), so the
polling interval does not blur start-to-ready or discovery lag.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from harness.clock import Clock
from harness.deploy.base import Deployer, DeployEvent, EventSink, Replica, ReplicaState

Gen = tuple[str, float | None]  # (replica id, started_at): one life of a replica


@dataclass(frozen=True)
class Change:
    kind: str  # replica_started | replica_ready | replica_exited | replica_restarted |
    #            replica_removed | replica_paused | replica_resumed
    replica: str
    detail: str = ""
    at_wall: float | None = None  # when it happened, if the platform says


def _gen(r: Replica) -> Gen:
    return (r.id, r.started_at)


def transitions(prev: Mapping[str, Replica], cur: Iterable[Replica]) -> list[Change]:
    """What changed between two snapshots (pure). `prev` empty → every replica is new."""
    out: list[Change] = []
    seen: set[str] = set()
    for r in cur:
        seen.add(r.id)
        p = prev.get(r.id)
        if p is None:
            if r.state != ReplicaState.EXITED:
                out.append(Change("replica_started", r.id, f"state={r.state.value}",
                                  r.started_at))
            else:
                out.append(Change("replica_exited", r.id, _exit_detail(r)))
                continue
            if r.state == ReplicaState.READY:
                out.append(Change("replica_ready", r.id, _ready_detail(r),
                                  r.ready_at))
            continue
        restarted = r.restarts > p.restarts or (
            r.started_at is not None and p.started_at is not None
            and r.started_at > p.started_at)
        if p.state != ReplicaState.EXITED and r.state == ReplicaState.EXITED:
            out.append(Change("replica_exited", r.id, _exit_detail(r)))
        elif restarted and p.state != ReplicaState.EXITED and r.state != ReplicaState.EXITED:
            # died and came back between two polls: the exit is implied by the restart
            out.append(Change("replica_exited", r.id, "exit_code=? (restarted before seen)"))
        if restarted and r.state != ReplicaState.EXITED:
            out.append(Change("replica_restarted", r.id, f"restarts={r.restarts}",
                              r.started_at))
        if r.state == ReplicaState.READY and (p.state != ReplicaState.READY or restarted) \
                and p.state != ReplicaState.PAUSED:
            out.append(Change("replica_ready", r.id, _ready_detail(r), r.ready_at))
        if r.state == ReplicaState.PAUSED and p.state != ReplicaState.PAUSED:
            out.append(Change("replica_paused", r.id))
        if p.state == ReplicaState.PAUSED and r.state in (ReplicaState.READY,
                                                         ReplicaState.STARTING):
            out.append(Change("replica_resumed", r.id, f"state={r.state.value}"))
    for rid, p in prev.items():
        if rid not in seen:
            out.append(Change("replica_removed", rid, f"last_state={p.state.value}"))
    return out


def _exit_detail(r: Replica) -> str:
    return f"exit_code={'?' if r.exit_code is None else r.exit_code} restarts={r.restarts}"


def _ready_detail(r: Replica) -> str:
    if r.ready_at is not None and r.started_at is not None:
        return f"start_to_ready_s={r.ready_at - r.started_at:.3f}"
    return ""


@runtime_checkable
class LbView(Protocol):
    """A deployer whose LB can say per server slot: address, status, sessions so far."""

    def lb_servers(self) -> list[Any]: ...


class LbFirstTraffic:
    """When did each replica life first receive a request through the LB? (pure state)

    HAProxy counts sessions per server *slot*; a DNS-discovered slot may have carried
    another replica's address before, so each slot's count is rebased whenever its
    address changes, and a replica's life counts as served once its slot's count grew
    past that base.
    """

    def __init__(self) -> None:
        self._slot_addr: dict[str, str | None] = {}
        self._slot_stot: dict[str, int] = {}
        self._base: dict[str, int] = {}  # slot → sessions before the current address
        self._gen_base: dict[Gen, tuple[str, int]] = {}
        self.served: set[Gen] = set()
        self._first_poll = True

    def update(self, servers: Iterable[Any], replicas: Iterable[Replica]) -> list[Gen]:
        by_addr = {r.address: r for r in replicas if r.address}
        new: list[Gen] = []
        for s in servers:
            name, addr, stot = s.name, s.addr, int(s.sessions_total)
            if name not in self._slot_addr or self._slot_addr[name] != addr:
                # a new address in this slot: what it carried so far was someone else's
                # (on the first poll: traffic before the watcher started is unknown)
                self._base[name] = stot if (self._first_poll or name not in self._slot_stot) \
                    else self._slot_stot[name]
                self._slot_addr[name] = addr
            self._slot_stot[name] = stot
            r = by_addr.get(addr) if addr else None
            if r is None or r.state == ReplicaState.EXITED:
                continue
            g = _gen(r)
            if g in self.served:
                continue
            if g not in self._gen_base:
                # first sight of this life in this slot: a restart on the same address
                # rebases at the current count, a new address at the slot's base
                same_slot_before = any(k[0] == r.id for k in self._gen_base)
                base = stot if (same_slot_before or self._first_poll) else self._base[name]
                self._gen_base[g] = (name, base)
            slot, base = self._gen_base[g]
            if slot == name and stot > base:
                self.served.add(g)
                new.append(g)
        self._first_poll = False
        return new


def first_scrapes(up: Mapping[str, float], replicas: Iterable[Replica],
                  done: set[Gen]) -> list[tuple[Gen, float]]:
    """Replica lives Prometheus has scraped successfully for the first time (pure).

    `up`: instance ("ip:port") → wall time of its latest successful scrape."""
    out: list[tuple[Gen, float]] = []
    for r in replicas:
        g = _gen(r)
        if g in done or not r.address or r.address not in up:
            continue
        ts = up[r.address]
        if r.started_at is not None and ts < r.started_at:
            continue  # a scrape of the previous life on the same address
        out.append((g, ts))
    return out


@dataclass
class Lag:
    """One replica life's timeline, wall-clock seconds (None: not observed)."""

    replica: str
    started_at: float | None
    ready_at: float | None = None
    lb_first_at: float | None = None
    scrape_first_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        def rel(t: float | None) -> float | None:
            if t is None or self.started_at is None:
                return None
            return round(t - self.started_at, 3)

        return {"replica": self.replica, "started_at": self.started_at,
                "start_to_ready_s": rel(self.ready_at),
                "start_to_lb_traffic_s": rel(self.lb_first_at),
                "start_to_first_scrape_s": rel(self.scrape_first_at)}


@dataclass
class ReplicaWatcher:
    deployer: Deployer
    on_event: EventSink
    clock: Clock
    interval_s: float = 0.5
    discovery_every_s: float = 0.5
    report_existing: bool = True  # events for the replicas already there at start
    start_to_ready_s: list[float] = field(default_factory=list)
    lags: dict[Gen, Lag] = field(default_factory=dict)
    last_error: str | None = None

    def __post_init__(self) -> None:
        self._prev: dict[str, Replica] = {}
        self._lb = LbFirstTraffic()
        self._scraped: set[Gen] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_discovery = 0.0
        self._first = True
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="replica-watcher",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self.poll()  # the last word: what happened since the previous poll

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as e:  # a failed poll is retried, never fatal to a trial
                self.last_error = f"{type(e).__name__}: {e}"
            self._stop.wait(self.interval_s)

    def _emit(self, kind: str, replica: str, detail: str, at_wall: float | None) -> None:
        at = None
        if at_wall is not None:
            at = self.clock.now() - (self.clock.wall() - at_wall)
        with contextlib.suppress(Exception):
            self.on_event(DeployEvent(kind, replica, detail, at))

    def poll(self) -> None:
        with self._lock:
            self._poll()

    def _poll(self) -> None:
        reps = self.deployer.replicas()
        if self._first and not self.report_existing:
            changes: list[Change] = []
        else:
            changes = transitions(self._prev, reps)
        self._first = False
        for ch in changes:
            self._emit(ch.kind, ch.replica, ch.detail, ch.at_wall)
        for r in reps:
            g = _gen(r)
            lag = self.lags.get(g)
            if lag is None:
                lag = self.lags[g] = Lag(r.id, r.started_at)
            if lag.ready_at is None and r.ready_at is not None:
                lag.ready_at = r.ready_at
                if r.started_at is not None:
                    self.start_to_ready_s.append(round(r.ready_at - r.started_at, 3))
        self._prev = {r.id: r for r in reps}
        now = self.clock.now()
        if now >= self._next_discovery:
            self._next_discovery = now + self.discovery_every_s
            self._discovery(reps)

    def _discovery(self, reps: list[Replica]) -> None:
        if isinstance(self.deployer, LbView):
            servers = self.deployer.lb_servers()
            wall = self.clock.wall()
            for g in self._lb.update(servers, reps):
                lag = self.lags.get(g)
                if lag is not None and lag.lb_first_at is None:
                    lag.lb_first_at = wall
                self._emit("replica_lb_traffic", g[0], _since(lag, wall), wall)
        url = self.deployer.prometheus_url()
        if url:
            from harness.deploy.prometheus import PrometheusError, up_instances

            try:
                up = up_instances(url, timeout_s=2.0)
            except (PrometheusError, OSError, ValueError) as e:
                self.last_error = f"prometheus: {e}"
                return
            for g, ts in first_scrapes(up, reps, self._scraped):
                self._scraped.add(g)
                lag = self.lags.get(g)
                if lag is not None and lag.scrape_first_at is None:
                    lag.scrape_first_at = ts
                self._emit("replica_first_scrape", g[0], _since(lag, ts), ts)

    def lag_table(self) -> list[dict[str, Any]]:
        return [lag.as_dict() for lag in self.lags.values()]


def _since(lag: Lag | None, t: float) -> str:
    if lag is None or lag.started_at is None:
        return ""
    return f"since_start_s={t - lag.started_at:.3f}"
