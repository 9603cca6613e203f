"""The three Docker deployers against the real daemon, HAProxy and Prometheus.

One scenario per kind (replicas ≤ 5, a fast sample app):
deploy 2 → both serve through HAProxy → Prometheus has both → scale to 5 (HAProxy follows
within 3 s of readiness; Prometheus scrapes all) → scale to 2 (HAProxy drops the others
within 3 s) → crash one (SIGKILL of its main PID): manual stays one short, compose and
orchestrated are back to 2 → pause one and tear down: nothing labelled is left, no paused
container. Measured figures go to test-artifacts/deploy_measurements.json and stdout.
"""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness.clock import RealClock
from harness.deploy.base import AppSpec, DeployEvent, DeploySpec, Replica, ReplicaState
from harness.deploy.prometheus import up_instances
from harness.deploy.registry import create
from harness.deploy.watch import ReplicaWatcher
from harness.platforms.docker.cleanup import leftovers
from harness.platforms.docker.docker_common import DockerDeployerBase
from tests.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# fast sample app: ready at once, short service time
APP_ENV = {"WORKERS": "8", "SERVICE_MS": "2", "STARTUP_S": "0"}
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
LB_FOLLOW_S = 3.0  # the bound for HAProxy following a scale
READY_TIMEOUT_S = 60.0


def need_images(client: Any) -> None:
    import docker.errors

    for ref in ("harness-app:latest", "harness-haproxy:latest", "harness-prometheus:latest"):
        try:
            client.images.get(ref)
        except docker.errors.ImageNotFound:
            pytest.skip(f"{ref} missing: run `harness images build`")


def get_work(lb_url: str, timeout_s: float = 3.0) -> str | None:
    """One request through the LB on a fresh connection; the X-Replica header or None."""
    port = int(lb_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", "/work", headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return resp.getheader("X-Replica") if resp.status == 200 else None
    except OSError:
        return None
    finally:
        conn.close()


def served_by(lb_url: str, n: int) -> Counter[str]:
    return Counter(r for r in (get_work(lb_url) for _ in range(n)) if r)


def live(d: DockerDeployerBase) -> list[Replica]:
    d._cache = None
    return [r for r in d.replicas() if r.state != ReplicaState.EXITED]


def ready(d: DockerDeployerBase) -> list[Replica]:
    d._cache = None
    return [r for r in d.replicas() if r.state == ReplicaState.READY]


def lb_routes(d: DockerDeployerBase) -> set[str]:
    return {s.addr for s in d.lb_servers() if s.routable and s.addr}


def prometheus_sees(d: DockerDeployerBase, reps: list[Replica]) -> bool:
    url = d.prometheus_url()
    assert url is not None
    try:
        up = up_instances(url)
    except Exception:
        return False
    return {r.address for r in reps} <= set(up)


def record(kind: str, key: str, value: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    f = ARTIFACTS / "deploy_measurements.json"
    data = json.loads(f.read_text()) if f.exists() else {}
    data.setdefault(kind, {})[key] = value
    f.write_text(json.dumps(data, indent=1, sort_keys=True))
    with open(ARTIFACTS / "deploy_measurements_history.jsonl", "a") as h:
        h.write(json.dumps({"kind": kind, "key": key, "value": value}) + "\n")
    print(f"[{kind}] {key} = {value}")


@pytest.mark.parametrize("kind", ["manual", "compose", "orchestrated"])
def test_deployer_end_to_end(kind: str, docker_client: Any, new_run_id: Any) -> None:
    need_images(docker_client)
    run_id = new_run_id(kind[:4])
    spec = DeploySpec(run_id=run_id, trial_id=f"{kind}-1", app=AppSpec(env=APP_ENV),
                      replicas=2)
    events: list[tuple[float, DeployEvent]] = []
    clock = RealClock()
    d = create("docker", kind, client=docker_client, spec=spec,
               on_event=lambda e: events.append((clock.now(), e)), clock=clock,
               restart_delay_s=1.0)  # the scenario's default (Swarm's own is 5 s)
    assert isinstance(d, DockerDeployerBase)
    watcher: ReplicaWatcher | None = None
    try:
        t0 = time.monotonic()
        d.deploy()
        d.wait_ready(2, READY_TIMEOUT_S)
        record(kind, "deploy_2_to_ready_s", round(time.monotonic() - t0, 2))
        watcher = ReplicaWatcher(d, lambda e: events.append((clock.now(), e)), clock)
        watcher.start()
        # published on loopback only, the three of them
        for port in (d._lb_port, d._stats_port, d._prom_port):
            assert port > 0
        assert d.lb_url().startswith("http://127.0.0.1:")

        # ── N replicas serve through HAProxy ──────────────────────────────────────
        ids = {r.id for r in ready(d)}
        assert len(ids) == 2
        assert wait_until(lambda: lb_routes(d) >= {r.address for r in ready(d)},
                          LB_FOLLOW_S + 5) is not None
        assert set(served_by(d.lb_url(), 30)) == ids
        # HAProxy's view is live: a check or `observe layer4` may take a replica out for
        # a moment (one fastinter re-check brings it back), so wait for it, bounded
        assert wait_until(lambda: d.lb_ready_replicas() == ids, LB_FOLLOW_S) is not None
        assert {d.instance_of(r) for r in ready(d)} == set(d.metrics_targets().values())
        assert wait_until(lambda: prometheus_sees(d, ready(d)), 20) is not None

        # ── scale 2 → 5 ───────────────────────────────────────────────────────────
        t_cmd = time.time()
        d.scale(5)
        record(kind, "scale_2_to_5_command_s", round(time.time() - t_cmd, 2))
        assert d.desired() == 5
        assert wait_until(lambda: len(ready(d)) == 5, READY_TIMEOUT_S) is not None
        five = ready(d)
        t_all_ready = max(r.ready_at or time.time() for r in five)
        waited = wait_until(lambda: lb_routes(d) >= {r.address for r in five}, 10, 0.05)
        assert waited is not None, "HAProxy never routed to all five"
        t_lb = time.time()
        record(kind, "scale_up_lb_after_last_ready_s", round(t_lb - t_all_ready, 2))
        assert t_lb - t_all_ready <= LB_FOLLOW_S + 0.2  # + one poll
        seen: Counter[str] = Counter()
        assert wait_until(lambda: set(seen.update(served_by(d.lb_url(), 10)) or seen)
                          >= {r.id for r in five}, 10, 0) is not None
        record(kind, "scale_up_command_to_all_serving_s", round(time.time() - t_cmd, 2))
        record(kind, "start_to_ready_s", sorted(round((r.ready_at or 0) - (r.started_at or 0),
                                                      2) for r in five))
        assert wait_until(lambda: prometheus_sees(d, five), 20) is not None
        record(kind, "scale_up_command_to_prometheus_all_s", round(time.time() - t_cmd, 2))

        # ── scale 5 → 2 ───────────────────────────────────────────────────────────
        t_cmd = time.time()
        d.scale(2)
        record(kind, "scale_5_to_2_command_s", round(time.time() - t_cmd, 2))
        assert wait_until(lambda: len(live(d)) == 2, 30) is not None
        two = live(d)
        gone = {r.address for r in five} - {r.address for r in two}
        t_gone = time.time()
        assert wait_until(lambda: not (lb_routes(d) & gone), LB_FOLLOW_S, 0.05) is not None, \
            f"HAProxy still routes to removed replicas: {lb_routes(d) & gone}"
        record(kind, "scale_down_lb_after_removed_s", round(time.time() - t_gone, 2))
        assert set(served_by(d.lb_url(), 20)) <= {r.id for r in two}

        # ── crash one (SIGKILL of its main PID) ───────────────────────────────────
        assert wait_until(lambda: len(ready(d)) == 2, READY_TIMEOUT_S) is not None
        victim = ready(d)[0]
        t_crash = time.time()
        d.crash(victim.id)
        if kind == "manual":
            # dead and never replaced; HAProxy takes it out of rotation
            assert wait_until(lambda: any(r.id == victim.id and r.state == ReplicaState.EXITED
                                          for r in d.replicas()), 10) is not None
            # checks only (no traffic here): ≤ ~3.5 s idle, more on a busy machine
            assert wait_until(lambda: victim.address not in lb_routes(d), 10) is not None
            record(kind, "crash_lb_out_of_rotation_s", round(time.time() - t_crash, 2))
            time.sleep(5)
            reps = {r.id: r for r in (d._snapshot()[0])}
            assert reps[victim.id].state == ReplicaState.EXITED
            assert reps[victim.id].exit_code == 137
            assert len(ready(d)) == 1, "manual must stay one replica short"
            assert set(served_by(d.lb_url(), 10)) == {r.id for r in ready(d)}
        else:
            def recovered() -> bool:
                reps = ready(d)
                if len(reps) != 2:
                    return False
                if kind == "compose":  # restarted in place by the restart policy
                    return any(r.id == victim.id and r.restarts >= 1 for r in reps)
                return victim.id not in {r.id for r in reps}  # Swarm: a new task

            assert wait_until(recovered, READY_TIMEOUT_S, 0.05) is not None, \
                f"{kind} did not recover: {d.replicas()}"
            back = ready(d)
            fresh = [r for r in back if r.id == victim.id or r.id not in
                     {v.id for v in two}]
            record(kind, "crash_to_ready_again_s",
                   round(max(r.ready_at or time.time() for r in fresh) - t_crash, 2))
            assert wait_until(lambda: lb_routes(d) >= {r.address for r in back}, 10,
                              0.05) is not None
            record(kind, "crash_to_lb_full_strength_s", round(time.time() - t_crash, 2))
            assert wait_until(lambda: set(served_by(d.lb_url(), 10)) == {r.id for r in back},
                              10, 0) is not None
        running = [r for r in d.replicas() if r.state == ReplicaState.READY]
        assert wait_until(lambda: prometheus_sees(d, running), 20) is not None

        # the watcher saw the crash and, where it happens, the recovery
        watcher.stop()
        kinds = [(e.kind, e.replica) for _, e in events]
        assert ("replica_exited", victim.id) in kinds or (
            kind == "orchestrated" and ("replica_removed", victim.id) in kinds), kinds
        if kind == "compose":
            assert ("replica_restarted", victim.id) in kinds
        assert any(k == "replica_lb_traffic" for k, _ in kinds)
        assert any(k == "replica_first_scrape" for k, _ in kinds)
        record(kind, "discovery_lag", [lag for lag in watcher.lag_table()
                                       if lag["start_to_lb_traffic_s"] is not None])

        # ── a paused replica at tear-down ─────────────────────────────────────────
        target = ready(d)[0]
        d.pause(target.id)  # type: ignore[attr-defined]
        assert wait_until(lambda: any(r.id == target.id and r.state == ReplicaState.PAUSED
                                      for r in live(d)), 5) is not None
    finally:
        if watcher is not None:
            watcher.stop()
        t_down = time.monotonic()
        d.teardown()
        record(kind, "teardown_s", round(time.monotonic() - t_down, 2))
    assert leftovers(docker_client, run_id) == []
    assert d.workdir is not None and not d.workdir.exists()


@pytest.mark.parametrize("kind", ["compose", "orchestrated"])
def test_kill_fault(kind: str, docker_client: Any, new_run_id: Any) -> None:
    """The API kill is a manual stop: compose's `restart: always` does not bring it back
    (until the next `up`); Swarm does not care how a task died and replaces it."""
    need_images(docker_client)
    run_id = new_run_id("kill")
    spec = DeploySpec(run_id=run_id, trial_id=f"{kind}-kill", app=AppSpec(env=APP_ENV),
                      replicas=2)
    d = create("docker", kind, client=docker_client, spec=spec,
               on_event=lambda e: None, clock=RealClock(), restart_delay_s=0.0)
    assert isinstance(d, DockerDeployerBase)
    with d:
        d.deploy()
        d.wait_ready(2, READY_TIMEOUT_S)
        victim = ready(d)[0]
        d.kill(victim.id)
        if kind == "compose":
            time.sleep(4)
            r = next(r for r in d._snapshot()[0] if r.id == victim.id)
            assert r.state == ReplicaState.EXITED and r.restarts == 0
            assert len(ready(d)) == 1
            # `up --scale` (what a person or the harness does next) starts it again
            d.scale(2)
        def back() -> bool:
            ids = {r.id for r in ready(d)}
            # compose: the same container again; Swarm: a new task instead of the dead one
            return len(ids) == 2 and (victim.id in ids) == (kind == "compose")

        assert wait_until(back, READY_TIMEOUT_S) is not None
    assert leftovers(docker_client, run_id) == []
