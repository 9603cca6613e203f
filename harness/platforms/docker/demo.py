"""A tiny entry point that deploys one strategy and waits: the target of the signal tests
(and a handy way to poke at a deployment by hand).

    python -m harness.platforms.docker.demo --kind compose --run-id demo-1 --replicas 2 \
        [--max-s 600]

Prints `READY <lb url> <prometheus url>` once the replicas are ready, then waits until
SIGINT or SIGTERM (or --max-s), tears everything down and exits 130 / 143 (0 after
--max-s). A signal during deploy interrupts it and tears down what exists so far.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from harness.clock import RealClock
from harness.deploy.base import AppSpec, DeployEvent, DeploySpec, WaitsReady
from harness.deploy.registry import create
from harness.platform import docker_client


class _Interrupted(BaseException):
    """Raised from the signal handler: unwinds deploy() wherever it is."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.platforms.docker.demo")
    ap.add_argument("--kind", choices=["manual", "compose", "orchestrated"], required=True)
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--trial-id", default="demo-1")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--max-s", type=float, default=600.0)
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the app")
    args = ap.parse_args(argv)

    env = dict(kv.split("=", 1) for kv in args.env)
    spec = DeploySpec(run_id=args.run_id, trial_id=args.trial_id, app=AppSpec(env=env),
                      replicas=args.replicas)

    def on_event(ev: DeployEvent) -> None:
        print(f"event {ev.kind} {ev.replica} {ev.detail}", flush=True)

    stop = threading.Event()
    state = {"deploying": True, "signum": 0}

    def handler(signum: int, _frame: FrameType | None) -> None:
        if state["signum"]:
            return  # a second signal while tearing down: let the tear-down finish
        state["signum"] = signum
        stop.set()
        if state["deploying"]:
            raise _Interrupted(signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    clock = RealClock()
    deployer = create("docker", args.kind, client=docker_client(), spec=spec,
                      on_event=on_event, clock=clock)
    code = 0
    try:
        deployer.deploy()
        if isinstance(deployer, WaitsReady):
            deployer.wait_ready(args.replicas, timeout_s=120)
        state["deploying"] = False
        print(f"READY {deployer.lb_url()} {deployer.prometheus_url()}", flush=True)
        stop.wait(args.max_s)
    except _Interrupted:
        pass
    except Exception as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        code = 1
    finally:
        state["deploying"] = False
        if not state["signum"]:
            state["signum"] = -1  # from now on signals only wait for the tear-down
        deployer.teardown()
        print("TORN_DOWN", flush=True)
    if state["signum"] and state["signum"] > 0:
        return 128 + state["signum"]
    return code


if __name__ == "__main__":
    sys.exit(main())
