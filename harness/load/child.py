"""The load process: Locust as a library (Environment, runners, a LoadTestShape).

    python -m harness.load.child run SPEC.json --fd N [--parent-pid P]
        one load process (workers == 0), or a Locust master that starts ``workers`` local
        worker processes and waits for ``remote_workers`` more; writes JSON lines to fd N
    python -m harness.load.child worker --master-host HOST --master-port PORT [--timeout S]
        a worker (harness/load/child_worker.py); gets the spec from the master, so a
        remote machine needs only the harness installed (and the scenario, when the run
        uses a custom locustfile: ``--locustfile PATH``)

Only this module and ``harness.load.users`` import Locust (it monkey-patches the whole
interpreter with gevent), and only in these processes.

The seconds: each process that runs users closes second s at t0 + s + 1 + 0.25 s (the
open model's slots of s once its scheduler is past them) and passes the record on — to the
pipe directly, or to the master as a Locust custom message (``harness_second``). The
master's ``SecondMerger`` emits a second once every worker has reported it, or was lost,
or finished before it. The end: the shape returns None (profile over and drained, or
SIGTERM) → Locust stops the users (gracefully, up to timeout_s + 1) → each process closes
its remaining seconds, sends Locust's final stats, then ``harness_done`` → the master
flushes and writes ``end`` with Locust's own totals.
"""

from __future__ import annotations

# isort: off
# First, before anything else: Locust's import monkey-patches the interpreter with gevent.
import locust  # noqa: F401

# isort: on
import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import gevent
import gevent.event
from locust.env import Environment
from locust.log import setup_logging

from harness.load.child_core import (
    LEAD_S,
    Controller,
    HarnessShape,
    Out,
    SetupError,
    build_user_classes,
    listen,
    monotonic,
    wait_until,
)
from harness.load.child_dist import run_master
from harness.load.child_worker import run_worker
from harness.load.runner import LoadSpec
from harness.load.users import LoadCore

log = logging.getLogger("harness.load.child")





def run_single(spec: LoadSpec, out: Out, parent_pid: int | None) -> int:
    ctl = Controller(spec, out, parent_pid)
    core = LoadCore(spec, on_record=lambda rec: ctl.merger.add("local", rec),
                    on_event=out.event)
    ctl.drained = core.drained.is_set
    ctl.merger.add_node("local", core.first_s)
    shape = HarnessShape(spec, ctl.finished)
    env = Environment(user_classes=build_user_classes(spec, core), shape_class=shape,
                      host=spec.base_url, stop_timeout=spec.timeout_s + 1)
    listen(env, core)

    def on_test_stop(**_kw: Any) -> None:
        if core.t0 is None:
            ctl.all_done.set()
            return
        last = core.finish()
        ctl.merger.done("local", last)
        ctl.all_done.set()

    env.events.test_stop.add_listener(on_test_stop)
    runner = env.create_local_runner()
    core.user_count = lambda: runner.user_count
    gevent.signal_handler(signal.SIGTERM, ctl.on_sigterm)
    gevent.spawn(ctl.watch_parent)

    if spec.model == "open":
        runner.start_shape()
        if not wait_until(lambda: runner.user_count >= spec.max_in_flight,
                           spec.start_timeout_s, ctl):
            runner.quit()
            if ctl.stop_requested:  # stopped before the load began: nothing to report
                ctl.end(env)
                return 0
            out.event("error", f"spawned {runner.user_count} of {spec.max_in_flight} users "
                               f"in {spec.start_timeout_s:.0f} s")
            return 1
        t0 = monotonic() + LEAD_S + spec.warmup_s
        core.start(t0)
        ctl.set_t0(t0)
    else:
        t0 = monotonic() + LEAD_S + spec.warmup_s
        core.start(t0)
        shape.t0 = t0
        ctl.set_t0(t0)
        # Locust ticks the shape once a second from start_shape(): start it when the
        # profile starts, so ticks fall on the profile's whole seconds.
        gevent.sleep(max(0.0, t0 - spec.warmup_s - monotonic()))
        runner.start_shape()

    deadline = spec.warmup_s + spec.duration_s + 2 * spec.timeout_s + 60
    if not ctl.all_done.wait(timeout=deadline + LEAD_S):
        out.event("error", "the run did not end in time; stopping")
        runner.stop()
    ctl.end(env)
    runner.quit()
    return 0


# -- master ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.load.child")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("spec")
    r.add_argument("--fd", type=int, default=None)
    r.add_argument("--parent-pid", type=int, default=None)
    w = sub.add_parser("worker")
    w.add_argument("--master-host", default="127.0.0.1")
    w.add_argument("--master-port", type=int, default=5557)
    w.add_argument("--parent-pid", type=int, default=None)
    w.add_argument("--timeout", type=float, default=None,
                   help="give up when no master answers, or it is silent, this long")
    w.add_argument("--locustfile", default=None,
                   help="this machine's copy of the run's locustfile (checked by SHA-256)")
    w.add_argument("--accept-locustfile", action="store_true",
                   help="run the locustfile the master sends (its own local workers only)")
    w.add_argument("--base-url", default=None, help="reach the app here instead")
    args = ap.parse_args(argv)
    setup_logging(os.environ.get("HARNESS_LOAD_LOGLEVEL", "INFO"))
    if args.cmd == "worker":
        return run_worker(args.master_host, args.master_port, args.parent_pid,
                          timeout_s=args.timeout, locustfile=args.locustfile,
                          accept_locustfile=args.accept_locustfile, base_url=args.base_url)
    out = Out(args.fd)
    try:
        spec = LoadSpec.from_dict(json.loads(Path(args.spec).read_text(encoding="utf-8")))
        if spec.workers > 0 or spec.remote_workers > 0:
            return run_master(spec, out, args.parent_pid)
        return run_single(spec, out, args.parent_pid)
    except SetupError as e:
        out.event("error", str(e))
        return 2
    except Exception as e:
        log.exception("load child failed")
        out.event("error", f"{type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
