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
from dataclasses import dataclass, field

import numpy as np

from harness.load.runner import LoadSpec
from harness.load.stats import CAUSES
from harness.platforms.sim.lb import Balancer
from harness.platforms.sim.model import (
    CONN,
    STATUS,
    TIMEOUT,
    AppModel,
    QueueBank,
    SecondBook,
    Served,
    outcome,
)
from harness.platforms.sim.params import SimParams
from harness.record.histogram import Histogram


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


@dataclass
class _Frozen:
    """A paused replica's requests: inside it at the pause, and sent to it since."""

    since: float
    inside_pos: np.ndarray  # ring positions of requests inside whose client still waits
    inside_waiting: np.ndarray  # … still waits (cleared when its timeout passes)
    n_inside: int  # everything inside (its connections at the LB)
    held: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = field(default_factory=list)
    # (origin, service, user) of arrivals sent to it while paused, in order
    held_waiting: list[np.ndarray] = field(default_factory=list)


class SimWorld:
    def __init__(self, app: AppModel, load: LoadSpec, params: SimParams, *, seed: int,
                 first_s: int, members: object | None = None) -> None:
        self.app = app
        self.load = load
        self.params = params
        self.tps = params.ticks_per_s
        self.dt = 1.0 / self.tps
        # separate streams: every strategy of a repetition gets the same arrivals (common
        # random numbers), however differently its replicas draw service times
        self.rng = np.random.default_rng([seed, 2])  # service times
        self.rng_load = np.random.default_rng([seed, 1])  # arrivals, user spawns
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
        self._frozen: dict[int, _Frozen] = {}
        self._stuck = np.zeros(0, np.int64)  # per slot: connections held by a pause
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
            if self._stuck.size < self.bank.capacity:
                self._stuck = np.concatenate(
                    [self._stuck, np.zeros(self.bank.capacity - self._stuck.size, np.int64)])
        self.bank.reset(slot)
        self._stuck[slot] = 0
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
            self._dispatch(members, np.full(n, t), users if self.closed else None, t,
                           origin=origin)
        else:
            done = np.full(n, t + self.overhead_s)
            self._book(Served(done, (done - lost.arrival) * 1000.0,
                              np.full(n, STATUS, np.int8)),  # HAProxy: 502 Bad Gateway
                       lost.user if self.closed else None)

    def freeze(self, slot: int, t: float) -> None:
        """The replica in ``slot`` is paused at t (SIGSTOP): nothing inside progresses;
        requests sent to it wait (the kernel still accepts connections) until ``thaw`` or
        their client's timeout."""
        if slot in self._frozen:
            return
        b = self.bank
        inside = np.flatnonzero(b.r_end[slot] > t)
        done, lat, code = outcome(b.r_arr[slot, inside], b.r_end[slot, inside],
                                  self.overhead_s, self.timeout_s)
        waiting = done > t
        # their answers are unknown now: un-book them until the thaw (or their timeout)
        self.book.remove(done[waiting], lat[waiting], code[waiting])
        self._count_done(done[waiting], -1)
        self._frozen[slot] = _Frozen(since=t, inside_pos=inside[waiting],
                                     inside_waiting=np.ones(int(waiting.sum()), bool),
                                     n_inside=inside.size)
        self._stuck[slot] = inside.size

    def thaw(self, slot: int, t: float) -> None:
        """The paused replica resumes at t: everything inside moves on by the pause's
        length; what was sent to it meanwhile joins its queue now (FIFO, queue limit)."""
        fz = self._frozen.pop(slot, None)
        if fz is None:
            return
        b = self.bank
        shift = t - fz.since
        row_end, row_start = b.r_end[slot], b.r_start[slot]
        moving = row_end > fz.since
        queued = moving & (row_start > fz.since)
        row_start[queued] += shift
        row_end[moving] += shift
        b.free[slot][b.free[slot] > fz.since] += shift
        pos = fz.inside_pos[fz.inside_waiting]
        if pos.size:
            origin = b.r_arr[slot, pos]
            done, lat, code = outcome(origin, row_end[pos], self.overhead_s, self.timeout_s)
            users = b.r_user[slot, pos] if self.closed else None
            self._book(Served(done, lat, code), users)
        self._stuck[slot] = 0
        if fz.held:
            origin = np.concatenate([h[0] for h in fz.held])
            service = np.concatenate([h[1] for h in fz.held])
            users = np.concatenate([h[2] for h in fz.held]) if self.closed else None  # type: ignore[misc]
            waiting = np.concatenate(fz.held_waiting)
            res = b.serve(np.full(origin.size, slot, np.int64), np.full(origin.size, t),
                          service, users, overhead_s=self.overhead_s,
                          timeout_s=self.timeout_s, origin=origin)
            keep = waiting  # the others already failed by timeout
            self._book(Served(res.done[keep], res.lat_ms[keep], res.code[keep]),
                       None if users is None else users[keep])

    def _expire_frozen(self, t_end: float) -> None:
        """Clients of requests stuck in a paused replica give up at their timeout."""
        for slot, fz in self._frozen.items():
            if fz.inside_waiting.any():
                origin = self.bank.r_arr[slot, fz.inside_pos]
                gone = fz.inside_waiting & (origin + self.timeout_s < t_end)
                if gone.any():
                    fz.inside_waiting &= ~gone
                    users = self.bank.r_user[slot, fz.inside_pos[gone]] if self.closed \
                        else None
                    self._book_timeouts(origin[gone], users)
            for (origin, _, users), waiting in zip(fz.held, fz.held_waiting, strict=True):
                gone = waiting & (origin + self.timeout_s < t_end)
                if gone.any():
                    waiting &= ~gone
                    self._book_timeouts(origin[gone], None if users is None else users[gone])

    def _book_timeouts(self, origin: np.ndarray, users: np.ndarray | None) -> None:
        done = origin + self.timeout_s
        self._book(Served(done, np.full(done.size, self.timeout_s * 1000.0),
                          np.full(done.size, TIMEOUT, np.int8)), users)

    def _book(self, res: Served, users: np.ndarray | None) -> None:
        self.book.add(res.done, res.lat_ms, res.code)
        self._count_done(res.done, 1)
        if self.closed and users is not None and users.size:
            live = (users >= 0) & (users < self._active)
            self.next_send[users[live]] = res.done[live] + self.think_s

    def _dispatch(self, members: np.ndarray, arrival: np.ndarray, user: np.ndarray | None,
                  t: float, origin: np.ndarray | None = None) -> None:
        """The LB spreads these arrivals over ``members``; the replicas serve them; the
        answers are booked (a paused replica's wait for its thaw)."""
        n = arrival.size
        if self.balancer.policy == "leastconn":
            conns = self.bank.outstanding(members, t)
            if self._frozen:
                conns = conns + self._stuck[members]
        else:
            conns = np.zeros(members.size, np.int64)
        pos = self.balancer.assign(n, conns)
        slots = members[pos]
        service = self.app.service_times(self.rng, n)
        o = arrival if origin is None else origin
        serve = np.ones(n, bool)
        dead = self.dead() if callable(self.dead) else None
        if dead is not None and dead.any():
            refused = dead[pos]
            if refused.any():
                # a dead server still in the rotation refuses the connection
                serve &= ~refused
                done = arrival[refused] + self.overhead_s
                self._book(Served(done, (done - o[refused]) * 1000.0,
                                  np.full(done.size, CONN, np.int8)),
                           None if user is None else user[refused])
        if self._frozen:
            for slot in {int(x) for x in slots[serve]} & set(self._frozen):
                held = serve & (slots == slot)
                serve &= ~held
                fz = self._frozen[slot]
                fz.held.append((o[held], service[held], None if user is None else user[held]))
                fz.held_waiting.append(np.ones(int(held.sum()), bool))
                self._stuck[slot] += int(held.sum())
        if not serve.all():
            slots, arrival, service = slots[serve], arrival[serve], service[serve]
            user = None if user is None else user[serve]
            origin = None if origin is None else origin[serve]
        res = self.bank.serve(slots, arrival, service, user, overhead_s=self.overhead_s,
                              timeout_s=self.timeout_s, origin=origin)
        self._book(res, user)

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
        if self._frozen:
            self._expire_frozen(t + self.dt)
        # completions within this tick are final now: later arrivals finish later, and a
        # crash only re-books requests that would have finished after it
        i = k % self._done_ticks.size
        self.completed_total += int(self._done_ticks[i])
        self._done_ticks[i] = 0

    def lb_sessions(self, t: float) -> int:
        """Connections HAProxy's backend has open at t (haproxy_backend_current_sessions):
        every request inside a server of the rotation, plus those a paused one holds. The
        backend's own queue (current_queue) stays empty: servers have no maxconn."""
        members = self.members() if callable(self.members) else np.zeros(0, np.int64)
        if members.size == 0:
            return 0
        return int(self.bank.outstanding(members, t).sum() + self._stuck[members].sum())

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
            self._book(Served(done, np.full(n, self.params.overhead_ms),
                              np.full(n, STATUS, np.int8)), user)
        else:
            self._dispatch(members, arrival, user, t)

    def _open_arrivals(self, t: float) -> np.ndarray:
        area = self.profile.arrivals_between(t, t + self.dt)
        self._offered += area
        if area <= 0:
            return np.zeros(0)
        k = int(self.rng_load.poisson(area))
        room = max(0, self.load.max_in_flight - self.in_flight)
        if k > room:
            # the load generator's pool is exhausted: later slots find no free user
            self._dropped += k - room
            k = room
        return t + np.sort(self.rng_load.uniform(0.0, self.dt, k))

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
                    t + self.rng_load.uniform(0.0, self.dt, new)
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
