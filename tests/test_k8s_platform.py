"""The kubernetes platform on a real cluster (marker `k8s`): the local single-node 1.20
cluster of scripts/k8s-local.sh, brought up by the session fixture when it is not up
(and down again after this module if the fixture started it).

Each kind deploys and serves through 127.0.0.1:nodePort; a crash (SIGKILL by host PID)
restarts a Deployment's container in place (same pod, restartCount 1) and leaves a manual
pod dead; a kill (pod deleted) is replaced by the ReplicaSet and not for manual pods; the
scale subresource takes the Deployment 2 → 4 → 2 with the Service's endpoints following;
Prometheus scrapes the pods through the API server; tear-down leaves no labelled
namespace; and the docker platform's sweep never touches the pods' Docker containers.
Timings are printed (pytest -s) for the close note: start-to-ready, crash-to-ready,
kill-to-replacement-ready, scale-up-to-serving.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.clock import RealClock
from harness.deploy.base import AppSpec, DeployEvent, DeploySpec, ReplicaState
from harness.deploy.registry import create
from harness.platforms.kubernetes.cleanup import leftovers, sweep
from harness.platforms.kubernetes.client import KubeClient, kube_client, path_of
from harness.platforms.kubernetes.deployer import KubeDeployer
from tests.waiting import wait_until

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(os.environ.get("HARNESS_K8S_SCRIPT", ROOT / "scripts" / "k8s-local.sh"))
APP_ENV = {"WORKERS": "8", "SERVICE_MS": "2", "STARTUP_S": "0"}
READY_S = 90.0


# where scripts/k8s-local.sh writes the local cluster's kubeconfig (HARNESS_K8S_STATE)
LOCAL_KUBECONFIG = Path(os.environ.get("HARNESS_K8S_STATE", "/var/lib/harness-k8s")) \
    / "kubeconfig"


def _client() -> KubeClient | None:
    explicit = os.environ.get("HARNESS_KUBECONFIG") or (
        str(LOCAL_KUBECONFIG) if LOCAL_KUBECONFIG.is_file() else None)
    try:
        return kube_client(explicit)
    except Exception:
        return None


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeClient]:
    """A client of the local cluster; `up` first when it does not answer, `down` after
    this module when this fixture brought it up (the tests after it measure CPU)."""
    started = False
    client = _client()
    if client is None:
        if not SCRIPT.is_file():
            pytest.skip(f"no cluster answers and {SCRIPT} is missing")
        # build is a no-op when the binaries are cached (a cold one takes ~10 min)
        b = subprocess.run(["bash", str(SCRIPT), "build"], capture_output=True, text=True,
                           timeout=3600)
        if b.returncode != 0:
            pytest.fail(f"`{SCRIPT} build` failed: {(b.stdout + b.stderr)[-800:]}")
        r = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True,
                           timeout=600)
        started = r.returncode == 0
        client = _client()
        if client is None:
            pytest.fail(f"`{SCRIPT} up` did not bring a cluster up: "
                        f"{(r.stdout + r.stderr)[-800:]}")
    try:
        yield client
    finally:
        if started:
            subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, timeout=300)


def get(url: str, path: str = "/work") -> int:
    u = urllib.parse.urlsplit(url)
    assert u.hostname == "127.0.0.1"  # the host sends only to 127.0.0.1
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


class Trial:
    def __init__(self, kube: KubeClient, kind: str, run_id: str, replicas: int = 2) -> None:
        self.events: list[DeployEvent] = []
        self.spec = DeploySpec(run_id=run_id, trial_id=f"{kind}-1",
                               app=AppSpec(env=APP_ENV), replicas=replicas)
        d = create("kubernetes", kind, client=kube, spec=self.spec,
                   on_event=self.events.append, clock=RealClock())
        assert isinstance(d, KubeDeployer)
        self.d = d

    def ready(self) -> list[Any]:
        return [r for r in self.d.replicas() if r.state == ReplicaState.READY]

    def wait_ready(self, n: int, timeout_s: float = READY_S) -> float:
        took = wait_until(lambda: len(self.ready()) >= n, timeout_s)
        assert took is not None, f"{len(self.ready())}/{n} ready: {self.d.explain_unready()}"
        return took

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


@pytest.fixture
def trial(kube: KubeClient, new_run_id: Callable[[str], str]
          ) -> Iterator[Callable[..., Trial]]:
    made: list[Trial] = []

    def make(kind: str, replicas: int = 2) -> Trial:
        t = Trial(kube, kind, new_run_id("k8s"), replicas)
        made.append(t)
        t.d.deploy()
        return t

    yield make
    for t in made:
        t.d.teardown()
        assert leftovers(kube, t.spec.run_id) == [], "a labelled namespace outlived teardown"


def _print(label: str, seconds: float) -> None:
    print(f"\nK8S-TIMING {label}: {seconds:.2f} s")


def test_manual_serves_crash_stays_dead_kill_stays_gone(trial: Callable[..., Trial]) -> None:
    t = trial("manual")
    t.wait_ready(2)
    assert get(t.d.lb_url()) == 200
    for r in t.d.replicas():
        assert r.ready_at is not None and r.started_at is not None
        _print("manual start-to-ready", r.ready_at - r.started_at)
    a, b = t.d.replicas()
    t.d.crash(a.id)
    assert wait_until(lambda: any(r.id == a.id and r.state == ReplicaState.EXITED
                                  for r in t.d.replicas()), 20) is not None
    time.sleep(3)  # nobody restarts a manual pod
    dead = next(r for r in t.d.replicas() if r.id == a.id)
    assert (dead.state, dead.restarts, dead.exit_code) == (ReplicaState.EXITED, 0, 137)
    t.d.kill(b.id)
    assert wait_until(lambda: b.id not in {r.id for r in t.d.replicas()}, 20) is not None
    time.sleep(3)
    assert [r.id for r in t.d.replicas()] == [a.id]  # not replaced
    assert {"pod_created", "pod_scheduled", "deployed"} <= set(t.kinds())


def test_deployment_crash_restarts_in_place_kill_is_replaced(
        trial: Callable[..., Trial]) -> None:
    t = trial("compose")
    t.wait_ready(2)
    assert get(t.d.lb_url()) == 200
    a, b = t.d.replicas()
    t0 = time.monotonic()
    t.d.crash(a.id)
    back = wait_until(lambda: any(r.id == a.id and r.restarts == 1
                                  and r.state == ReplicaState.READY
                                  for r in t.d.replicas()), 60)
    assert back is not None, t.d.explain_unready()
    _print("compose crash-to-ready (same pod, restartCount 1)", time.monotonic() - t0)
    assert {r.id for r in t.d.replicas()} == {a.id, b.id}  # restarted in place
    t0 = time.monotonic()
    t.d.kill(b.id)
    replaced = wait_until(lambda: b.id not in {r.id for r in t.d.replicas()}
                          and len(t.ready()) == 2, 60)
    assert replaced is not None, t.d.explain_unready()
    _print("compose kill-to-replacement-ready", time.monotonic() - t0)
    assert len({r.id for r in t.d.replicas()} - {a.id}) == 1
    assert "pod_deleted" in t.kinds()


def test_scale_subresource_and_the_service_follows(trial: Callable[..., Trial]) -> None:
    t = trial("orchestrated")
    t.wait_ready(2)
    assert wait_until(lambda: t.d.endpoints_ready() == 2, 30) is not None
    t0 = time.monotonic()
    t.d.scale(4)
    assert t.d.desired() == 4
    took = wait_until(lambda: t.d.endpoints_ready() == 4, 60)
    assert took is not None, t.d.explain_unready()
    _print("scale 2->4 to serving (endpoints)", time.monotonic() - t0)
    dep = t.d.client.get(path_of("apis", "apps", "v1", "namespaces", t.d.namespace,
                                 "deployments", t.d.app_name, "scale"))
    assert dep["spec"]["replicas"] == 4
    t.d.scale(2)
    assert wait_until(lambda: t.d.endpoints_ready() == 2
                      and len(t.d.replicas()) == 2, 60) is not None
    assert get(t.d.lb_url()) == 200
    assert "scale_applied" in t.kinds()


def test_prometheus_scrapes_pods_through_the_api_server(
        trial: Callable[..., Trial]) -> None:
    from harness.deploy.prometheus import up_instances

    t = trial("compose")
    t.wait_ready(2)
    url = t.d.prometheus_url()
    assert url is not None
    addrs = {r.address for r in t.d.replicas()}
    took = wait_until(lambda: set(up_instances(url)) >= addrs, 30, 0.5)
    assert took is not None, up_instances(url)


def test_pause_freezes_the_pod_container(trial: Callable[..., Trial]) -> None:
    t = trial("manual", replicas=1)
    t.wait_ready(1)
    (a,) = t.d.replicas()
    t.d.pause(a.id)
    assert t.d.replicas()[0].state == ReplicaState.PAUSED
    t.d.unpause(a.id)
    assert t.d.replicas()[0].state != ReplicaState.PAUSED


def test_docker_sweep_leaves_the_pod_containers_alone(
        trial: Callable[..., Trial], docker_client: Any) -> None:
    from harness.platforms.docker.cleanup import leftovers as docker_leftovers

    t = trial("manual", replicas=1)
    t.wait_ready(1)
    ns = t.d.namespace
    raw = docker_client.api.containers(
        filters={"label": [f"io.kubernetes.pod.namespace={ns}"]})
    # dockershim copied the pod's labels (onto the pod's sandbox container): the docker
    # sweep would see it as its own
    assert any(c["Labels"].get("harness.run") == t.spec.run_id for c in raw), \
        [c["Labels"] for c in raw]
    assert docker_leftovers(docker_client, t.spec.run_id) == []


def test_clean_removes_a_leftover_namespace(kube: KubeClient,
                                            new_run_id: Callable[[str], str]) -> None:
    from harness.platforms.kubernetes.manifests import namespace

    rid = new_run_id("k8s")
    kube.create("/api/v1/namespaces", namespace(rid))
    assert leftovers(kube, rid)
    assert sweep(kube, rid) == [f"removed namespace {namespace(rid)['metadata']['name']}"]
    assert leftovers(kube, rid) == []


def test_harness_run_the_kubernetes_example(kube: KubeClient, tmp_path: Path,
                                            new_run_id: Callable[[str], str]) -> None:
    """`harness run examples/kubernetes.yaml --platform kubernetes`, durations shortened."""
    import json
    import sys

    import pandas as pd
    import yaml

    sc = yaml.safe_load((ROOT / "examples" / "kubernetes.yaml").read_text())
    sc["load"].update(warmup_s=3, warmup_rps=40)
    sc["load"]["stages"] = [{"name": "base", "duration_s": 10, "rps": 40},
                            {"name": "spike", "duration_s": 20, "rps": 160, "ramp_s": 1},
                            {"name": "after", "duration_s": 10, "rps": 40}]
    sc["faults"] = [{"at_s": 6, "action": "crash", "count": 1},
                    {"at_s": 25, "action": "kill", "count": 1}]
    # the three kinds; the real-HPA strategy has its own test (test_k8s_hpa.py)
    sc["strategies"] = [s for s in sc["strategies"] if s["name"] != "real-hpa"]
    sc["strategies"][2]["autoscaler"]["max_replicas"] = 4
    sc.pop("thresholds", None)
    f = tmp_path / "k8s.yaml"
    f.write_text(yaml.safe_dump(sc))
    rid = new_run_id("k8s-run")
    env = dict(os.environ)
    env["KUBECONFIG"] = kube.cfg.source
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(f), "--platform",
                        "kubernetes", "--out", str(tmp_path / "results"), "--run-id", rid],
                       capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    run_dir = tmp_path / "results" / rid
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["platform"] == "kubernetes"
    assert meta["load_balancer"] == "kube-proxy iptables NodePort (random)"
    assert [t["status"] for t in meta["trials"]] == ["complete"] * 3
    ev = pd.read_csv(run_dir / "events.csv")
    for strategy in ("manual", "compose", "autoscale"):
        kinds = set(ev[ev.strategy == strategy].kind)
        assert {"deployed", "pod_created", "pod_scheduled", "replica_started",
                "replica_ready", "fault", "torn_down"} <= kinds, (strategy, kinds)
        faults = ev[(ev.strategy == strategy) & (ev.kind == "fault")]
        assert set(faults.outcome) == {"ok"}, faults.to_string()
    compose = ev[ev.strategy == "compose"]
    assert "replica_restarted" in set(compose.kind)  # the crash: restarted in place
    assert "pod_deleted" in set(compose.kind)  # the kill: the pod went, a new one came
    ts = pd.read_csv(run_dir / "timeseries.csv")
    # the pods' CPU from their cgroups under kubepods/ (dockershim containers)
    assert ts.replicas_cpu_pct.notna().sum() > 10, ts.replicas_cpu_pct.describe()
    manual = ev[ev.strategy == "manual"]
    assert "replica_restarted" not in set(manual.kind)
    assert leftovers(kube, rid) == []
