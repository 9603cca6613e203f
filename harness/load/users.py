"""Inside a load process (imports Locust: only the child process may import this).

``LoadCore`` is what every process that runs users has (the single process, or each
worker): the per-second book fed by Locust's ``request`` event, the open model's
scheduler and user pool, the CPU / event-loop sampling, and the closing of seconds.

The open model on top of Locust, as k6's arrival-rate executors do it: a scheduler
greenlet walks the intended send times of the profile (``SlotSchedule``); at each one it
hands the slot to an idle user of a fixed pool (``max_in_flight`` users, so that is the cap
on requests in flight), or counts it *dropped* when none is idle. The user's latency is
measured from the slot's intended time, so a slow system cannot slow the offered load
down without it showing (no coordinated omission). Locust's own stats are fed as usual
by the same ``request`` event, so its totals and ours count the same requests.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
from gevent import GreenletExit
from gevent.hub import Waiter
from locust import User, constant, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import (
    InterruptTaskSet,
    RescheduleTask,
    RescheduleTaskImmediately,
    StopUser,
)
from locust.user.task import (
    LOCUST_STATE_RUNNING,
    LOCUST_STATE_STOPPING,
    LOCUST_STATE_WAITING,
    DefaultTaskSet,
)

from harness.load.cpu import CpuSampler
from harness.load.profile import SlotSchedule
from harness.load.runner import LoadSpec
from harness.load.stats import SaturationDetector, SecondBook, classify_failure
from harness.load.user_pool import Pool

log = logging.getLogger("harness.load.child")

CLOSE_GRACE_S = 0.25  # a second is closed this long after it ended (greenlets catch up)
LAG_PROBE_S = 0.1  # event-loop lateness probe period
SCHED_QUANTUM_S = 0.001  # the scheduler's shortest sleep (libev's epoll resolution)
monotonic = time.monotonic


class LoadCore:
    """Per-process load state. ``on_record`` receives each closed second (wire record)."""

    def __init__(self, spec: LoadSpec, on_record: Callable[[dict[str, Any]], None],
                 on_event: Callable[[str, str], None]) -> None:
        self.spec = spec
        self.open = spec.model == "open"
        self.profile = spec.driving_profile
        self.book = SecondBook()
        self.first_s = math.floor(self.profile.start_s)
        # Anything before the first second (a user's on_start) counts in the first second.
        self.book.closed_below = self.first_s
        self.pool = Pool(on_abandoned=lambda t: self.aborted(t, slot=True))
        self.in_flight_closed = 0
        self.aborted_count = 0
        self.raw: list[float] | None = [] if spec.raw_latencies_dir else None
        self.on_record = on_record
        self.on_event = on_event
        self.t0: float | None = None  # monotonic at load t=0
        self.next_close = self.first_s
        self.sched: SlotSchedule | None = None
        self.sched_watermark = -math.inf  # every slot before this was handed out or dropped
        self.sched_done = False
        self.scheduling = False
        self.drained = gevent.event.Event()
        self.finished = False
        self.detector = SaturationDetector()
        self.locust_warned = False
        self.lag_ms = 0.0
        self._gauge_at: dict[int, tuple[int, int]] = {}  # second -> (in flight, users)
        self.user_count: Callable[[], int] = lambda: 0
        self._greenlets: list[gevent.Greenlet] = []
        self._cpu = CpuSampler()

    # -- the request event (hot path) ----------------------------------------------------

    def on_request(self, request_type: str = "", name: str = "", response_time: float = 0.0,
                   response_length: int = 0, response: Any = None,
                   context: dict[str, Any] | None = None, exception: Any = None,
                   **_kw: Any) -> None:
        now = monotonic()
        t0 = self.t0
        rel = now - t0 if t0 is not None else float(self.first_s)
        t_int = context.get("harness_t") if context else None
        if t_int is not None and t0 is not None:
            latency_ms = (rel - t_int) * 1000.0  # from the intended send time
        else:
            latency_ms = float(response_time or 0.0)
        if self.raw is not None:
            self.raw.append(latency_ms)
        if exception is None:
            self.book.request(rel, latency_ms)
        else:
            status = getattr(response, "status_code", None)
            cause = classify_failure(exception, status)
            self.book.request(rel, latency_ms, cause, status if cause == "status" else None)

    def aborted(self, t_sent: float, slot: bool = False) -> None:
        """A request that was counted as sent but killed by the run's stop before it had
        a result (Locust's stats do not count it either): it was never sent, as far as the
        results go. A slot handed to a user that was killed before using it is dropped."""
        self.aborted_count += 1
        self.book.unsent(t_sent, dropped=slot)

    def on_cpu_warning(self, **_kw: Any) -> None:
        self.locust_warned = True

    # -- starting -------------------------------------------------------------------------

    def start(self, t0_monotonic: float, index: int | None = 0, of: int = 1) -> None:
        """Load t=0 is ``t0_monotonic``; in the open model this process takes slot share
        ``index`` of ``of`` (None: none, e.g. a worker that joined late)."""
        self.t0 = t0_monotonic
        self._cpu = CpuSampler()
        self.book.closed_below = self.first_s  # the master may have moved the first second
        if self.open and index is not None:
            self.sched = SlotSchedule(self.profile, index=index, of=of, mode=self.spec.arrival,
                                      seed=self.spec.seed)
            self.scheduling = True
            self._spawn(self._schedule_loop)
        elif self.open:
            self.sched_done = True
            self.sched_watermark = math.inf
            self.drained.set()
        else:
            self.sched_watermark = math.inf  # closed model: nothing to wait for
        self._spawn(self._lag_probe)
        self._spawn(self._close_loop)

    def reassign(self, from_t: float, index: int, of: int) -> None:
        if self.sched is not None:
            self.sched.reassign(from_t, index, of)

    def _spawn(self, fn: Callable[[], None]) -> None:
        g = gevent.spawn(self._guard, fn)
        self._greenlets.append(g)

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except GreenletExit:
            raise
        except Exception as e:
            log.exception("load loop %s failed", fn.__name__)
            self.on_event("error", f"{fn.__name__}: {type(e).__name__}: {e}")

    # -- the open model's scheduler -------------------------------------------------------

    def _schedule_loop(self) -> None:
        sched, pool, book = self.sched, self.pool, self.book
        assert sched is not None and self.t0 is not None
        t0 = self.t0
        while self.scheduling:
            t_next = sched.peek()
            if t_next is None:
                break
            self.sched_watermark = t_next
            now_rel = monotonic() - t0
            if t_next > now_rel:
                # libev's epoll backend wakes with 1 ms resolution anyway; sleeping at least
                # that long batches the slots of high rates into one wake-up (each still
                # measured from its own intended time) instead of a timer per request.
                gevent.sleep(max(t_next - now_rel, SCHED_QUANTUM_S))
                continue
            # Every due slot now: late wake-ups hand out a batch, and the latency of each
            # still counts from its own intended time.
            while t_next is not None and t_next <= now_rel and self.scheduling:
                book.slot(t_next, pool.offer(t_next))
                sched.advance()
                t_next = sched.peek()
        self.sched_watermark = math.inf
        self.sched_done = True
        # Drain: the run may end once every request sent has completed (or timed out).
        deadline = monotonic() + self.spec.timeout_s + 1.0
        while pool.busy > 0 and monotonic() < deadline:
            gevent.sleep(0.05)
        self.drained.set()

    def stop_scheduling(self) -> None:
        """No slot after this (the run is stopping: users are about to be stopped)."""
        self.scheduling = False
        self.sched_watermark = math.inf

    # -- sampling and closing seconds -----------------------------------------------------

    def _lag_probe(self) -> None:
        # Also samples the gauges every 100 ms, so a second reports its last value before
        # it ended rather than the value when it was closed (0.25 s into the next one).
        assert self.t0 is not None
        while True:
            t = monotonic()
            gevent.sleep(LAG_PROBE_S)
            now = monotonic()
            late = (now - t - LAG_PROBE_S) * 1000.0
            if late > self.lag_ms:
                self.lag_ms = late
            self._gauge_at[math.floor(now - self.t0)] = (self.in_flight(), self.user_count())

    def in_flight(self) -> int:
        return self.pool.busy if self.open else self.in_flight_closed

    def _gauges(self, s: int | None = None) -> dict[str, Any]:
        pct, busy = self._cpu.sample()
        lag, self.lag_ms = self.lag_ms, 0.0
        warned, self.locust_warned = self.locust_warned, False
        saturated = self.detector.update(busy, lag, warned)
        if saturated and self.detector.reason and not getattr(self, "_sat_reported", False):
            self._sat_reported = True
            self.on_event("loadgen_saturated", f"pid {os.getpid()}: {self.detector.reason}")
        in_flight, users = self.in_flight(), self.user_count()
        if s is not None:
            in_flight, users = self._gauge_at.pop(s, (in_flight, users))
            for old in [k for k in self._gauge_at if k < s]:
                del self._gauge_at[old]
        return {"in_flight": in_flight, "cpu": pct, "cpu_max": pct, "lag_ms": lag,
                "saturated": saturated, "users": users}

    def _close_loop(self) -> None:
        assert self.t0 is not None
        while not self.finished:
            s = self.next_close
            wait = self.t0 + s + 1 + CLOSE_GRACE_S - monotonic()
            if wait > 0:
                gevent.sleep(wait)
                continue
            # Slots of second s are counted once the scheduler is past it.
            while self.sched_watermark < s + 1 and not self.finished:
                gevent.sleep(0.02)
            if self.finished:
                break
            self._close(s, self._gauges(s))

    def _close(self, s: int, gauges: dict[str, Any]) -> None:
        self.next_close = s + 1
        self.on_record(self.book.close(s, **gauges))

    def finish(self) -> int:
        """Users are stopped: close every second up to now. Returns the last second."""
        if self.finished:
            return self.next_close - 1
        self.finished = True
        self.stop_scheduling()
        for g in self._greenlets:
            g.kill(block=False)
        now_rel = monotonic() - self.t0 if self.t0 is not None else float(self.first_s)
        last = max(math.floor(now_rel), *(self.book.seconds() or [self.first_s - 1]),
                   self.next_close - 1)
        gauges = self._gauges()
        for s in range(self.next_close, last + 1):
            self._close(s, gauges)
        if self.raw is not None and self.spec.raw_latencies_dir:
            path = os.path.join(self.spec.raw_latencies_dir, f"raw-{os.getpid()}.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write("".join(f"{v!r}\n" for v in self.raw))
        return last


# -- user classes ------------------------------------------------------------------------


def _run_open(user: Any) -> None:
    """An open-model user: wait for a slot, run one iteration, repeat (User.run's place)."""
    core: LoadCore = user._h_core
    pool = core.pool
    user._state = LOCUST_STATE_RUNNING
    user._taskset_instance = DefaultTaskSet(user)
    try:
        try:
            user.on_start()
        except (StopUser, GreenletExit):
            raise
        except Exception as e:
            user.environment.events.user_error.fire(user_instance=user, exception=e,
                                                   tb=e.__traceback__)
            log.exception("on_start failed")
        while True:
            user._state = LOCUST_STATE_WAITING
            t_int = pool.take(user)
            user._state = LOCUST_STATE_RUNNING
            user._h_t = t_int
            try:
                user._h_iteration()
            except GreenletExit:
                core.aborted(t_int)
                raise
            except StopUser:
                raise
            except (RescheduleTask, RescheduleTaskImmediately, InterruptTaskSet):
                pass
            except Exception as e:
                user.environment.events.user_error.fire(user_instance=user, exception=e,
                                                       tb=e.__traceback__)
                if not user.environment.catch_exceptions:
                    raise
                log.error("task failed: %s", e)
            finally:
                user._h_t = None
                pool.release()
            if user._state == LOCUST_STATE_STOPPING:
                raise StopUser()
    except (GreenletExit, StopUser):
        user.on_stop()


class _HarnessMixin:
    """What every user class of a harness run gets, on top of its own behaviour."""

    _h_core: LoadCore
    _h_t: float | None = None
    _h_count_sent = False  # closed model, user's own classes: count requests at start

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._h_waiter: Waiter | None = None
        self._h_slot: float | None = None
        if self._h_count_sent:
            _count_sent_through_client(self, self._h_core)

    def context(self) -> dict[str, Any]:
        # The intended send time rides on the first request of an open-model iteration
        # (Locust merges user.context() into every request's context when it starts).
        base: dict[str, Any] = super().context()  # type: ignore[misc]
        t = self._h_t
        if t is not None:
            self._h_t = None
            return {**base, "harness_t": t}
        return base


def default_user_class(spec: LoadSpec, core: LoadCore) -> type[User]:
    """The default request: GET ``spec.path`` with FastHttpUser, keep-alive connections."""
    path = spec.path
    timeout = spec.timeout_s
    per_connection = spec.requests_per_connection

    class _Base(_HarnessMixin, FastHttpUser):
        abstract = True
        host = spec.base_url
        network_timeout = timeout
        connection_timeout = timeout
        max_retries = 0
        concurrency = 1  # one request at a time per user: one connection is enough
        _h_sent = 0

        def _h_connection(self) -> dict[str, str] | None:
            # `Connection: close` on every Nth request: an L4 balancer (kube-proxy) then
            # spreads the load over replicas added since (runner.requests_per_connection)
            if per_connection is None:
                return None
            self._h_sent = (self._h_sent + 1) % per_connection
            return None if self._h_sent else {"Connection": "close"}

    if spec.model == "open":

        class HarnessOpenUser(_Base):
            _h_core = core

            def run(self) -> None:  # type: ignore[override]
                _run_open(self)

            def _h_iteration(self) -> None:
                self.client.get(path, name=path, headers=self._h_connection())

            @task
            def _h_task(self) -> None:
                # Never scheduled (run() is ours); it keeps Locust from warning that the
                # class has no task.
                self._h_iteration()

        return HarnessOpenUser

    class HarnessClosedUser(_Base):
        _h_core = core
        wait_time = constant(spec.think_time_s)

        @task
        def work(self) -> None:
            t0 = core.t0
            rel = monotonic() - t0 if t0 is not None else float(core.first_s)
            core.book.sent(rel)
            core.in_flight_closed += 1
            try:
                self.client.get(path, name=path, headers=self._h_connection())
            except GreenletExit:
                core.aborted(rel)
                raise
            finally:
                core.in_flight_closed -= 1

    return HarnessClosedUser


def wrap_user_classes(classes: list[type[User]], spec: LoadSpec,
                      core: LoadCore) -> list[type[User]]:
    """A user's own locustfile classes, with the harness's recording on top.

    Open model: one slot = one task run of the class (its wait_time is not used; the
    profile paces it). Closed model: the class runs as written. ``sent`` counts requests
    started through ``self.client.request`` (HttpUser, FastHttpUser), and iterations in the
    open model.
    """
    out: list[type[User]] = []
    for cls in classes:
        attrs: dict[str, Any] = {"_h_core": core, "__module__": cls.__module__}
        if cls.host is None:
            attrs["host"] = spec.base_url
        if spec.model == "open":

            def run(self: Any) -> None:
                _run_open(self)

            def iteration(self: Any) -> None:
                ts = self._taskset_instance
                if not ts._task_queue:
                    ts.schedule_task(ts.get_next_task())
                ts.execute_next_task()

            attrs["run"] = run
            attrs["_h_iteration"] = iteration
        else:

            attrs["_h_count_sent"] = True
        out.append(type(cls.__name__, (_HarnessMixin, cls), attrs))
    return out


def _count_sent_through_client(user: Any, core: LoadCore) -> None:
    client = getattr(user, "client", None)
    request = getattr(client, "request", None)
    if client is None or not callable(request):
        return

    def counted(*a: Any, **k: Any) -> Any:
        t0 = core.t0
        rel = monotonic() - t0 if t0 is not None else float(core.first_s)
        core.book.sent(rel)
        core.in_flight_closed += 1
        try:
            return request(*a, **k)
        except GreenletExit:
            core.aborted(rel)
            raise
        finally:
            core.in_flight_closed -= 1

    client.request = counted
