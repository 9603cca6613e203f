"""The virtual-capacity model: service times, worker slots with a bounded FIFO queue,
readiness. No sockets and no clock reads here; the server passes time in.

A replica has `workers` slots. A request takes a free slot at once, or waits in a FIFO
queue of at most `queue_limit` requests, or (queue full) is rejected at once. A slot is
held for a service time drawn from the configured distribution, so one replica serves
about workers / mean service time requests per second, independent of host CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Callable


class ServiceTime:
    """Draws service times (seconds) with mean `mean_s`.

    - constant: always the mean;
    - exponential: rate 1/mean (an M/M/c-like server);
    - lognormal: exp(N(mu, sigma²)) with mu = ln(mean) − sigma²/2, so that its mean is
      still `mean_s` while its tail grows with sigma.
    """

    def __init__(self, dist: str, mean_s: float, sigma: float = 0.5,
                 rng: random.Random | None = None) -> None:
        if dist not in ("constant", "exponential", "lognormal"):
            raise ValueError(f"unknown service time distribution {dist!r}")
        if mean_s < 0 or sigma < 0:
            raise ValueError("mean and sigma must be ≥ 0")
        self.dist = dist
        self.mean_s = mean_s
        self.sigma = sigma
        self.rng = rng if rng is not None else random.Random()
        self._mu = math.log(mean_s) - sigma * sigma / 2 if mean_s > 0 else 0.0

    @property
    def is_zero(self) -> bool:
        return self.mean_s == 0

    def sample(self) -> float:
        if self.mean_s == 0 or self.dist == "constant":
            return self.mean_s
        if self.dist == "exponential":
            return self.rng.expovariate(1.0 / self.mean_s)
        return self.rng.lognormvariate(self._mu, self.sigma)


class Slots:
    """`workers` slots and a FIFO queue of at most `queue_limit` waiters.

    Admission is synchronous (`try_acquire`, else `queue_full`, else `enqueue`), so the
    limits hold even for requests parsed in one batch before any task runs; only the wait
    itself is awaited. A released slot is handed straight to the oldest waiter, so a
    newcomer can never overtake the queue.
    """

    def __init__(self, workers: int, queue_limit: int) -> None:
        if workers < 1 or queue_limit < 0:
            raise ValueError("workers must be ≥ 1 and queue_limit ≥ 0")
        self.workers = workers
        self.queue_limit = queue_limit
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def utilization(self) -> float:
        return self.in_use / self.workers

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody is waiting for it."""
        if self.in_use < self.workers and not self._waiters:
            self.in_use += 1
            return True
        return False

    def queue_full(self) -> bool:
        return len(self._waiters) >= self.queue_limit

    def enqueue(self) -> asyncio.Future[None]:
        """Take a place in the queue now (the caller checked `queue_full()`), so requests
        arriving in the same event-loop tick see it taken; `wait` on the result."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        return fut

    async def wait(self, fut: asyncio.Future[None]) -> None:
        """Wait for the slot `fut` (from `enqueue`) is handed; return holding it."""
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot in the same tick we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes on; in_use is unchanged
                return
        self.in_use -= 1


def is_ready(now: float, started_at: float, startup_s: float, shutting_down: bool) -> bool:
    """Ready once `startup_s` has passed since start, and no longer once shutting down."""
    return not shutting_down and now - started_at >= startup_s


def burn_cpu(ms: float, cpu_clock: Callable[[], float] = time.thread_time) -> None:
    """Spin until this thread has used `ms` milliseconds of CPU (not wall) time, so a busy
    host stretches the burn as it would stretch real work."""
    end = cpu_clock() + ms / 1000.0
    x = 0
    while cpu_clock() < end:
        for i in range(200):  # some arithmetic between clock reads
            x ^= i * i
