"""Load generator throughput: requests/s per load-generator core, bare Locust vs harness.

    .venv/bin/python benchmarks/bench_loadgen.py [--seconds 10] [--users 32] [--repeat 3]

Starts HAProxy answering every request itself (``http-request return``, on 127.0.0.1, one
thread), then measures side by side, each in its own process on one core:

  (a) bare Locust: ``FastHttpUser`` with no wait time, ``users`` of them, Locust's stats only
  (b) the harness's closed model, same users, think time 0, with per-second recording
      (the request event hook, per-second histograms, the second closer, the pipe)
  (c) the harness's open model, with the slot scheduler and user pool on top, offered
      more than one core can send (1.5 x (a)'s req/s per core): it runs flat out like
      (a) and (b), and the slots it cannot send are counted as dropped

Per-core figure = requests completed in the window / CPU seconds the load process used
in it (user + system), so other work on the machine does not change it much; req/s is
what it reached on this machine as it was. Target: (b) and (c) >= 85% of (a).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

HAPROXY_CFG = """\
global
    maxconn 4096
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend static
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string ok
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_haproxy(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    port = free_port()
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(port=port), encoding="utf-8")
    proc = subprocess.Popen([exe, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("haproxy did not start")


def cpu_seconds(pid: int) -> float:
    # utime + stime of the process, from /proc (no psutil needed for this)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- (a) bare Locust, in a child process ---------------------------------------------------


def bare_child(url: str, users: int, warmup_s: float, seconds: float) -> None:
    import gevent
    from locust import constant
    from locust.contrib.fasthttp import FastHttpUser
    from locust.env import Environment

    class Bare(FastHttpUser):
        host = url
        wait_time = constant(0)

        from locust import task

        @task
        def get(self) -> None:
            self.client.get("/")

    env = Environment(user_classes=[Bare])
    runner = env.create_local_runner()
    runner.start(users, spawn_rate=users)
    gevent.sleep(warmup_s)
    n0, c0, t0 = env.stats.total.num_requests, cpu_seconds(os.getpid()), time.monotonic()
    gevent.sleep(seconds)
    n1, c1, t1 = env.stats.total.num_requests, cpu_seconds(os.getpid()), time.monotonic()
    runner.quit()
    print(json.dumps({"requests": n1 - n0, "cpu_s": c1 - c0, "wall_s": t1 - t0,
                      "failures": env.stats.total.num_failures}), flush=True)


def run_bare(url: str, users: int, warmup_s: float, seconds: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--bare-child", url, str(users),
                          str(warmup_s), str(seconds)], capture_output=True, text=True,
                         timeout=warmup_s + seconds + 60, check=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    r: dict[str, Any] = json.loads(line)
    return r


# -- (b), (c) the harness's path ---------------------------------------------------------------


def run_harness(url: str, model: str, users: int, rate: float, warmup_s: float,
                seconds: float) -> dict[str, Any]:
    from harness.load.profile import Profile
    from harness.load.runner import LoadRun, LoadSpec

    total = warmup_s + seconds + 1
    if model == "open":
        spec = LoadSpec(base_url=url, path="/", model="open",
                        profile=Profile.constant(rate, total), max_in_flight=2 * users,
                        timeout_s=5)
    else:
        spec = LoadSpec(base_url=url, path="/", model="closed",
                        profile=Profile.constant(users, total), think_time_s=0.0,
                        max_in_flight=users, timeout_s=5)
    per_s: dict[int, Any] = {}
    run = LoadRun(spec, on_second=lambda s: per_s.__setitem__(s.t_s, s))
    run.start()
    try:
        pid = run.pid
        assert pid is not None
        a = run.t0_monotonic + warmup_s
        time.sleep(max(0.0, a - time.monotonic()))
        c0 = cpu_seconds(pid)
        time.sleep(seconds)
        c1 = cpu_seconds(pid)
        run.wait(timeout=total + 30)
    finally:
        run.stop()
    lo, hi = round(warmup_s), round(warmup_s + seconds)
    window = [per_s[s] for s in range(lo, hi) if s in per_s]
    done = sum(s.ok + s.failed for s in window)
    tot = run.totals()
    return {"requests": done, "cpu_s": c1 - c0, "wall_s": float(len(window)),
            "failures": sum(s.failed for s in window), "dropped": sum(s.dropped for s in window),
            "saturated": tot.saturated,
            "per_s_equal_locust": tot.requests_all == tot.locust_requests}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--open-share", type=float, default=1.5,
                    help="open-model rate as a multiple of bare Locust's req/s per core "
                         "(above 1: the open path runs flat out, as (a) and (b) do)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported")
    ap.add_argument("--only", choices=["a", "b", "c"], action="append",
                    help="run only these paths (a is always run: the others compare to it)")
    ap.add_argument("--bare-child", nargs=4, metavar=("URL", "USERS", "WARMUP", "SECONDS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_child:
        u, n, w, s = args.bare_child
        bare_child(u, int(n), float(w), float(s))
        return 0

    names = {"a": "(a) bare Locust FastHttpUser",
             "b": "(b) harness closed model + per-second recording",
             "c": "(c) harness open model + per-second recording"}
    paths = ["a"] + [p for p in ("b", "c") if not args.only or p in args.only]
    results: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
    with tempfile.TemporaryDirectory(prefix="bench-loadgen-") as tmp:
        hap, url = start_haproxy(Path(tmp))
        try:
            print(f"static endpoint: HAProxy at {url}; {args.users} users, "
                  f"{args.seconds:g} s measured after {args.warmup:g} s warm-up, "
                  f"{args.repeat} round(s); {os.cpu_count()} cores, load average "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
            # Rounds alternate the paths, so a busy spell of the machine hits all of them.
            for _ in range(args.repeat):
                bare = run_bare(url, args.users, args.warmup, args.seconds)
                results["a"].append(bare)
                if "b" in results:
                    results["b"].append(run_harness(url, "closed", args.users, 0,
                                                    args.warmup, args.seconds))
                if "c" in results:
                    rate = args.open_share * bare["requests"] / bare["cpu_s"]
                    r = run_harness(url, "open", args.users, rate, args.warmup, args.seconds)
                    r["rate"] = rate
                    results["c"].append(r)
        finally:
            hap.send_signal(signal.SIGTERM)
            hap.wait(timeout=10)

    def per_core(r: dict[str, Any]) -> float:
        return float(r["requests"] / r["cpu_s"]) if r["cpu_s"] > 0 else float("nan")

    def median_run(rs: list[dict[str, Any]]) -> dict[str, Any]:
        return sorted(rs, key=per_core)[len(rs) // 2]

    base = per_core(median_run(results["a"]))
    print(f"\n{'path (median round)':<52} {'req/s':>8} {'CPU %':>6} {'req/s/core':>11} "
          f"{'vs (a)':>7}  rounds (req/s/core)")
    ok = True
    for p in paths:
        r = median_run(results[p])
        pc = per_core(r)
        rps = r["requests"] / r["wall_s"]
        cpu = 100 * r["cpu_s"] / r["wall_s"]
        every = " ".join(f"{per_core(x):.0f}" for x in results[p])
        print(f"{names[p]:<52} {rps:>8.0f} {cpu:>6.0f} {pc:>11.0f} {pc / base:>7.0%}  {every}")
        if p != "a":
            ok = ok and pc >= 0.85 * base
    for p in paths[1:]:
        r = median_run(results[p])
        extra = [f"failures={r['failures']}", f"dropped={r['dropped']}",
                 f"saturated={r['saturated']}",
                 f"per-second totals == Locust's: {r['per_s_equal_locust']}"]
        if "rate" in r:
            extra.insert(0, f"offered {r['rate']:.0f} rps")
        print(f"  {names[p][:3]}  " + ", ".join(extra))
    print("\ntarget (harness >= 85% of bare, per core):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
