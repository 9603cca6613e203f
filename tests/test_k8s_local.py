"""scripts/k8s-local.sh end to end: a real Kubernetes 1.20 node on this machine.

`up` (building the binaries first when they are not cached: ~10 min), the node Ready through
the API, a Deployment of the local `harness-app` image behind a NodePort Service answering on
127.0.0.1:<nodePort>, the apiserver's pod proxy, pod to pod and pod to Service traffic, then
`down` and nothing left: processes, KUBE-* iptables chains, sysctls, kubelet mounts, kubepods
cgroups, k8s_ containers, paths outside the state folder.

Run it as root with the machine's lock held: `flock /tmp/harness-docker.lock pytest -m k8s`.
The API is spoken with urllib and the kubeconfig's token (no Kubernetes client library).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "k8s-local.sh"
BUILD_TIMEOUT_S = 3600  # a cold build is ~10 min on 2 idle cores; a busy machine is slower
UP_TIMEOUT_S = 300
# the sysctl families kubelet and kube-proxy touch (and their neighbours)
SYSCTL_PREFIXES = ("vm.", "kernel.panic", "kernel.keys.", "net.ipv4.conf.all.",
                   "net.ipv4.conf.default.", "net.ipv4.ip_forward", "net.netfilter.",
                   "net.bridge.")
SYSCTL_VOLATILE = ("net.netfilter.nf_conntrack_count",)
OUTSIDE_PATHS = ("/var/log/pods", "/var/log/containers", "/var/lib/kubelet",
                 "/var/lib/dockershim", "/var/run/dockershim.sock", "/var/run/kubernetes",
                 "/usr/libexec/kubernetes", "/etc/kubernetes")


def script(*args: str, env: dict[str, str] | None = None,
           timeout: float = UP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# ---------------------------------------------------------------- the machine's state

@dataclass(frozen=True)
class Machine:
    """What `up` may change and `down` must put back."""

    sysctls: dict[str, str]
    kube_iptables: list[str]
    mounts: list[str]
    cgroups: list[str]
    containers: list[str]
    processes: list[str]
    outside_paths: dict[str, bool]


def _sysctls() -> dict[str, str]:
    out = subprocess.run(["sysctl", "-a"], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        key, _, value = line.partition(" = ")
        if key.startswith(SYSCTL_PREFIXES) and key not in SYSCTL_VOLATILE:
            found[key] = value
    return found


def snapshot(state: Path, cache: Path) -> Machine:
    saves = [subprocess.run([t], capture_output=True, text=True).stdout
             for t in ("iptables-save", "ip6tables-save") if shutil.which(t)]
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
              if line.split()[1].startswith((str(state), "/var/lib/kubelet"))]
    cgroups = sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods*"))
    ps = subprocess.run(["docker", "ps", "-a", "--filter", "label=io.kubernetes.pod.name",
                         "--format", "{{.Names}}"], capture_output=True, text=True, check=True)
    procs = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        text = b" ".join(argv).decode(errors="replace")
        if text.startswith(str(cache)) or (text.startswith("etcd ") and str(state) in text):
            procs.append(text[:120])
    return Machine(
        sysctls=_sysctls(),
        kube_iptables=[ln for s in saves for ln in s.splitlines() if "KUBE-" in ln],
        mounts=mounts, cgroups=cgroups,
        containers=[n for n in ps.stdout.split() if n.startswith("k8s_")],
        processes=procs,
        outside_paths={p: os.path.lexists(p) for p in OUTSIDE_PATHS},
    )


# ---------------------------------------------------------------- the API, with urllib

class Api:
    """GET/POST against the apiserver with the kubeconfig's token and embedded CA."""

    def __init__(self, kubeconfig: Path) -> None:
        cfg = yaml.safe_load(kubeconfig.read_text())
        cluster = cfg["clusters"][0]["cluster"]
        self.server: str = cluster["server"]
        self.token: str = cfg["users"][0]["user"]["token"]
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        self.ctx = ssl.create_default_context(cadata=ca)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, f"GET {path}: {status} {body[:300]!r}"
        return json.loads(body)

    def create(self, path: str, obj: dict[str, Any]) -> Any:
        status, body = self.request("POST", path, obj)
        assert status == 201, f"POST {path}: {status} {body[:300]!r}"
        return json.loads(body)


def wait(what: str, check: Any, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"no {what} after {timeout_s:.0f} s"
        time.sleep(1)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def k8s_binaries() -> None:
    """The five binaries, built once (cached outside the repository)."""
    if os.geteuid() != 0:
        pytest.skip("the local cluster needs root")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine answers")
    r = script("build", timeout=BUILD_TIMEOUT_S)
    assert r.returncode == 0, f"build failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


@dataclass(frozen=True)
class Cluster:
    api: Api
    state: Path
    before: Machine
    cache: Path


@pytest.fixture(scope="module")
def cluster(k8s_binaries: None) -> Iterator[Cluster]:
    """A cluster in a private state folder, brought down at the end whatever happened."""
    state = Path(tempfile.mkdtemp(prefix="harness-k8s-test-"))
    env = {"HARNESS_K8S_STATE": str(state)}
    cache = Path(os.environ.get("HARNESS_K8S_CACHE", "/var/cache/harness-k8s"))
    if any(p.name.startswith("kube") for p in _our_processes(cache)):
        pytest.skip("a local cluster already runs; this test brings its own up and down")
    before = snapshot(state, cache)
    try:
        r = script("up", env=env)
        assert r.returncode == 0, f"up failed:\n{r.stdout}\n{r.stderr}"
        yield Cluster(Api(state / "kubeconfig"), state, before, cache)
    finally:
        script("down", env=env)
        shutil.rmtree(state, ignore_errors=True)


def _our_processes(cache: Path) -> list[Path]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv0 = cmdline.read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if argv0.startswith(str(cache)):
            found.append(Path(argv0))
    return found


@pytest.fixture(scope="module")
def app(cluster: Cluster) -> dict[str, Any]:
    """A Deployment of 2 harness-app pods and a NodePort Service, in a test namespace."""
    api, ns = cluster.api, f"t-k8s-{uuid.uuid4().hex[:8]}"
    labels = {"harness.managed": "true", "harness.run": ns}
    api.create("/api/v1/namespaces", {"metadata": {"name": ns, "labels": labels}})
    wait("default service account",
         lambda: api.request("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default")[0] == 200)
    sel = {"app": "web"}
    api.create(f"/apis/apps/v1/namespaces/{ns}/deployments", {
        "metadata": {"name": "web", "labels": labels},
        "spec": {"replicas": 2, "selector": {"matchLabels": sel}, "template": {
            "metadata": {"labels": {**sel, **labels}},
            "spec": {"containers": [{
                "name": "app", "image": "harness-app", "imagePullPolicy": "Never",
                "ports": [{"containerPort": 8000}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8000},
                                   "periodSeconds": 1}}]}}}})
    svc = api.create(f"/api/v1/namespaces/{ns}/services", {
        "metadata": {"name": "web", "labels": labels},
        "spec": {"type": "NodePort", "selector": sel,
                 "ports": [{"port": 80, "targetPort": 8000}]}})

    def ready_pods() -> list[dict[str, Any]]:
        pods = api.get(f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dweb")["items"]
        ok = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                     for c in p["status"].get("conditions", []))]
        return ok if len(ok) == 2 else []

    pods = wait("2 ready pods", ready_pods, timeout_s=180)
    return {"ns": ns, "pods": pods, "node_port": svc["spec"]["ports"][0]["nodePort"],
            "cluster_ip": svc["spec"]["clusterIP"]}


# ---------------------------------------------------------------- tests

def test_node_ready_and_up_is_idempotent(cluster: Cluster) -> None:
    node = cluster.api.get("/api/v1/nodes/localhost")
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True", ready
    version = cluster.api.get("/version")
    assert version["gitVersion"].startswith("v1.20."), version
    # the real HPA's API versions of 1.20
    for v in ("v1", "v2beta1", "v2beta2"):
        assert cluster.api.request("GET", f"/apis/autoscaling/{v}")[0] == 200, v
    env = {"HARNESS_K8S_STATE": str(cluster.state)}
    again = script("up", env=env)
    assert again.returncode == 0 and "already up" in again.stdout, again
    assert script("status", env=env).returncode == 0


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:  # refused: kube-proxy has not written the NodePort's rules yet
        return False


def test_nodeport_answers_on_localhost(app: dict[str, Any]) -> None:
    url = f"http://127.0.0.1:{app['node_port']}/work"
    # kube-proxy programs the NodePort after it sees the ready endpoints (its iptables
    # sync, ~1 s later): the pods' readiness alone does not mean it answers yet
    wait("NodePort answer", lambda: _answers(url), timeout_s=30)
    # both replicas behind the Service answer (X-Replica names the pod)
    replicas = set()
    for _ in range(40):
        with urllib.request.urlopen(url, timeout=5) as r:
            assert r.status == 200
            replicas.add(r.headers["X-Replica"])
    assert replicas == {p["metadata"]["name"] for p in app["pods"]}


def test_pod_proxy_serves_metrics(cluster: Cluster, app: dict[str, Any]) -> None:
    pod = app["pods"][0]["metadata"]["name"]
    status, body = cluster.api.request(
        "GET", f"/api/v1/namespaces/{app['ns']}/pods/{pod}:8000/proxy/metrics")
    assert status == 200, body[:300]
    assert re.search(rb"^# (HELP|TYPE) ", body, re.M), body[:300]


def test_pods_reach_pods_and_services(cluster: Cluster, app: dict[str, Any]) -> None:
    api, ns = cluster.api, app["ns"]
    ips = [p["status"]["podIP"] for p in app["pods"]]
    assert all(ip.startswith("172.17.") for ip in ips), ips  # docker0, no CNI
    urls = [f"http://{ip}:8000/healthz" for ip in ips] + [f"http://{app['cluster_ip']}/healthz"]
    code = ("import sys, urllib.request\n"
            "for u in sys.argv[1:]:\n"
            "    print(u, urllib.request.urlopen(u, timeout=5).status)\n")
    api.create(f"/api/v1/namespaces/{ns}/pods", {
        "metadata": {"name": "probe", "labels": {"harness.managed": "true", "harness.run": ns}},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "probe", "image": "harness-app", "imagePullPolicy": "Never",
            "command": ["python3", "-c", code, *urls]}]}})

    def done() -> str:
        phase = api.get(f"/api/v1/namespaces/{ns}/pods/probe")["status"].get("phase", "")
        return phase if phase in ("Succeeded", "Failed") else ""

    phase = wait("probe pod finished", done, timeout_s=120)
    # the log comes through the apiserver from the kubelet (its client certificate)
    status, log = api.request("GET", f"/api/v1/namespaces/{ns}/pods/probe/log")
    assert status == 200, log[:300]
    assert phase == "Succeeded", log.decode(errors="replace")
    assert log.decode().count(" 200") == len(urls), log


def test_down_leaves_the_machine_as_found(cluster: Cluster) -> None:
    env = {"HARNESS_K8S_STATE": str(cluster.state)}
    r = script("down", env=env)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    after = snapshot(cluster.state, cluster.cache)
    before = cluster.before
    assert after.processes == [], after.processes
    assert after.kube_iptables == [], after.kube_iptables
    assert after.mounts == [], after.mounts
    assert after.cgroups == [], after.cgroups
    assert after.containers == [], after.containers
    assert after.outside_paths == before.outside_paths
    changed = {k: (before.sysctls.get(k), v) for k, v in after.sysctls.items()
               if before.sysctls.get(k) != v}
    assert changed == {}, changed
    assert script("status", env=env).returncode == 3
    assert script("down", env=env).returncode == 0  # idempotent
