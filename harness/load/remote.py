"""``harness worker --master HOST:PORT [SCENARIO]``: lend this machine's CPU to a trial's
load. No Locust here: the worker runs in a child process (``python -m harness.load.child
worker``, harness/load/child_worker.py) in its own process group, which this process stops
for sure (Ctrl-C / SIGTERM: the worker leaves cleanly, then the group is killed)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from harness.errors import HarnessError, UsageError

# the worker process's exit codes (harness/load/child_worker.py)
SERVED, REFUSED, NO_MASTER, MASTER_LOST, NOT_STARTED, STOPPED = 0, 2, 5, 6, 8, 130
GRACE_S = 15.0  # for the worker to leave after SIGTERM before its group is killed
BETWEEN_RUNS_S = 2.0  # the previous trial's master closes meanwhile


class WorkerError(HarnessError):
    """The worker could not serve a run (no master, master gone)."""

    exit_code = 1


@dataclass(frozen=True)
class WorkerOptions:
    master: str  # HOST:PORT
    scenario: Path | None = None
    timeout_s: float = 60.0
    runs: int = 1  # 0: serve trial after trial until no master answers within timeout_s
    base_url: str | None = None
    verbose: bool = False


def parse_master(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"--master {text!r}: give HOST:PORT, e.g. 127.0.0.1:5557")
    return host.strip("[]"), int(port)


def worker_argv(opts: WorkerOptions, locustfile: str | None) -> list[str]:
    host, port = parse_master(opts.master)
    argv = [sys.executable, "-m", "harness.load.child", "worker", "--master-host", host,
            "--master-port", str(port), "--timeout", f"{opts.timeout_s:g}",
            # it leaves when this process dies, even by SIGKILL (it has its own session)
            "--parent-pid", str(os.getpid())]
    if locustfile:
        argv += ["--locustfile", locustfile]
    if opts.base_url:
        argv += ["--base-url", opts.base_url]
    return argv


def _locustfile(scenario: Path | None) -> str | None:
    if scenario is None:
        return None
    from harness.scenario.loader import load_scenario

    loaded = load_scenario(scenario)  # bad scenario: file:line: key, exit 2
    lf = loaded.scenario.load.locustfile
    return str(loaded.resolve(lf)) if lf else None


def serve(opts: WorkerOptions, echo: Callable[[str], None]) -> int:
    """Serve ``opts.runs`` runs (0: until no master answers). Returns the exit code."""
    if opts.timeout_s <= 0:
        raise UsageError("--timeout must be > 0")
    if opts.base_url and not opts.base_url.startswith(("http://", "https://")):
        raise UsageError(f"--base-url {opts.base_url!r} must start with http:// or https://")
    argv = worker_argv(opts, _locustfile(opts.scenario))
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               HARNESS_LOAD_LOGLEVEL=os.environ.get(
                   "HARNESS_LOAD_LOGLEVEL", "INFO" if opts.verbose else "WARNING"))
    served = 0
    while True:
        echo(f"harness worker: connecting to the master at {opts.master} "
             f"(giving up after {opts.timeout_s:g} s)")
        code = _run_once(argv, env)
        if code == SERVED:
            served += 1
            echo(f"harness worker: run {served} served")
        elif code == STOPPED:
            echo("harness worker: stopped")
            return STOPPED
        elif code == REFUSED:
            raise HarnessError("this worker cannot serve the master's run (see above)")
        elif code == NO_MASTER:
            if opts.runs == 0 and served:
                echo(f"harness worker: no further run at {opts.master}; {served} served")
                return 0
            raise WorkerError(f"no master answered at {opts.master} within "
                              f"{opts.timeout_s:g} s (is the trial waiting for workers, and "
                              "is the port reachable from here?)")
        elif code == MASTER_LOST:
            msg = (f"the master at {opts.master} went away or fell silent for "
                   f"{opts.timeout_s:g} s during the run")
            if opts.runs != 0:
                raise WorkerError(msg)
            echo(f"harness worker: {msg}")
        elif code == NOT_STARTED:
            msg = f"the master at {opts.master} ended before its run started"
            if opts.runs != 0:
                raise WorkerError(msg)
            echo(f"harness worker: {msg}")
        else:
            raise WorkerError(f"the worker process failed (exit code {code})")
        if opts.runs and served >= opts.runs:
            return 0
        time.sleep(BETWEEN_RUNS_S)


def _run_once(argv: list[str], env: dict[str, str]) -> int:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    stop: dict[str, float] = {"sig": 0}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # the worker has its own session (the terminal's Ctrl-C reaches only us): pass it on
        stop["sig"] = float(signum)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stop["sig"] and _stopping_too_long(stop, proc):
                    code = STOPPED
                    break
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    return STOPPED if stop["sig"] else code


def _stopping_too_long(stop: dict[str, float], proc: subprocess.Popen[bytes]) -> bool:
    since = stop.setdefault("since", time.monotonic())
    return time.monotonic() - since > GRACE_S and proc.poll() is None
