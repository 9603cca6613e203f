"""The load process as a Locust master with local (and remote) workers, and the worker side
(harness/load/child.py dispatches here when the spec asks for workers)."""

from __future__ import annotations

# isort: off
# First, before anything else: Locust's import monkey-patches the interpreter with gevent.
import locust  # noqa: F401

# isort: on
import contextlib
import hashlib
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.event
from locust.env import Environment

from harness.load.child_core import (
    LEAD_S,
    Controller,
    HarnessShape,
    Out,
    build_user_classes,
    monotonic,
    wait_until,
)
from harness.load.cpu import CpuSampler
from harness.load.runner import LoadSpec, free_port, worker_command
from harness.load.stats import SaturationDetector
from harness.load.users import LoadCore

log = logging.getLogger("harness.load.child")





class _Worker:
    def __init__(self, node: str, pid: int, host: str, local: bool) -> None:
        self.node, self.pid, self.host, self.local = node, pid, host, local
        self.index: int | None = None

    def label(self) -> str:
        return f"worker {self.index} ({self.host} pid {self.pid})"


def run_master(spec: LoadSpec, out: Out, parent_pid: int | None) -> int:
    ctl = Controller(spec, out, parent_pid)
    # The master runs no users; its classes exist so Locust can dispatch them by name.
    dummy = LoadCore(spec, on_record=lambda rec: None, on_event=out.event)
    shape = HarnessShape(spec, ctl.finished)
    env = Environment(user_classes=build_user_classes(spec, dummy), shape_class=shape,
                      host=spec.base_url, stop_timeout=spec.timeout_s + 1)
    env.events.cpu_warning.add_listener(dummy.on_cpu_warning)
    bind = spec.master_bind or f"127.0.0.1:{free_port()}"
    host, _, port_s = bind.rpartition(":")
    host = host or "127.0.0.1"
    runner = env.create_master_runner(master_bind_host=host, master_bind_port=int(port_s))
    connect_host = "127.0.0.1" if host in ("*", "0.0.0.0", "") else host
    workers: dict[str, _Worker] = {}
    ready: list[str] = []
    drained: set[str] = set()
    lf_text = Path(spec.locustfile).read_text(encoding="utf-8") if spec.locustfile else None
    lf_name = Path(spec.locustfile).name if spec.locustfile else None
    lf_sha = hashlib.sha256(lf_text.encode()).hexdigest() if lf_text is not None else None
    started = {"v": False}
    refused: list[str] = []  # a worker that cannot serve this run says why: fail fast
    procs: list[subprocess.Popen[bytes]] = []
    local_pids: set[int] = set()

    def node_of(msg: Any) -> str:
        return str(msg.node_id)

    def on_hello(environment: Environment, msg: Any, **_kw: Any) -> None:
        node = node_of(msg)
        pid, whose = int(msg.data.get("pid", 0)), str(msg.data.get("host"))
        local = pid in local_pids and whose == socket.gethostname()
        workers[node] = _Worker(node, pid, whose, local)
        if not local and not started["v"]:
            out.event("worker_joined", f"{whose} pid {pid} (remote)")
        runner.send_message("harness_spec", {"spec": spec.to_dict(), "locustfile_name": lf_name,
                                             "locustfile_text": lf_text,
                                             "locustfile_sha256": lf_sha}, client_id=node)

    def on_ready(environment: Environment, msg: Any, **_kw: Any) -> None:
        node = node_of(msg)
        if msg.data.get("error"):
            w = workers.get(node)
            refused.append(f"worker {w.host if w else node} pid {w.pid if w else '?'}: "
                           f"{msg.data['error']}")
            return
        ready.append(node)
        if started["v"]:  # joined late: records welcome, no share of the open schedule
            out.event("worker_joined", f"{workers[node].host} pid {workers[node].pid} (late)")
            start_worker(node, None, 1, ctl.merger.next_s + 2)

    def on_second(environment: Environment, msg: Any, **_kw: Any) -> None:
        ctl.merger.add(node_of(msg), msg.data)

    def on_event(environment: Environment, msg: Any, **_kw: Any) -> None:
        w = workers.get(node_of(msg))
        out.event(str(msg.data["kind"]), f"{w.label() if w else node_of(msg)}: "
                                         f"{msg.data['detail']}")

    def on_drained(environment: Environment, msg: Any, **_kw: Any) -> None:
        drained.add(node_of(msg))

    def on_done(environment: Environment, msg: Any, **_kw: Any) -> None:
        ctl.merger.done(node_of(msg), int(msg.data["last"]))
        check_all_done()

    def on_bye(environment: Environment, msg: Any, **_kw: Any) -> None:
        # a worker stopped by its user (Ctrl-C, SIGTERM): lost mid-run, forgotten before
        node = node_of(msg)
        if started["v"]:
            lose(node, f"left: {msg.data.get('why', 'stopped')}")
        elif node in ready:
            ready.remove(node)

    for name, fn in (("harness_hello", on_hello), ("harness_ready", on_ready),
                     ("harness_second", on_second), ("harness_event", on_event),
                     ("harness_drained", on_drained), ("harness_done", on_done),
                     ("harness_bye", on_bye)):
        runner.register_message(name, fn)

    def check_all_done() -> None:
        if started["v"] and not ctl.merger.alive():
            ctl.all_done.set()

    def alive_open_nodes() -> list[str]:
        alive = set(ctl.merger.alive())
        return [n for n in ready if n in alive and workers[n].index is not None]

    ctl.drained = lambda: all(n in drained for n in alive_open_nodes())

    t0_box: dict[str, float] = {}

    def start_worker(node: str, index: int | None, of: int, first_s: int) -> None:
        t0 = t0_box["t0"]
        workers[node].index = index
        ctl.merger.add_node(node, first_s)
        runner.send_message("harness_start", {"t0_wall": time.time() + (t0 - monotonic()),
                                              "index": index, "of": of, "first_s": first_s},
                            client_id=node)

    def lose(node: str, why: str) -> None:
        st = ctl.merger.nodes.get(node)
        if st is None or st.lost or st.done_last is not None:
            return
        w = workers.get(node)
        ctl.merger.lost(node)
        out.event("worker_lost", f"{w.label() if w else node}: {why}")
        survivors = alive_open_nodes()
        if not ctl.merger.alive():
            ctl.stop_requested = True
            check_all_done()
            return
        if spec.model == "open" and survivors and ctl.t0 is not None and not ctl.stop_requested:
            # The survivors take over the lost share from the next whole second (at least
            # 0.3 s away, for the message to arrive).
            from_t = float(math.ceil(monotonic() - ctl.t0 + 0.3))
            for i, n in enumerate(survivors):
                workers[n].index = i
                runner.send_message("harness_share", {"from_t": from_t, "index": i,
                                                      "of": len(survivors)}, client_id=n)

    def monitor() -> None:
        by_pid = {p.pid: p for p in procs}
        while True:
            gevent.sleep(0.5)
            for node, w in list(workers.items()):
                st = ctl.merger.nodes.get(node)
                if st is None or st.lost or st.done_last is not None:
                    continue
                p = by_pid.get(w.pid)
                if p is not None and p.poll() is not None:
                    lose(node, f"exited with code {p.returncode}")
                elif node not in runner.clients:
                    lose(node, "disconnected")
                elif runner.clients[node].state == "missing":
                    lose(node, "missed its heartbeats")
                elif ctl.t0 is not None and monotonic() - ctl.t0 > st.last + 15 + 1 and \
                        ctl.merger.next_s > st.last:
                    lose(node, f"stalled: no second reported since t={st.last}")

    master_det = SaturationDetector()
    master_cpu = CpuSampler()

    def add_master_cpu(rec: dict[str, Any]) -> None:
        pct, busy = master_cpu.sample()
        warned, dummy.locust_warned = dummy.locust_warned, False
        sat = master_det.update(busy, 0.0, warned)
        if sat and master_det.reason and not getattr(master_det, "_reported", False):
            master_det._reported = True  # type: ignore[attr-defined]
            out.event("loadgen_saturated", f"master pid {os.getpid()}: {master_det.reason}")
        rec["cpu"] += pct
        rec["cpu_max"] = max(rec["cpu_max"], pct)
        rec["saturated"] = rec["saturated"] or sat

    ctl.extra = add_master_cpu
    gevent.signal_handler(signal.SIGTERM, ctl.on_sigterm)
    gevent.spawn(ctl.watch_parent)

    try:
        out.send({"type": "master", "address": f"{host}:{port_s}",
                  "remote_workers": spec.remote_workers,
                  "timeout_s": spec.remote_workers_timeout_s})
        for _ in range(spec.workers):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "harness.load.child", "worker",
                 "--master-host", connect_host, "--master-port", port_s,
                 "--parent-pid", str(os.getpid()), "--accept-locustfile"],
                stdin=subprocess.DEVNULL))
            local_pids.add(procs[-1].pid)
        problem = wait_workers(runner, workers, ready, refused, spec, ctl, bind)
        if problem:
            out.event("error", problem)
            return 1
        order = list(ready)
        if spec.model == "open":
            runner.start_shape()
            if not wait_until(lambda: runner.user_count >= spec.max_in_flight,
                               spec.start_timeout_s, ctl):
                out.event("error", f"workers spawned {runner.user_count} of "
                                   f"{spec.max_in_flight} users")
                return 1
        t0 = monotonic() + LEAD_S + spec.warmup_s
        t0_box["t0"] = t0
        first_s = ctl.merger.next_s
        for i, node in enumerate(order):
            start_worker(node, i if spec.model == "open" else 0, len(order), first_s)
        started["v"] = True
        shape.t0 = t0
        ctl.set_t0(t0, master=f"{connect_host}:{port_s}")
        gevent.spawn(monitor)
        if spec.model == "closed":
            gevent.sleep(max(0.0, t0 - spec.warmup_s - monotonic()))
            runner.start_shape()
        deadline = spec.warmup_s + spec.duration_s + 2 * spec.timeout_s + 60
        if not ctl.all_done.wait(timeout=deadline + LEAD_S):
            out.event("error", "the run did not end in time; stopping")
            ctl.stop_requested = True
            ctl.all_done.wait(timeout=spec.timeout_s + 10)
        # Seconds still owed by workers that never said done are reported as they are.
        ctl.end(env)
        return 0
    finally:
        for node in list(workers):
            with contextlib.suppress(Exception):
                runner.send_message("harness_exit", None, client_id=node)
        with contextlib.suppress(Exception):
            runner.quit()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


def wait_workers(runner: Any, workers: dict[str, _Worker], ready: list[str],
                 refused: list[str], spec: LoadSpec, ctl: Controller, bind: str) -> str | None:
    """Until every local and remote worker is ready; why not, when one refused the run or
    the time is up (local workers get start_timeout_s, remote ones their own timeout)."""
    t_start = monotonic()

    def counts() -> tuple[int, int]:
        for node in [n for n in ready if n not in runner.clients]:
            ready.remove(node)  # left before the start (Locust removed it)
        local = sum(workers[n].local for n in ready)
        return local, len(ready) - local

    while True:
        if refused:
            return refused[0]
        local, remote = counts()
        if local >= spec.workers and remote >= spec.remote_workers:
            return None
        waited = monotonic() - t_start
        if ctl.stop_requested:
            return "stopped while waiting for the load workers"
        if local < spec.workers and waited > spec.start_timeout_s:
            return (f"{local} of {spec.workers} local load workers connected in "
                    f"{spec.start_timeout_s:.0f} s (master {bind})")
        if remote < spec.remote_workers and waited > spec.remote_workers_timeout_s:
            return (f"{remote} of {spec.remote_workers} remote load workers joined in "
                    f"{spec.remote_workers_timeout_s:g} s (master {bind}; start each with "
                    f"`{worker_command(bind)}`)")
        gevent.sleep(0.05)
