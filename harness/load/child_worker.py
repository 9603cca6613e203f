"""A Locust worker of the harness: a local one the master started, or a remote one started
with ``harness worker --master HOST:PORT`` (harness/load/remote.py runs this process).

It gets the spec from the master, runs its share of the users, sends each closed second as
``harness_second`` and ends with Locust's final stats and ``harness_done``. A worker never
runs code that came over the network unless its master started it (``--accept-locustfile``):
a remote worker runs a custom locustfile only from its own copy of the scenario, and only
when that copy's SHA-256 equals the master's.
"""

from __future__ import annotations

# isort: off
# First, before anything else: Locust's import monkey-patches the interpreter with gevent.
import locust  # noqa: F401

# isort: on
import contextlib
import hashlib
import math
import os
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import locust.runners as locust_runners
from locust.env import Environment

from harness.load.child_core import SetupError, build_user_classes, listen, monotonic
from harness.load.runner import LoadSpec
from harness.load.users import LoadCore

# Exit codes (harness/load/remote.py turns them into messages).
SERVED = 0
REFUSED = 2  # this worker cannot serve the master's run (its locustfile)
NO_MASTER = 5  # no master answered within the timeout
MASTER_LOST = 6  # the master went away (or fell silent) during the run
NOT_STARTED = 8  # the master ended before the run started (e.g. it gave up waiting)
STOPPED = 130  # SIGINT / SIGTERM


def say(text: str) -> None:
    print(f"harness worker: {text}", flush=True)


def run_worker(master_host: str, master_port: int, parent_pid: int | None, *,
               timeout_s: float | None = None, locustfile: str | None = None,
               accept_locustfile: bool = False, base_url: str | None = None) -> int:
    if timeout_s is not None:
        # Locust retries the connection CONNECT_RETRY_COUNT times, CONNECT_TIMEOUT s each,
        # and quits when the master's heartbeats stop for MASTER_HEARTBEAT_TIMEOUT s.
        locust_runners.CONNECT_RETRY_COUNT = max(
            0, math.ceil(timeout_s / locust_runners.CONNECT_TIMEOUT) - 1)
        locust_runners.MASTER_HEARTBEAT_TIMEOUT = max(5, int(timeout_s))
    env = Environment(user_classes=[], host=None)
    try:
        runner = env.create_worker_runner(master_host, master_port)
    except ConnectionError:
        return NO_MASTER
    say(f"joined the master at {master_host}:{master_port} (pid {os.getpid()})")
    box: dict[str, Any] = {"core": None, "code": None}
    exit_ev = gevent.event.Event()
    tmp = tempfile.TemporaryDirectory(prefix="harness-load-worker-")

    def send(kind: str, data: dict[str, Any]) -> None:
        runner.send_message(kind, data)

    def refuse(why: str) -> None:
        say(why)
        send("harness_ready", {"error": why})
        box["code"] = REFUSED
        gevent.spawn_later(0.5, exit_ev.set)

    def on_spec(environment: Environment, msg: Any, **_kw: Any) -> None:
        d = dict(msg.data["spec"])
        if msg.data.get("locustfile_text") is not None:
            name, sha = str(msg.data["locustfile_name"]), msg.data.get("locustfile_sha256")
            if accept_locustfile:
                lf = Path(tmp.name) / name
                lf.write_text(msg.data["locustfile_text"], encoding="utf-8")
                d["locustfile"] = str(lf)
            elif locustfile is None:
                refuse(f"the run uses the locustfile {name}, and a worker never runs code "
                       "sent over the network: start it with the scenario file, "
                       "`harness worker --master HOST:PORT SCENARIO`")
                return
            else:
                mine = hashlib.sha256(Path(locustfile).read_bytes()).hexdigest()
                if mine != sha:
                    refuse(f"this machine's {locustfile} differs from the master's {name} "
                           f"(sha256 {mine[:12]} here, {str(sha)[:12]} there)")
                    return
                d["locustfile"] = locustfile
        elif locustfile is not None:
            say(f"the master's run has no locustfile; {locustfile} is not used")
        if base_url:
            d["base_url"] = base_url
        spec = LoadSpec.from_dict(d)
        core = LoadCore(spec, on_record=lambda rec: send("harness_second", rec),
                        on_event=lambda k, v: send("harness_event", {"kind": k, "detail": v}))
        try:
            classes = build_user_classes(spec, core)
        except SetupError as e:
            refuse(str(e))
            return
        env.user_classes[:] = classes
        env.host = spec.base_url
        core.user_count = lambda: runner.user_count
        listen(env, core)
        box["core"] = core
        send("harness_ready", {"pid": os.getpid()})
        if not accept_locustfile:
            say(f"ready: load against {spec.base_url}, waiting for the start")

    def on_start(environment: Environment, msg: Any, **_kw: Any) -> None:
        core: LoadCore = box["core"]
        d = msg.data
        core.first_s = int(d["first_s"])
        core.next_close = core.first_s
        # Wall clock carries t0 across machines; for local workers it is exact enough.
        core.start(monotonic() + (float(d["t0_wall"]) - time.time()), d["index"], int(d["of"]))
        if not accept_locustfile:
            say(f"started: share {d['index']} of {d['of']}")
        if core.open:
            def report_drained() -> None:
                core.drained.wait()
                send("harness_drained", {})

            gevent.spawn(report_drained)

    def on_share(environment: Environment, msg: Any, **_kw: Any) -> None:
        core: LoadCore = box["core"]
        core.reassign(float(msg.data["from_t"]), int(msg.data["index"]), int(msg.data["of"]))

    def on_exit(environment: Environment, msg: Any, **_kw: Any) -> None:
        exit_ev.set()

    def on_test_stop(**_kw: Any) -> None:
        core: LoadCore | None = box["core"]
        if core is None or core.t0 is None or core.finished:
            return
        last = core.finish()
        # Locust's final stats go before "done", on the same ordered channel, so the
        # master's totals include every request once it has all the "done"s.
        runner._send_stats()
        send("harness_done", {"last": last})
        box["code"] = SERVED if box["code"] is None else box["code"]
        # Locust's worker now sends "client_stopped" and then sleeps stop_timeout in its
        # message loop; the run is over for this worker, so leave shortly after.
        gevent.spawn_later(0.5, exit_ev.set)

    def on_signal(signame: str) -> None:
        # The master hears it (harness_bye): before the start it stops waiting for this
        # worker, during the run it reports worker_lost and hands the share to the others.
        if box["code"] is None:
            box["code"] = STOPPED
            with contextlib.suppress(Exception):
                send("harness_bye", {"why": f"stopped by {signame}"})
        exit_ev.set()

    for name, fn in (("harness_spec", on_spec), ("harness_start", on_start),
                     ("harness_share", on_share), ("harness_exit", on_exit)):
        runner.register_message(name, fn)
    env.events.test_stop.add_listener(on_test_stop)
    gevent.signal_handler(signal.SIGTERM, on_signal, "SIGTERM")
    gevent.signal_handler(signal.SIGINT, on_signal, "SIGINT")

    def watch_parent() -> None:
        while parent_pid:
            gevent.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(3)

    gevent.spawn(watch_parent)
    send("harness_hello", {"pid": os.getpid(), "host": socket.gethostname()})
    while not exit_ev.wait(timeout=1.0):
        if all(g.dead for g in runner.greenlet):  # Locust quit (master gone or silent)
            break
    with contextlib.suppress(Exception):
        runner.quit()
    tmp.cleanup()
    code = box["code"]
    if code is None:
        core = box["core"]
        code = MASTER_LOST if core is not None and core.t0 is not None else NOT_STARTED
    return int(code)
