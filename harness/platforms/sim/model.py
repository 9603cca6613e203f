"""The sample app as a queueing model, and the per-second books the recorder reads. Pure.

A replica is a FIFO queue with ``workers`` servers and at most ``queue_limit`` waiting
requests (one more is answered 503 at once), as ``sample_app.model.Slots`` is. Every
request is served exactly — no fluid approximation: its start is the later of its arrival
and the earliest moment one of the replica's servers is free, and it is rejected when the
``queue_limit``-th most recently admitted request has not started by its arrival (FIFO start
times never decrease, so that request waiting means the queue is full). That is the
Kiefer–Wolfowitz recursion of a G/G/c queue.

Speed comes from batching: the engine hands a tick's arrivals (already spread over replicas
by the load balancer) to ``QueueBank.serve``, which processes them in *rounds*: round k
serves the k-th arrival of every replica at once, with numpy over the replicas. The number
of rounds per tick is the largest number of arrivals one replica gets in that tick, so the
cost grows with the per-replica arrival rate, not with the replica count.

Results go into a ``SecondBook``: per second of *completion* (as the load generator counts
them), ok and failed counts by cause and an exact log-bucket latency histogram
(``harness.record.histogram``: the bucket index of every latency computed with numpy,
counts added with ``np.bincount``, the maximum kept exactly).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from harness.load.stats import CAUSES
from harness.record.histogram import GAMMA, Histogram, bucket_of

_LOG_GAMMA = math.log(GAMMA)

# result codes of one request; the failure codes index CAUSES (status, timeout, conn)
OK, STATUS, TIMEOUT, CONN = 0, 1, 2, 3
N_CODES = 4


@dataclass(frozen=True)
class AppModel:
    """The sample app's capacity model (sample_app/config.py names and defaults)."""

    workers: int = 4
    service_ms: float = 50.0
    service_dist: str = "exponential"
    sigma: float = 0.5
    cpu_ms: float = 0.0
    queue_limit: int = 50
    startup_s: float = 0.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AppModel:
        """From the scenario's ``app.env``, read by the sample app's own parser (so the
        model and the real app agree on every default and bound)."""
        from sample_app.config import ConfigError, from_env

        try:
            c = from_env(env, hostname=lambda: "sim")
        except ConfigError as e:
            raise ValueError(f"app.env: {e}") from None
        return cls(workers=c.workers, service_ms=c.service_ms, service_dist=c.service_dist,
                   sigma=c.sigma, cpu_ms=c.cpu_ms, queue_limit=c.queue_limit,
                   startup_s=c.startup_s)

    @property
    def mean_service_s(self) -> float:
        return (self.service_ms + self.cpu_ms) / 1000.0

    @property
    def capacity_rps(self) -> float:
        m = self.mean_service_s
        return self.workers / m if m > 0 else math.inf

    def service_times(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n service times in seconds, drawn as sample_app.model.ServiceTime draws them
        (lognormal: mu = ln(mean) − sigma²/2 keeps the mean). CPU_MS is added as time
        served: an approximation — in the app CPU burns of one replica never overlap."""
        mean = self.service_ms / 1000.0
        if mean <= 0 or self.service_dist == "constant":
            s = np.full(n, mean)
        elif self.service_dist == "exponential":
            s = rng.exponential(mean, n)
        else:
            mu = math.log(mean) - self.sigma * self.sigma / 2.0
            s = rng.lognormal(mu, self.sigma, n)
        if self.cpu_ms > 0:
            s += self.cpu_ms / 1000.0
        return s


def bucket_indices(lat_ms: np.ndarray) -> np.ndarray:
    """harness.record.histogram.bucket_of for many latencies at once."""
    us = np.maximum(lat_ms * 1000.0, 1.0)  # ≤ 1 µs → bucket 0 (log 1 = 0)
    return np.ceil(np.log(us) / _LOG_GAMMA).astype(np.int64)


@dataclass
class ClosedSecond:
    """One finished second of the book."""

    t_s: int
    ok: int
    failed_by_cause: dict[str, int]
    histogram: Histogram

    @property
    def failed(self) -> int:
        return sum(self.failed_by_cause.values())


class SecondBook:
    """Per-second counts and latency histograms of the seconds still open.

    A request is booked in the second its client sees it finish (``done``), which lies at
    most ``span_s`` seconds after the oldest open second; ``close`` takes the oldest open
    second out. ``remove`` un-books requests a crash turned into failures (their maximum
    cannot be un-kept: a second's max_ms may then be a latency that was re-booked, a
    deliberate, rare over-estimate).
    """

    def __init__(self, first_s: int, span_s: int, max_latency_ms: float) -> None:
        self.first = first_s
        self.span = span_s
        self.nb = bucket_of(max_latency_ms) + 2
        self.hist = np.zeros((span_s, self.nb), np.int64)
        self.codes = np.zeros((span_s, N_CODES), np.int64)
        self.max_ms = np.zeros(span_s)

    def _rows(self, done_s: np.ndarray) -> np.ndarray:
        sec = np.floor(done_s).astype(np.int64)
        # a request can only finish after the book's oldest open second began: the engine
        # closes a second once the clock passed its end
        sec = np.maximum(sec, self.first)
        if sec.size and int(sec.max()) >= self.first + self.span:
            raise ValueError(f"completion at {float(done_s.max()):.3f}s is beyond the book's "
                             f"span ({self.first}+{self.span})")
        return sec % self.span

    def add(self, done_s: np.ndarray, lat_ms: np.ndarray, code: np.ndarray,
            sign: int = 1) -> None:
        if done_s.size == 0:
            return
        rows = self._rows(done_s)
        b = np.minimum(bucket_indices(lat_ms), self.nb - 1)
        h = np.bincount(rows * self.nb + b, minlength=self.span * self.nb)
        c = np.bincount(rows * N_CODES + code, minlength=self.span * N_CODES)
        if sign > 0:
            self.hist += h.reshape(self.span, self.nb)
            self.codes += c.reshape(self.span, N_CODES)
            np.maximum.at(self.max_ms, rows, lat_ms)
        else:
            self.hist -= h.reshape(self.span, self.nb)
            self.codes -= c.reshape(self.span, N_CODES)

    def remove(self, done_s: np.ndarray, lat_ms: np.ndarray, code: np.ndarray) -> None:
        self.add(done_s, lat_ms, code, sign=-1)

    def close(self) -> ClosedSecond:
        s = self.first
        r = s % self.span
        row = self.hist[r]
        nz = np.flatnonzero(row)
        h = Histogram()
        h.counts = dict(zip(nz.tolist(), row[nz].tolist(), strict=True))
        h.total = int(row[nz].sum())
        h.max_ms = float(self.max_ms[r]) if h.total else 0.0
        codes = self.codes[r].tolist()
        out = ClosedSecond(t_s=s, ok=int(codes[OK]),
                           failed_by_cause={c: int(codes[i + 1]) if i + 1 < N_CODES else 0
                                            for i, c in enumerate(CAUSES)},
                           histogram=h)
        self.hist[r] = 0
        self.codes[r] = 0
        self.max_ms[r] = 0.0
        self.first += 1
        return out


def outcome(origin: np.ndarray, end: np.ndarray, overhead_s: float, timeout_s: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(done, latency ms, code) of admitted requests as the client sees them: the answer
    at end + overhead, or a timeout at origin + timeout. One function for booking and for
    un-booking after a crash, so both give bit-identical floats."""
    lt = end - origin + overhead_s
    timed = lt > timeout_s
    done = np.where(timed, origin + timeout_s, origin + lt)
    lat_ms = np.minimum(lt, timeout_s) * 1000.0
    code = np.where(timed, TIMEOUT, OK).astype(np.int8)
    return done, lat_ms, code


@dataclass
class Served:
    """What happened to a batch of arrivals, in their input order."""

    done: np.ndarray  # when the client saw the answer (s)
    lat_ms: np.ndarray  # latency from the intended send time (ms)
    code: np.ndarray  # OK / STATUS (503) / TIMEOUT
    rejected: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


@dataclass
class Lost:
    """Requests a crash cut off: how they had been booked, and who sent them."""

    arrival: np.ndarray  # when the client sent it
    done: np.ndarray
    lat_ms: np.ndarray
    code: np.ndarray
    user: np.ndarray


class QueueBank:
    """One FIFO multi-server queue per slot (a replica life occupies a slot).

    Per slot: when each server finishes its last assigned request (``free``), and a ring of
    the most recently admitted requests (sent at, start, end, user), long
    enough to hold every request still in the system (≤ workers + queue_limit, plus a margin
    for long service times overtaken by shorter ones) — what a crash must turn into failures.
    """

    def __init__(self, app: AppModel, capacity: int = 64, ring_extra: int = 16) -> None:
        self.app = app
        self.c = app.workers
        self.q = app.queue_limit
        self.m = self.c + self.q + ring_extra
        self.capacity = 0
        self.free = np.zeros((0, self.c))
        self.r_arr = np.zeros((0, self.m))
        self.r_start = np.zeros((0, self.m))
        self.r_end = np.zeros((0, self.m))
        self.r_user = np.zeros((0, self.m), np.int32)
        self.ptr = np.zeros(0, np.int64)
        self.received = np.zeros(0, np.int64)  # requests that reached the replica (counter)
        self.lat_bounds: np.ndarray | None = None  # set by track_latency
        self.lat_counts = np.zeros((0, 0), np.int64)
        self.grow(capacity)

    def track_latency(self, bounds_s: tuple[float, ...]) -> None:
        """Also count served requests' server-side latency per replica in these histogram
        buckets (upper bounds, seconds; the last one +Inf), as the app's
        app_request_duration_seconds does."""
        self.lat_bounds = np.asarray(bounds_s, float)
        self.lat_counts = np.zeros((self.capacity, len(bounds_s)), np.int64)

    def grow(self, need: int) -> None:
        if need <= self.capacity:
            return
        new = max(need, 2 * self.capacity, 16)
        add = new - self.capacity

        def ext(a: np.ndarray, fill: float) -> np.ndarray:
            pad = np.full((add, *a.shape[1:]), fill, dtype=a.dtype)
            return np.concatenate([a, pad])

        self.free = ext(self.free, -np.inf)
        self.r_arr = ext(self.r_arr, -np.inf)
        self.r_start = ext(self.r_start, -np.inf)
        self.r_end = ext(self.r_end, -np.inf)
        self.r_user = ext(self.r_user, -1)
        self.ptr = ext(self.ptr, 0)
        self.received = ext(self.received, 0)
        if self.lat_bounds is not None:
            self.lat_counts = ext(self.lat_counts, 0)
        self.capacity = new

    def reset(self, slot: int) -> None:
        """An empty replica in this slot (a new life: nothing queued, all servers idle)."""
        self.free[slot] = -np.inf
        for a in (self.r_arr, self.r_start, self.r_end):
            a[slot] = -np.inf
        self.r_user[slot] = -1
        self.ptr[slot] = 0
        self.received[slot] = 0  # a new process: its counters start from 0
        if self.lat_bounds is not None:
            self.lat_counts[slot] = 0

    # -- state at an instant (valid at tick boundaries: every earlier arrival was served) --

    def busy(self, slots: np.ndarray, t: float) -> np.ndarray:
        """Servers busy at t. A server whose last assigned request ends after t is busy at
        t: either that request runs, or it waits for the one before it on that server."""
        return (self.free[slots] > t).sum(axis=1)

    def queued(self, slots: np.ndarray, t: float) -> np.ndarray:
        return (self.r_start[slots] > t).sum(axis=1)

    def outstanding(self, slots: np.ndarray, t: float) -> np.ndarray:
        """Requests in the replica at t (served or waiting): its connections at the LB."""
        return (self.r_end[slots] > t).sum(axis=1)

    # -- serving ---------------------------------------------------------------------------

    def serve(self, slot_of: np.ndarray, arrival: np.ndarray, service: np.ndarray,
              user: np.ndarray | None, *, overhead_s: float, timeout_s: float,
              origin: np.ndarray | None = None) -> Served:
        """Serve arrivals (sorted by time, all within one tick) at the given slots.

        Latency as the client measures it: from the arrival (the intended send time) to the
        answer, plus ``overhead_s`` (LB, network, HTTP). A request whose answer would come
        after ``timeout_s`` fails as a timeout at arrival + timeout (the server still works
        on it, as a real server does once it accepted the request). ``origin``: when the
        client sent it, if earlier than its arrival here (a request the LB re-sends).
        """
        k = arrival.size
        if k == 0:
            z = np.zeros(0)
            return Served(z, z, np.zeros(0, np.int8), np.zeros(0, bool))
        np.add.at(self.received, slot_of, 1)
        origin = arrival if origin is None else origin
        # order by (rank within its replica, replica): round r = the r-th arrival of each
        order = np.argsort(slot_of, kind="stable")
        ss = slot_of[order]
        firsts = np.concatenate(([0], np.flatnonzero(ss[1:] != ss[:-1]) + 1))
        lens = np.diff(np.concatenate((firsts, [k])))
        rank = np.arange(k) - np.repeat(firsts, lens)
        o2 = np.argsort(rank, kind="stable")
        perm = order[o2]
        rk = rank[o2]
        bounds = np.searchsorted(rk, np.arange(int(rk[-1]) + 2))
        q, m = self.q, self.m
        end_all = np.empty(k)
        full_all = np.zeros(k, bool)
        # Only what the recursion needs happens per round; outcomes are computed once after
        for r in range(len(bounds) - 1):
            idx = perm[bounds[r]:bounds[r + 1]]
            rows = slot_of[idx]
            a = arrival[idx]
            fr = self.free[rows]
            j = fr.argmin(axis=1)
            fmin = fr[np.arange(idx.size), j]
            p = self.ptr[rows]
            if q > 0:
                full = self.r_start[rows, (p - q) % m] > a
            else:
                full = fmin > a
            start = np.maximum(a, fmin)
            end = start + service[idx]
            end_all[idx] = end
            if full.any():
                full_all[idx] = full
                adm = ~full
                rows, p, j, start, end, idx = (rows[adm], p[adm], j[adm], start[adm],
                                               end[adm], idx[adm])
            self.free[rows, j] = end
            self.r_arr[rows, p] = origin[idx]
            self.r_start[rows, p] = start
            self.r_end[rows, p] = end
            if user is not None:
                self.r_user[rows, p] = user[idx]
            self.ptr[rows] = (p + 1) % m
        done, lat_ms, code = outcome(origin, end_all, overhead_s, timeout_s)
        if full_all.any():
            # 503 at once, when it reached the replica
            done[full_all] = arrival[full_all] + overhead_s
            lat_ms[full_all] = (done[full_all] - origin[full_all]) * 1000.0
            code[full_all] = STATUS
        if self.lat_bounds is not None:
            adm = ~full_all
            b = np.searchsorted(self.lat_bounds, (end_all - arrival)[adm])
            np.add.at(self.lat_counts, (slot_of[adm], b), 1)
        return Served(done, lat_ms, code, full_all)

    def crash(self, slot: int, t: float, *, overhead_s: float, timeout_s: float) -> Lost:
        """The replica in ``slot`` dies at t: every request in it whose client still waits
        is lost. Returns how those were booked (recomputed exactly as ``serve`` computed
        them), so the caller can re-book them; the slot is emptied."""
        origin, end = self.r_arr[slot], self.r_end[slot]
        inside = end > t
        done, lat_ms, code = outcome(origin[inside], end[inside], overhead_s, timeout_s)
        waiting = done > t
        lost = Lost(arrival=origin[inside][waiting], done=done[waiting],
                    lat_ms=lat_ms[waiting], code=code[waiting],
                    user=self.r_user[slot][inside][waiting].copy())
        self.reset(slot)
        return lost
