"""`harness run` end to end: real replicas, HAProxy, Prometheus and Locust.

The scenario is the demo's shape squeezed into ~30 s per trial: a spike the fixed
strategies cannot carry and a crash, so the strategies must differ visibly in the data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

SCENARIO = """\
name: e2e
seed: 1
output: {out}
app:
  env: {{WORKERS: 4, SERVICE_MS: 50, SERVICE_DIST: exponential, QUEUE_LIMIT: 20}}
load:
  warmup_s: 2
  warmup_rps: 60
  timeout_s: 2
  stages:
    - {{name: base, duration_s: 8, rps: 80}}
    - {{name: spike, duration_s: 12, rps: 300, ramp_s: 1}}
    - {{name: after, duration_s: {after}, rps: 80}}
faults:
  - {{at_s: 22, action: crash, count: 1}}
slo: {{p95_ms: 300, error_rate: 0.01, stable_s: 3}}
strategies:
  - {{name: manual, kind: manual, replicas: 2}}
  - {{name: compose, kind: compose, replicas: 2}}
  - name: auto
    kind: orchestrated
    replicas: 2
    autoscaler: {{policy: hpa, metric: utilization, target: 0.6, min_replicas: 2,
                 max_replicas: 8, interval_s: 2,
                 behavior: {{scale_down: {{stabilization_window_s: 10}}}}}}
thresholds: ["auto.error_rate < 0.9"]
"""


def _scenario(tmp_path: Path, after: int = 14) -> Path:
    p = tmp_path / "e2e.yaml"
    p.write_text(SCENARIO.format(out=tmp_path / "results", after=after))
    return p


def _harness(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *args]


def _children_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(d.name))
    return out


def _procs_mentioning(needle: str) -> list[str]:
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd:
            found.append(f"{d.name}: {cmd[:200]}")
    return found


def _run_dir(tmp_path: Path) -> Path:
    dirs = list((tmp_path / "results").iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def _check_strategies_differ(run_dir: Path) -> None:
    ts = pd.read_csv(run_dir / "timeseries.csv")
    ev = pd.read_csv(run_dir / "events.csv")
    meas = ts[ts.t_s >= 0]
    ready = meas.groupby("strategy")["replicas_ready"]
    # the autoscaler added replicas during the spike; the fixed strategies did not
    assert ready.max()["auto"] > 2
    assert ready.max()["manual"] == 2 and ready.max()["compose"] == 2
    # after the crash, only manual stays short until the end
    end = meas[meas.t_s >= meas.t_s.max() - 2]
    last = end.groupby("strategy")["replicas_ready"].min()
    assert last["manual"] == 1
    assert last["compose"] == 2
    assert last["auto"] >= 2
    faults = ev[ev.kind == "fault"]
    assert set(faults.strategy) == {"manual", "compose", "auto"}
    # the fixed strategies drown in the spike: errors while 300 req/s meet 160 req/s capacity
    spike = meas[(meas.t_s >= 10) & (meas.t_s < 20)].groupby("strategy")["failed_rps"].sum()
    assert spike["manual"] > 100
    dec = pd.read_csv(run_dir / "decisions.csv")
    assert (dec.action == "scale").any() and dec.reason.notna().all()


@pytest.mark.slow
@pytest.mark.parametrize("platform", [
    "local", pytest.param("docker", marks=pytest.mark.docker)])
def test_run_end_to_end(tmp_path: Path, platform: str) -> None:
    r = subprocess.run(_harness("run", str(_scenario(tmp_path)), "--platform", platform),
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    first = r.stdout.splitlines()[0]
    assert first.startswith("harness ") and f"platform {platform}" in first
    run_dir = _run_dir(tmp_path)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "complete" and len(meta["trials"]) == 3
    assert meta["versions"]["locust"] and meta["host"]["cores"]
    for name in ("timeseries.csv", "events.csv", "decisions.csv", "summary.csv",
                 "report.html"):
        assert (run_dir / name).stat().st_size > 0, name
    _check_strategies_differ(run_dir)
    # the harness's own CPU (recorder + controller, Locust excluded: it is a child)
    assert meta["harness_cpu_share"] is not None


@pytest.mark.slow
def test_failed_threshold_exits_1(tmp_path: Path) -> None:
    p = tmp_path / "gate.yaml"
    p.write_text(f"""\
name: gate
output: {tmp_path / 'results'}
load:
  warmup_s: 1
  stages: [{{duration_s: 4, rps: 40}}]
strategies: [{{name: m, kind: manual, replicas: 1}}]
thresholds: ["m.p95_ms < 0.001"]
""")
    r = subprocess.run(_harness("run", str(p), "--platform", "local"), capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "p95_ms < 0.001" in r.stdout


@pytest.mark.slow
def test_sigkill_mid_run_keeps_partial_csvs(tmp_path: Path) -> None:
    p = subprocess.Popen(_harness("run", str(_scenario(tmp_path, after=60)), "--platform",
                                  "local", "--strategies", "manual"),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                         start_new_session=True)
    try:
        assert p.stdout is not None
        deadline = time.monotonic() + 120
        for line in p.stdout:
            if "t=  10s" in line or time.monotonic() > deadline:
                break
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
        # a SIGKILLed harness cannot clean up: `harness clean` removes what it left
        from harness.platforms.local.local_procs import labelled_processes

        left = {rid for _pid, rid in labelled_processes()}
        assert any(r.startswith("e2e-") for r in left), "replicas should outlive SIGKILL"
        for rid in left:
            if rid.startswith("e2e-"):
                subprocess.run(_harness("clean", "--run", rid), capture_output=True,
                               timeout=60, cwd=ROOT)
    run_dir = _run_dir(tmp_path)
    ts = pd.read_csv(run_dir / "timeseries.csv")
    assert len(ts) >= 10 and ts.t_s.max() >= 8
    assert ts.t_s.is_monotonic_increasing
    assert (ts.ok_rps > 0).sum() >= 8
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "running"  # killed: it never got to say otherwise
    from harness.platforms.local.local_procs import labelled_processes

    # `harness clean` (in finally above) found every process the killed run left behind
    assert not labelled_processes(meta["run_id"])


def _labelled_docker_objects(run_id: str) -> list[str]:
    import docker

    client = docker.from_env()
    flt = {"label": [f"harness.run={run_id}"]}
    from harness.platforms.docker.docker_common import list_containers

    found = [f"container {c.name}" for c in list_containers(client, flt)]
    found += [f"network {n.name}" for n in client.networks.list(filters=flt)]
    found += [f"volume {v.name}" for v in client.volumes.list(filters=flt)]
    try:
        found += [f"service {s.name}" for s in client.services.list(filters=flt)]
    except docker.errors.APIError:  # not a swarm manager: no services to find
        pass
    return found


@pytest.mark.slow
@pytest.mark.parametrize(("platform", "strategy"), [
    ("local", "compose"),
    pytest.param("docker", "compose", marks=pytest.mark.docker),
    pytest.param("docker", "auto", marks=pytest.mark.docker),
])
def test_sigint_tears_down_and_exits_130(tmp_path: Path, platform: str,
                                         strategy: str) -> None:
    p = subprocess.Popen(_harness("run", str(_scenario(tmp_path, after=60)), "--platform",
                                  platform, "--strategies", strategy),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    assert p.stdout is not None
    out = []
    for line in p.stdout:
        out.append(line)
        if "t=   5s" in line:
            break
    kids = _children_of(p.pid)
    assert kids, "the run should have child processes (replicas, HAProxy, load)"
    p.send_signal(signal.SIGINT)
    t_signal = time.monotonic()
    rest, _ = p.communicate(timeout=60)
    assert p.returncode == 130, "".join(out) + rest
    run_dir = _run_dir(tmp_path)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "incomplete" and meta["interrupted_by"] == "SIGINT"
    assert meta["ended"]
    ts = pd.read_csv(run_dir / "timeseries.csv")
    assert ts.t_s.max() >= 4
    time.sleep(1)
    alive = [k for k in kids if Path(f"/proc/{k}").exists()]
    assert not alive, f"children left: {alive}"
    assert not _procs_mentioning(str(run_dir.name))
    if platform == "docker":
        left = _labelled_docker_objects(meta["run_id"])
        assert not left, left
        assert time.monotonic() - t_signal < 15 + 1
