"""Load generator throughput: requests/s per load-generator core, bare Locust vs harness.

    .venv/bin/python benchmarks/bench_loadgen.py [--seconds 10] [--users 32] [--repeat 3]

Starts HAProxy answering every request itself (``http-request return``, on 127.0.0.1, one
thread), then measures, each in its own process (one core at most), two fair pairs:

  flat out, as fast as one core goes:
  (a)  bare Locust: ``FastHttpUser`` with no wait time, ``users`` of them, Locust's stats
  (b)  the harness's closed model, same users, think time 0, with per-second recording
       (the request event hook, per-second histograms, the second closer, the pipe)
  at the same fixed rate (30% of what (a) reached per core, so neither is saturated):
  (a') bare Locust, 2 x ``users`` paced by Locust's ``constant_throughput``
  (c)  the harness's open model at that rate: slot scheduler, user pool (the scenario
       default max_in_flight of 1000), latency from intended send times, recording

Per-core figure = requests completed in the window / CPU seconds the load process used in
it (user + system, from /proc), so other work on the machine changes it little; the
median of the rounds is reported, each round alternating the paths. An event loop that is
not saturated spends more CPU per request than a saturated one (fewer requests per
wake-up), hence the paced pair. Target: (b) >= 85% of (a) and (c) >= 85% of (a').
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


def bare_child(url: str, users: int, warmup_s: float, seconds: float, rate: float) -> None:
    import gevent
    from locust import constant, constant_throughput, task
    from locust.contrib.fasthttp import FastHttpUser
    from locust.env import Environment

    class Bare(FastHttpUser):
        host = url
        # rate 0: flat out; else each user paces itself to rate/users (Locust's own way)
        wait_time = constant(0) if rate <= 0 else constant_throughput(rate / users)

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


def run_bare(url: str, users: int, warmup_s: float, seconds: float,
             rate: float = 0.0) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--bare-child", url, str(users),
                          str(warmup_s), str(seconds), str(rate)], capture_output=True,
                         text=True, timeout=warmup_s + seconds + 60, check=True)
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
                        profile=Profile.constant(rate, total), max_in_flight=1000,
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
    ap.add_argument("--rate-share", type=float, default=0.3,
                    help="paced rate, as a share of what (a) reached per core")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported")
    ap.add_argument("--bare-child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_child:
        u, n, w, s, r = args.bare_child
        bare_child(u, int(n), float(w), float(s), float(r))
        return 0

    names = {"a": "(a) bare Locust FastHttpUser, flat out",
             "b": "(b) harness closed model + recording, flat out",
             "a2": "(a') bare Locust, paced (constant_throughput)",
             "c": "(c) harness open model + recording, same rate"}
    results: dict[str, list[dict[str, Any]]] = {p: [] for p in names}
    with tempfile.TemporaryDirectory(prefix="bench-loadgen-") as tmp:
        hap, url = start_haproxy(Path(tmp))
        try:
            print(f"static endpoint: HAProxy at {url}; {args.users} users; "
                  f"{args.seconds:g} s measured after {args.warmup:g} s warm-up; "
                  f"{args.repeat} round(s); {os.cpu_count()} cores, load average "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
            rate = 0.0
            # Rounds alternate the paths, so a busy spell of the machine hits all of them.
            for _ in range(args.repeat):
                bare = run_bare(url, args.users, args.warmup, args.seconds)
                results["a"].append(bare)
                results["b"].append(run_harness(url, "closed", args.users, 0, args.warmup,
                                                args.seconds))
                if not rate:  # fixed after the first round, so the rounds compare
                    rate = round(args.rate_share * bare["requests"] / bare["cpu_s"], -2)
                paced = run_bare(url, 2 * args.users, args.warmup, args.seconds, rate)
                opened = run_harness(url, "open", args.users, rate, args.warmup, args.seconds)
                for key, r in (("a2", paced), ("c", opened)):
                    r["rate"] = rate
                    results[key].append(r)
        finally:
            hap.send_signal(signal.SIGTERM)
            hap.wait(timeout=10)

    def per_core(r: dict[str, Any]) -> float:
        return float(r["requests"] / r["cpu_s"]) if r["cpu_s"] > 0 else float("nan")

    def median_run(rs: list[dict[str, Any]]) -> dict[str, Any]:
        return sorted(rs, key=per_core)[len(rs) // 2]

    print(f"\n{'path (median round)':<50} {'req/s':>7} {'CPU %':>6} {'req/s/core':>11} "
          f"{'ratio':>6}  rounds (req/s/core)")
    ok = True
    for key, ref in (("a", None), ("b", "a"), ("a2", None), ("c", "a2")):
        r = median_run(results[key])
        pc = per_core(r)
        rps = r["requests"] / r["wall_s"]
        cpu = 100 * r["cpu_s"] / r["wall_s"]
        every = " ".join(f"{per_core(x):.0f}" for x in results[key])
        ratio = "" if ref is None else f"{pc / per_core(median_run(results[ref])):.0%}"
        print(f"{names[key]:<50} {rps:>7.0f} {cpu:>6.0f} {pc:>11.0f} {ratio:>6}  {every}")
        if ref is not None:
            ok = ok and pc >= 0.85 * per_core(median_run(results[ref]))
    for key in ("b", "c"):
        r = median_run(results[key])
        extra = [f"failures={r['failures']}", f"dropped={r['dropped']}",
                 f"saturated={r['saturated']}",
                 f"per-second totals == Locust's: {r['per_s_equal_locust']}"]
        if "rate" in r:
            extra.insert(0, f"paced rate {r['rate']:.0f} req/s")
        print(f"  {names[key][:3]}  " + ", ".join(extra))
    print("\ntarget (harness >= 85% of bare Locust, per core):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
