"""``SimWorld``: the load, the load balancer and the replicas' queues, one tick at a time.

Per tick [t, t + tick_s):

1. arrivals: open model — a Poisson number with the profile's area over the tick as its
   mean, at uniform times within it (a Poisson process, conditioned on its count); at most
   ``max_in_flight`` requests in flight, the rest are dropped (counted, not sent), as the
   load generator's user pool drops slots. Closed model — every active user whose think
   time is over sends; users come and go with the users profile (spawned at Locust's
   spawn rate).
2. the load balancer spreads them over the replicas in its rotation (``lb.Balancer``); with
   none, HAProxy answers 503 at once;
3. ``QueueBank.serve`` serves them exactly; ``SecondBook`` books each in the second its
   client sees the answer.

The world also is the deployer's ``World``: model slots for replica lives, and the crash
book-keeping (what was inside a crashed replica is re-booked as failed at the crash).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.load.runner import LoadSpec
from harness.load.stats import CAUSES
from harness.record.histogram import Histogram
from harness.sim.lb import Balancer
from harness.sim.model import CONN, STATUS, AppModel, QueueBank, SecondBook, Served
from harness.sim.params import SimParams


@dataclass
class SimSecond:
    """One second as the recorder writes it (the sim's SecondStats)."""

    t_s: int
    offered: float
    sent: int
    dropped: int
    ok: int
    failed: int
    failed_by_cause: dict[str, int]
    in_flight: int
    histogram: Histogram


class SimWorld:
    def __init__(self, app: AppModel, load: LoadSpec, params: SimParams, *, seed: int,
                 first_s: int, members: object | None = None) -> None:
        self.app = app
        self.load = load
        self.params = params
        self.tps = params.ticks_per_s
        self.dt = 1.0 / self.tps
        self.rng = np.random.default_rng(seed)
        self.bank = QueueBank(app, capacity=64, ring_extra=params.ring_extra)
        self.overhead_s = params.overhead_ms / 1000.0
        self.timeout_s = load.timeout_s
        # completions land at most timeout (+ overhead) after their arrival
        span = math.ceil(self.timeout_s + self.overhead_s) + 3
        self.book = SecondBook(first_s, span, (self.timeout_s + self.overhead_s) * 1000.0 + 1)
        self.balancer = Balancer(params.lb_policy)
        self.members: object | None = members  # () -> np.ndarray of slots (the deployer)
        self.dead: object | None = None  # () -> bool per member: dead, still in the LB
        self._free: list[int] = []
        self._next_slot = 0
        self.profile = load.driving_profile
        # in flight (client side): sent minus completed, completions counted per tick
        self._done_ticks = np.zeros(span * self.tps + self.tps, np.int64)
        self.sent_total = 0
        self.completed_total = 0
        # the current second's send counters (arrivals of a tick all lie in one second)
        self._sec = first_s
        self._sent = 0
        self._dropped = 0
        self._offered = 0.0
        # closed model
        self.closed = load.model == "closed"
        self.think_s = load.think_time_s
        self._spawn_rate = float(max(100, math.ceil(self.profile.peak)))
        self._spawn_credit = 0.0
        self._active = 0
        n_users = math.ceil(self.profile.peak) if self.closed else 0
        self.next_send = np.full(n_users, np.inf)

    # -- World (the deployer's side) ------------------------------------------------------

    def new_slot(self) -> int:
        if self._free:
            slot = self._free.pop()
        else:
            slot = self._next_slot
            self._next_slot += 1
            self.bank.grow(self._next_slot)
        self.bank.reset(slot)
        return slot

    def release_slot(self, slot: int, after: float) -> None:
        # Requests still inside (a scale-down's grace) were booked when they arrived, so
        # the slot can take a new life at once; its arrays are reset then.
        del after
        self._free.append(slot)

    def lose(self, slot: int, t: float) -> None:
        """The replica in ``slot`` died at t (it already left the LB rotation). What was
        inside it and still awaited: HAProxy re-sends it to another server (retry-on
        empty-response, option redispatch), latency counted from the original send; without
        retries (or without a server left) the client gets a 502."""
        lost = self.bank.crash(slot, t, overhead_s=self.overhead_s,
                               timeout_s=self.timeout_s)
        if lost.done.size == 0:
            return
        self.book.remove(lost.done, lost.lat_ms, lost.code)
        self._count_done(lost.done, -1)
        members = self.members() if callable(self.members) else np.zeros(0, np.int64)
        n = lost.done.size
        if self.params.lb_retries and members.size:
            order = np.argsort(lost.arrival, kind="stable")
            origin, users = lost.arrival[order], lost.user[order]
            res = self._dispatch(members, np.full(n, t), users if self.closed else None, t,
                                 origin=origin)
        else:
            done = np.full(n, t + self.overhead_s)
            res = Served(done, (done - lost.arrival) * 1000.0,
                         np.full(n, STATUS, np.int8))  # HAProxy: 502 Bad Gateway
            users = lost.user
        self.book.add(res.done, res.lat_ms, res.code)
        self._count_done(res.done, 1)
        if self.closed:
            live = (users >= 0) & (users < self._active)
            self.next_send[users[live]] = res.done[live] + self.think_s

    def _dispatch(self, members: np.ndarray, arrival: np.ndarray, user: np.ndarray | None,
                  t: float, origin: np.ndarray | None = None) -> Served:
        """The LB spreads these arrivals over ``members``; the replicas serve them."""
        n = arrival.size
        if self.balancer.policy == "leastconn":
            conns = self.bank.outstanding(members, t)
        else:
            conns = np.zeros(members.size, np.int64)
        pos = self.balancer.assign(n, conns)
        slots = members[pos]
        service = self.app.service_times(self.rng, n)
        dead = self.dead() if callable(self.dead) else None
        refused = dead[pos] if dead is not None and dead.any() else None
        if refused is None or not refused.any():
            return self.bank.serve(slots, arrival, service, user, overhead_s=self.overhead_s,
                                   timeout_s=self.timeout_s, origin=origin)
        # a dead server still in the rotation refuses the connection: the client fails
        ok = ~refused
        served = self.bank.serve(slots[ok], arrival[ok], service[ok],
                                 None if user is None else user[ok],
                                 overhead_s=self.overhead_s, timeout_s=self.timeout_s,
                                 origin=None if origin is None else origin[ok])
        o = arrival if origin is None else origin
        done = arrival + self.overhead_s
        out = Served(done, (done - o) * 1000.0, np.full(n, CONN, np.int8), refused.copy())
        out.done[ok], out.lat_ms[ok], out.code[ok] = served.done, served.lat_ms, served.code
        out.rejected[ok] = served.rejected
        return out

    # -- the tick -------------------------------------------------------------------------

    def _count_done(self, done: np.ndarray, sign: int) -> None:
        ticks = np.floor(done * self.tps).astype(np.int64) % self._done_ticks.size
        np.add.at(self._done_ticks, ticks, sign)

    def tick(self, k: int) -> None:
        """Simulate tick k, i.e. [k / tps, (k + 1) / tps)."""
        t = k / self.tps
        sec = math.floor(t + 1e-9)
        if sec != self._sec:
            raise RuntimeError(f"second {self._sec} was not closed before tick {k}")
        self._serve_tick(t)
        # completions within this tick are final now: later arrivals finish later, and a
        # crash only re-books requests that would have finished after it
        i = k % self._done_ticks.size
        self.completed_total += int(self._done_ticks[i])
        self._done_ticks[i] = 0

    def _serve_tick(self, t: float) -> None:
        if self.closed:
            arrival, user = self._closed_arrivals(t)
        else:
            arrival, user = self._open_arrivals(t), None
        n = arrival.size
        if n == 0:
            return
        self._sent += n
        self.sent_total += n
        members = self.members() if callable(self.members) else np.zeros(0, np.int64)
        if members.size == 0:
            # no server in the rotation: HAProxy answers 503 at once
            done = arrival + self.overhead_s
            res = Served(done, np.full(n, self.params.overhead_ms), np.full(n, STATUS, np.int8))
        else:
            res = self._dispatch(members, arrival, user, t)
        self.book.add(res.done, res.lat_ms, res.code)
        self._count_done(res.done, 1)
        if user is not None:
            self.next_send[user] = res.done + self.think_s

    def _open_arrivals(self, t: float) -> np.ndarray:
        area = self.profile.arrivals_between(t, t + self.dt)
        self._offered += area
        if area <= 0:
            return np.zeros(0)
        k = int(self.rng.poisson(area))
        room = max(0, self.load.max_in_flight - self.in_flight)
        if k > room:
            # the load generator's pool is exhausted: later slots find no free user
            self._dropped += k - room
            k = room
        return t + np.sort(self.rng.uniform(0.0, self.dt, k))

    def _closed_arrivals(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        target = round(self.profile.users_at(t))
        if target < self._active:
            self.next_send[target:self._active] = np.inf  # stopped users
            self._active = target
        elif target > self._active:
            self._spawn_credit += self._spawn_rate * self.dt
            new = min(target - self._active, int(self._spawn_credit))
            if new > 0:
                self._spawn_credit -= new
                self.next_send[self._active:self._active + new] = \
                    t + self.rng.uniform(0.0, self.dt, new)
                self._active += new
        else:
            self._spawn_credit = 0.0
        due = np.flatnonzero(self.next_send[:self._active] < t + self.dt)
        if due.size == 0:
            return np.zeros(0), due
        at = np.maximum(self.next_send[due], t)  # a user due in an earlier tick goes now
        order = np.argsort(at, kind="stable")
        users = due[order]
        self.next_send[users] = np.inf  # waiting for the answer
        return at[order], users

    @property
    def in_flight(self) -> int:
        return self.sent_total - self.completed_total

    def close_second(self) -> SimSecond:
        """Take the oldest open second out (call once the clock has passed its end)."""
        c = self.book.close()
        if c.t_s != self._sec:
            raise RuntimeError(f"book closed second {c.t_s}, expected {self._sec}")
        offered = float(self._sent) if self.closed else self._offered
        out = SimSecond(t_s=c.t_s, offered=offered, sent=self._sent, dropped=self._dropped,
                        ok=c.ok, failed=c.failed,
                        failed_by_cause={k: c.failed_by_cause.get(k, 0) for k in CAUSES},
                        in_flight=self.in_flight, histogram=c.histogram)
        self._sec += 1
        self._sent = self._dropped = 0
        self._offered = 0.0
        return out
