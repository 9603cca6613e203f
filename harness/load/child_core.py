"""The load process's shared parts: the output pipe, the user classes, the shape that
follows the profile, and the controller that closes seconds (harness/load/child.py runs them;
harness/load/child_dist.py adds the Locust master and workers)."""

from __future__ import annotations

# isort: off
# First, before anything else: Locust's import monkey-patches the interpreter with gevent.
import locust  # noqa: F401

# isort: on
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import gevent.event
from locust import User
from locust.env import Environment
from locust.shape import LoadTestShape

from harness.load.runner import LoadSpec
from harness.load.stats import SecondMerger
from harness.load.users import LoadCore, default_user_class, wrap_user_classes

log = logging.getLogger("harness.load.child")

LEAD_S = 0.5  # between choosing t0 and the first slot: the start message reaches workers
monotonic = time.monotonic


class SetupError(Exception):
    pass


class Out:
    """JSON lines to the parent's pipe. A closed pipe means the parent is gone: exit."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def send(self, obj: dict[str, Any]) -> None:
        if self.fd is None:
            return
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        try:
            while data:
                n = os.write(self.fd, data)
                data = data[n:]
        except (BrokenPipeError, OSError):
            log.error("the harness is gone (pipe closed); exiting")
            os._exit(4)

    def event(self, kind: str, detail: str) -> None:
        log.info("event %s: %s", kind, detail)
        self.send({"type": "event", "kind": kind, "detail": detail})


def build_user_classes(spec: LoadSpec, core: LoadCore) -> list[type[User]]:
    if not spec.locustfile:
        return [default_user_class(spec, core)]
    from locust.util.load_locustfile import load_locustfile

    path = Path(spec.locustfile)
    if not path.is_file():
        raise SetupError(f"locustfile {path} not found")
    try:
        found, _shapes = load_locustfile(str(path))
    except Exception as e:
        raise SetupError(f"locustfile {path} failed to load: {type(e).__name__}: {e}") from e
    classes = [c for c in found.values() if isinstance(c, type) and issubclass(c, User)]
    if not classes:
        raise SetupError(f"locustfile {path} defines no (non-abstract) User class")
    return wrap_user_classes(classes, spec, core)


class HarnessShape(LoadTestShape):
    """Users over time from the scenario. Open model: a constant pool of max_in_flight
    users (the scheduler paces the requests). Closed: the users profile, sampled at each
    of Locust's one-second ticks. None ends the test."""

    def __init__(self, spec: LoadSpec, finished: Callable[[], bool]) -> None:
        super().__init__()
        self.spec = spec
        self.finished = finished
        self.t0: float | None = None
        prof = spec.driving_profile
        self.users_profile = prof
        self.spawn_rate = float(max(100, spec.max_in_flight if spec.model == "open"
                                    else math.ceil(prof.peak)))

    def tick(self) -> tuple[int, float] | None:
        if self.finished():
            return None
        if self.spec.model == "open":
            return (self.spec.max_in_flight, self.spawn_rate)
        if self.t0 is None:
            return (0, self.spawn_rate)
        p = self.users_profile
        rel = min(max(monotonic() - self.t0, p.start_s), p.end_s)
        return (round(p.users_at(rel)), self.spawn_rate)


class Controller:
    """What the single process and the master share: the end condition, SIGTERM, the
    merger that emits complete seconds, the parent watchdog."""

    def __init__(self, spec: LoadSpec, out: Out, parent_pid: int | None) -> None:
        self.spec = spec
        self.out = out
        self.parent_pid = parent_pid
        self.stop_requested = False
        self.t0: float | None = None
        first_s = math.floor(spec.driving_profile.start_s)
        self.merger = SecondMerger(first_s, self._emit)
        self.all_done = gevent.event.Event()
        self.extra: Callable[[dict[str, Any]], None] | None = None  # the master adds its CPU
        self.drained: Callable[[], bool] = lambda: False

    def finished(self) -> bool:
        if self.stop_requested:
            return True
        if self.t0 is None:
            return False
        rel = monotonic() - self.t0
        if self.spec.model == "closed":
            return rel >= self.spec.duration_s
        # Open: once every slot is out and answered, or the stragglers had their timeout.
        return self.drained() or rel > self.spec.duration_s + self.spec.timeout_s + 5

    def workers_alive(self) -> int:
        return sum(not st.lost for st in self.merger.nodes.values()) or 1

    def _emit(self, rec: dict[str, Any]) -> None:
        if self.extra is not None:
            self.extra(rec)
        self.out.send({"type": "second", **rec, "offered": self.spec.offered_in(rec["t_s"]),
                       "workers_alive": self.workers_alive()})

    def on_sigterm(self) -> None:
        log.info("SIGTERM: finishing the run")
        self.stop_requested = True

    def watch_parent(self) -> None:
        if not self.parent_pid:
            return
        while True:
            gevent.sleep(1.0)
            if os.getppid() != self.parent_pid:
                log.error("the harness process is gone; exiting")
                os._exit(3)

    def set_t0(self, t0: float, master: str | None = None) -> None:
        self.t0 = t0
        wall = time.time() + (t0 - monotonic())
        self.out.send({"type": "t0", "t0_monotonic": t0, "t0_wall": wall, "master": master})

    def end(self, env: Environment) -> None:
        self.merger.flush()
        total = env.stats.total
        self.out.send({"type": "end", "locust_requests": total.num_requests,
                       "locust_failures": total.num_failures,
                       "late_records": self.merger.late})


def wait_until(cond: Callable[[], bool], timeout: float, ctl: Controller) -> bool:
    deadline = monotonic() + timeout
    while not cond():
        if ctl.stop_requested or monotonic() > deadline:
            return False
        gevent.sleep(0.05)
    return True


def listen(env: Environment, core: LoadCore) -> None:
    env.events.request.add_listener(core.on_request)
    env.events.cpu_warning.add_listener(core.on_cpu_warning)
    env.events.test_stopping.add_listener(lambda **_kw: core.stop_scheduling())


# -- one process ---------------------------------------------------------------------------
