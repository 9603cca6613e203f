"""What the harness costs the machine it measures: idle CPU per added replica, and CPU
per request under load split by process group.

    .venv/bin/python benchmarks/bench_overhead.py [--kinds manual,compose,orchestrated]
        [--sizes 1,10,30] [--readiness prober,exec] [--settle-s 5] [--measure-s 10]
    .venv/bin/python benchmarks/bench_overhead.py --load-rps 400 --load-replicas 9
        [--kinds orchestrated] [--load-s 20] [--lb-scrape-s 1,0.25]

Under load (`--load-rps`): the real deployer with N replicas, the real load generator
(the Locust child process, `harness.load.runner.LoadRun`) at a fixed rate, CPU measured
over the middle of the load per group as below plus the load generator's process group and
this process; "harness-made" = LB + Prometheus + prober + Docker + docker-proxy + harness,
as a share of the host's cores (the issue's target: at most 25 % at the demo's peak).

For each kind and size: deploy that many idle sample-app replicas with the real deployer
(LB, Prometheus, the readiness prober), wait until all are ready, let it settle, then
measure CPU over `measure-s` per process group — from the containers' cgroups (replicas,
HAProxy, Prometheus, prober) and /proc (dockerd, containerd, shims + the runc children
they reap, docker-proxy) — so other work on a shared machine does not blur the figures.
Cost per added replica = (all groups at the largest size − at the smallest) / (sizes
apart). `--readiness exec` measures the readiness the harness used before: plain app
containers with a Docker HEALTHCHECK exec'ing python inside each replica every second
(no LB or Prometheus: those are the same either way), for the side-by-side figure
(docs/architecture.md, "Readiness").
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.clock import RealClock
from harness.deploy.base import AppSpec, DeploySpec, labels_for
from harness.deploy.registry import create
from harness.platform import docker_client
from harness.platforms.docker.cgroups import container_cpu_ns
from harness.platforms.docker.cleanup import sweep
from harness.platforms.docker.docker_objects import label_filters, list_containers

DAEMONS = {"dockerd": "docker", "containerd": "docker", "containerd-shim": "docker",
           "containerd-shim-runc-v2": "docker", "runc": "docker",
           "docker-proxy": "docker-proxy"}
TICK = os.sysconf("SC_CLK_TCK")
APP_ENV = {"WORKERS": "4", "SERVICE_MS": "50", "STARTUP_S": "1"}
# the exec probe the harness ran inside every replica before the prober (for comparison)
EXEC_PROBE = ("import socket,sys;s=socket.create_connection(('127.0.0.1',8000),1.0);"
              "s.sendall(b'GET /readyz HTTP/1.0\\r\\n\\r\\n');r=s.recv(64).split();"
              "sys.exit(0 if len(r)>1 and r[1]==b'200' else 1)")


def proc_stats(proc: Path = Path("/proc")) -> Iterator[tuple[str, list[str]]]:
    """(comm, the fields after it) of every process in /proc; fields[2] is the process
    group, [11:13] utime and stime, [13:15] the reaped children's (cutime, cstime)."""
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
        except OSError:
            continue
        yield raw[raw.index("(") + 1:raw.rindex(")")], raw[raw.rindex(")") + 2:].split()


def daemon_ticks(proc: Path = Path("/proc")) -> dict[str, int]:
    """CPU ticks of Docker's own processes by group; a shim's reaped children (runc,
    exec'd probes' runc) are in its cutime/cstime."""
    out: dict[str, int] = {}
    for comm, f in proc_stats(proc):
        group = DAEMONS.get(comm) or ("docker" if comm.startswith("containerd-shim") else None)
        if group is None:
            continue
        ticks = int(f[11]) + int(f[12])  # utime, stime
        if comm.startswith("containerd-shim"):
            ticks += int(f[13]) + int(f[14])  # cutime, cstime: the runc it reaped
        out[group] = out.get(group, 0) + ticks
    return out


def cgroup_ns(client: Any, run_id: str) -> dict[str, int]:
    """CPU ns of the run's containers, by harness.role (app, lb, prometheus, prober)."""
    out: dict[str, int] = {}
    for c in list_containers(client, label_filters(run_id), include_stopped=False):
        role = (c.labels or {}).get("harness.role", "other")
        ns = container_cpu_ns(c.id)
        if ns is not None:
            out[role] = out.get(role, 0) + ns
    return out


def measure(client: Any, run_id: str, seconds: float) -> dict[str, float]:
    """Cores used per group over `seconds`."""
    c0, d0, t0 = cgroup_ns(client, run_id), daemon_ticks(), time.monotonic()
    time.sleep(seconds)
    c1, d1, t1 = cgroup_ns(client, run_id), daemon_ticks(), time.monotonic()
    dt = t1 - t0
    cores = {k: (c1.get(k, 0) - c0.get(k, 0)) / 1e9 / dt for k in c1}
    cores.update({k: (d1.get(k, 0) - d0.get(k, 0)) / TICK / dt for k in d1})
    return {k: round(max(0.0, v), 4) for k, v in cores.items()}


def with_prober(client: Any, kind: str, n: int, settle_s: float, measure_s: float
                ) -> dict[str, float]:
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    spec = DeploySpec(run_id=run_id, trial_id=f"{kind}-{n}",
                      app=AppSpec(env=APP_ENV), replicas=n)
    d = create("docker", kind, client=client, spec=spec, on_event=lambda e: None,
               clock=RealClock(), spare_slots=max(20, n))
    try:
        d.deploy()
        d.wait_ready(n, timeout_s=60 + 6 * n)  # type: ignore[attr-defined]
        time.sleep(settle_s)
        return measure(client, run_id, measure_s)
    finally:
        d.teardown()


def with_exec_probe(client: Any, n: int, settle_s: float, measure_s: float
                    ) -> dict[str, float]:
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    ns = 1_000_000_000
    hc = {"test": ["CMD", "python3", "-I", "-S", "-c", EXEC_PROBE], "interval": ns,
          "timeout": ns, "retries": 1_000_000, "start_period": 0}
    try:
        for i in range(n):
            client.containers.run("harness-app:latest", detach=True, healthcheck=hc,
                                  environment=APP_ENV, name=f"harness-{run_id}-app-{i}",
                                  labels={**labels_for(run_id), "harness.role": "app"})
        deadline = time.monotonic() + 60 + 6 * n
        while time.monotonic() < deadline:
            cs = list_containers(client, label_filters(run_id))
            if sum((c.attrs["State"].get("Health") or {}).get("Status") == "healthy"
                   for c in cs) >= n:
                break
            time.sleep(1)
        time.sleep(settle_s)
        return measure(client, run_id, measure_s)
    finally:
        sweep(client, run_id, leave_swarm=False)


def group_ticks(pgid: int, proc: Path = Path("/proc")) -> int:
    """CPU ticks (with reaped children) of every process in one process group."""
    return sum(int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
               for _, f in proc_stats(proc) if int(f[2]) == pgid)


def self_seconds() -> float:
    t = os.times()
    return t.user + t.system


def under_load(client: Any, kind: str, n: int, rps: float, load_s: float,
               lb_scrape_s: float | None = None) -> tuple[dict[str, float], float]:
    """(cores per group over the middle of the load, ok requests per second)."""
    from harness.load.profile import Profile
    from harness.load.runner import LoadRun, LoadSpec

    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    spec = DeploySpec(run_id=run_id, trial_id=f"{kind}-{n}",
                      app=AppSpec(env=APP_ENV), replicas=n)
    d = create("docker", kind, client=client, spec=spec, on_event=lambda e: None,
               clock=RealClock(), spare_slots=max(20, n), lb_scrape_interval_s=lb_scrape_s)
    ok: list[int] = []
    try:
        d.deploy()
        d.wait_ready(n, timeout_s=60 + 6 * n)  # type: ignore[attr-defined]
        load = LoadRun(LoadSpec(base_url=d.lb_url(), profile=Profile.constant(rps, load_s),
                                max_in_flight=600, timeout_s=3.0, run_id=run_id),
                       on_second=lambda s: ok.append(s.ok))
        load.start()
        try:
            time.sleep(min(5.0, load_s / 4))  # past the start
            pgid = load.pid or 0
            g0, s0 = group_ticks(pgid), self_seconds()
            window = max(1.0, load_s / 2)
            groups = measure(client, run_id, window)
            groups["loadgen"] = round((group_ticks(pgid) - g0) / TICK / window, 4)
            groups["harness"] = round(max(0.0, self_seconds() - s0) / window, 4)
            load.wait()
        finally:
            load.stop()
        served = sum(ok[-int(window):]) / window if ok else 0.0
        return groups, served
    finally:
        d.teardown()


HARNESS_MADE = ("lb", "prometheus", "prober", "docker", "docker-proxy", "harness")


def report_load(kind: str, n: int, rps: float, groups: dict[str, float],
                served: float, lb_scrape_s: float | None = None) -> None:
    cores = os.cpu_count() or 1
    made = sum(groups.get(k, 0.0) for k in HARNESS_MADE)
    per_req = {k: (v / served * 1000 if served else float("nan"))
               for k, v in sorted(groups.items())}
    pace = "" if lb_scrape_s is None else f", HAProxy scraped every {lb_scrape_s:g} s"
    print(f"load {kind:13} {n:2} replicas at {rps:g} req/s (served {served:.0f}/s{pace}): "
          f"harness-made {made:.3f} cores = {100 * made / cores:.0f} % of {cores} cores",
          flush=True)
    print("  CPU ms per request: " + "  ".join(f"{k} {v:.3f}" for k, v in per_req.items()),
          flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", default="manual,compose,orchestrated")
    ap.add_argument("--sizes", default="1,10,30")
    ap.add_argument("--readiness", default="prober")
    ap.add_argument("--settle-s", type=float, default=5.0)
    ap.add_argument("--measure-s", type=float, default=10.0)
    ap.add_argument("--load-rps", type=float, default=None,
                    help="measure under this load instead of idle")
    ap.add_argument("--load-replicas", type=int, default=9)
    ap.add_argument("--load-s", type=float, default=20.0)
    ap.add_argument("--lb-scrape-s", default="",
                    help="under load: HAProxy's scrape interval(s) to compare side by side, "
                         "e.g. 1,0.25 (an lb_* autoscaler's scrape_interval_s); default: "
                         "the platform's")
    a = ap.parse_args(argv)
    client = docker_client(timeout_s=120)
    if a.load_rps is not None:
        paces = [float(v) for v in a.lb_scrape_s.split(",") if v] or [None]
        for kind in a.kinds.split(","):
            for pace in paces:
                groups, served = under_load(client, kind, a.load_replicas, a.load_rps,
                                            a.load_s, pace)
                report_load(kind, a.load_replicas, a.load_rps, groups, served, pace)
                print("  cores: " + "  ".join(f"{k} {v:.3f}" for k, v in
                                             sorted(groups.items())), flush=True)
        return 0
    sizes = sorted(int(s) for s in a.sizes.split(","))
    for readiness in a.readiness.split(","):
        kinds = a.kinds.split(",") if readiness == "prober" else ["plain containers"]
        for kind in kinds:
            totals = {}
            for n in sizes:
                groups = (with_prober(client, kind, n, a.settle_s, a.measure_s)
                          if readiness == "prober"
                          else with_exec_probe(client, n, a.settle_s, a.measure_s))
                totals[n] = sum(groups.values())
                detail = " ".join(f"{k}={v:.3f}" for k, v in sorted(groups.items()))
                print(f"{readiness:6} {kind:16} {n:3} replicas: {totals[n]:.3f} cores "
                      f"({detail})", flush=True)
            if len(sizes) > 1:
                per = (totals[sizes[-1]] - totals[sizes[0]]) / (sizes[-1] - sizes[0])
                print(f"{readiness:6} {kind:16} per added replica: {per:.4f} cores",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
