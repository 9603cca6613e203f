"""The scenario's faults, injected at their times (clock passed in).

Which replicas a fault hits is drawn from the ready replicas with the scenario's seed, so
a repetition hits the same slots. A pause is reverted after its duration and, whatever
happens, by `revert_all()` at tear-down: no paused replica outlives a trial.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.clock import Clock
from harness.deploy.base import Deployer, FaultTarget, ReplicaState
from harness.scenario.models import Fault

# (t_s, kind, replica, detail, structured fields: action, outcome; docs/columns.md)
FaultSink = Callable[[float, str, str, str, dict[str, str]], None]


@dataclass(frozen=True)
class Planned:
    at_s: float
    action: str  # crash | kill | pause | unpause
    count: int
    index: int  # which scenario fault this comes from
    duration_s: float | None = None


def plan(faults: Sequence[Fault], strategy: str) -> list[Planned]:
    """The fault schedule of one strategy, in time order (pure)."""
    out = [Planned(f.at_s, f.action, f.count, i, f.duration_s)
           for i, f in enumerate(faults) if f.strategies is None or strategy in f.strategies]
    return sorted(out, key=lambda p: (p.at_s, p.index))


class FaultTimeline:
    def __init__(self, planned: list[Planned], deployer: Deployer, clock: Clock, t0: float,
                 seed: int, on_fault: FaultSink) -> None:
        self._queue = list(planned)
        self._deployer = deployer
        self._clock = clock
        self._t0 = t0
        self._rng = random.Random(seed)
        self._emit = on_fault
        self._paused: dict[str, float] = {}  # replica id → unpause at (t_s)
        self._lock = threading.Lock()

    def due(self) -> float | None:
        """Seconds (trial time) of the next thing to do, or None when nothing is left."""
        times = [p.at_s for p in self._queue] + list(self._paused.values())
        return min(times) if times else None

    def step(self) -> None:
        """Do everything that is due now."""
        t = self._clock.now() - self._t0
        with self._lock:
            for rid, until in list(self._paused.items()):
                if until <= t:
                    self._unpause(rid, t)
            while self._queue and self._queue[0].at_s <= t:
                self._inject(self._queue.pop(0), t)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            nxt = self.due()
            if nxt is None:
                return
            wait = nxt - (self._clock.now() - self._t0)
            if wait > 0:
                stop.wait(min(wait, 0.5))
                continue
            self.step()

    def revert_all(self) -> None:
        with self._lock:
            t = self._clock.now() - self._t0
            for rid in list(self._paused):
                self._unpause(rid, t)

    def _inject(self, p: Planned, t: float) -> None:
        replicas = self._deployer.replicas()
        ready = sorted(r.id for r in replicas if r.state == ReplicaState.READY)
        if len(ready) < p.count:  # fewer ready than asked: hit what is alive
            alive = sorted(r.id for r in replicas if r.state != ReplicaState.EXITED)
            ready = alive
        victims = self._rng.sample(ready, k=min(p.count, len(ready)))
        if not victims:
            self._emit(t, "fault", "", "skipped: no live replica",
                       {"action": p.action, "outcome": "skipped"})
            return
        for rid in victims:
            try:
                if p.action == "crash":
                    self._deployer.crash(rid)
                elif isinstance(self._deployer, FaultTarget):
                    if p.action == "kill":
                        self._deployer.kill(rid)
                    elif p.action == "pause":
                        self._deployer.pause(rid)
                        self._paused[rid] = t + (p.duration_s or 0)
                else:
                    raise NotImplementedError(f"{self._deployer.kind} cannot {p.action}")
                self._emit(t, "fault", rid, f"fault={p.index}",
                           {"action": p.action, "outcome": "ok"})
            except Exception as e:  # a failed injection is recorded, never fatal
                self._emit(t, "fault", rid, f"error: {e}",
                           {"action": p.action, "outcome": "error"})

    def _unpause(self, rid: str, t: float) -> None:
        self._paused.pop(rid, None)
        try:
            assert isinstance(self._deployer, FaultTarget)
            self._deployer.unpause(rid)
            self._emit(t, "fault_reverted", rid, "", {"action": "unpause", "outcome": "ok"})
        except Exception as e:
            self._emit(t, "fault_reverted", rid, f"error: {e}",
                       {"action": "unpause", "outcome": "error"})
