"""The `kubernetes` platform's deployers: the three strategy kinds with Kubernetes' own
semantics (docs/architecture.md, "Kubernetes").

- manual: N bare pods, restartPolicy Never — a crashed pod stays dead, a killed
  (deleted) pod stays gone (kinds.py);
- compose: a Deployment with a fixed replica count — the kubelet restarts a crashed
  container in place (same pod, restartCount + 1, CrashLoopBackOff's growing back-off),
  the ReplicaSet replaces a deleted pod;
- orchestrated: the same Deployment, scaled by the harness's controller through the
  scale subresource (as the HPA does).

Per trial: a namespace `harness-<run id>` (created if needed, deleted at tear-down), the
app objects, a NodePort Service (the LB: kube-proxy, http://NODE:nodePort; NODE is
127.0.0.1 on the local cluster), Prometheus as a host process scraping the pods through
the API server (kube_prometheus.py). A watch on the trial's pods (podwatch.py) keeps the
replica set current, dates readiness as it is seen, and reports pod events
(created, scheduled, deleting, deleted, back-off); the run loop's ReplicaWatcher derives
started / ready / exited / restarted / removed from `replicas()` as on every platform.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from harness.autoscale.spec import AutoscalerSpec
from harness.clock import Clock
from harness.deploy.base import (
    DeployEvent,
    DeploysOnce,
    DeploySpec,
    EventSink,
    Replica,
    ReplicaState,
)
from harness.errors import DeployError, PrerequisiteError
from harness.platforms.kubernetes import kube_prometheus, manifests
from harness.platforms.kubernetes.client import KubeApiError, KubeClient, path_of
from harness.platforms.kubernetes.endpoints import EndpointsWatch
from harness.platforms.kubernetes.node_runtime import NodeRuntime
from harness.platforms.kubernetes.pods import (
    PodView,
    has_started,
    parse_pod,
    pod_events,
    replica_state,
)
from harness.platforms.kubernetes.podwatch import ResourceWatch

LB_DESCRIPTION = "kube-proxy iptables NodePort (random)"
NAMESPACE_TIMEOUT_S = 90.0


def ns_path(ns: str, *rest: str) -> str:
    return path_of("api", "v1", "namespaces", ns, *rest)


def apps_path(ns: str, *rest: str) -> str:
    return path_of("apis", "apps", "v1", "namespaces", ns, *rest)


def ensure_namespace(client: KubeClient, run_id: str, timeout_s: float) -> str:
    """Create the run's namespace, waiting out a previous trial's that is terminating."""
    ns = manifests.namespace_name(run_id)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.create("/api/v1/namespaces", manifests.namespace(run_id))
            return ns
        except KubeApiError as e:
            if e.status != 409:
                raise
        existing = client.get(path_of("api", "v1", "namespaces", ns))
        if (existing.get("status") or {}).get("phase") != "Terminating":
            return ns
        if time.monotonic() > deadline:
            raise DeployError(f"namespace {ns} is still terminating after {timeout_s:.0f} s")
        time.sleep(0.5)


def delete_namespace(client: KubeClient, ns: str, timeout_s: float) -> bool:
    """Delete and wait (bounded) until it is gone; True when it is."""
    client.delete(path_of("api", "v1", "namespaces", ns), grace_period_s=0)
    # a terminating namespace takes no new objects, so no controller re-creates pods now:
    # end them at once instead of waiting out their grace period (as `docker rm -f`)
    with contextlib.suppress(DeployError):
        client.delete(path_of("api", "v1", "namespaces", ns, "pods"), grace_period_s=0,
                      propagation=None)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            client.get(path_of("api", "v1", "namespaces", ns))
        except KubeApiError as e:
            if e.status == 404:
                return True
            raise
        time.sleep(0.5)
    return False


class KubeDeployer(DeploysOnce):
    """Deployer + FaultTarget + ReadinessDiagnostics on a Kubernetes cluster; the kinds
    below differ only in the app objects and how they scale."""

    platform = "kubernetes"
    kind = "kubernetes"
    lb_description = LB_DESCRIPTION

    def __init__(self, client: Any, spec: DeploySpec, on_event: EventSink, clock: Clock, *,
                 node_address: str = "127.0.0.1", image_pull_policy: str = "Never",
                 deploy_timeout_s: float = 90.0, prometheus_bin: str | None = None,
                 use_prometheus: bool = True, scrape_interval_s: float = 1.0,
                 namespace_timeout_s: float = NAMESPACE_TIMEOUT_S,
                 node_runtime: NodeRuntime | None = None, workdir: Path | None = None
                 ) -> None:
        if not isinstance(client, KubeClient):
            raise PrerequisiteError("the kubernetes platform needs a Kubernetes API client "
                                    "(a kubeconfig)")
        self.client = client
        self.spec = spec
        self._on_event = on_event
        self._clock = clock
        self.node_address = node_address
        self.pull_policy: manifests.PullPolicy = image_pull_policy  # type: ignore[assignment]
        self.deploy_timeout_s = deploy_timeout_s
        self.prometheus_bin = (prometheus_bin or shutil.which("prometheus")) \
            if use_prometheus else None
        self.scrape_interval_s = scrape_interval_s
        self.namespace_timeout_s = namespace_timeout_s
        self.runtime = node_runtime or NodeRuntime()
        self._workdir_parent = workdir
        self.namespace = manifests.namespace_name(spec.run_id)
        self.app_name = manifests.object_name(spec, manifests.APP_NAME)
        self.service_name = manifests.object_name(spec, "lb")
        self._lock = threading.RLock()
        self._teardown_lock = threading.Lock()
        self._pods: dict[str, PodView] = {}
        # (seen wall time, DELETED or not, the pod) as the watch saw them: what the pods
        # were at an instant (policy kubernetes-hpa rebuilds the HPA's pod list at a sync)
        self.pod_log: deque[tuple[float, bool, PodView]] = deque(maxlen=4096)
        self._ready_at: dict[tuple[str, int], float] = {}
        self._paused: set[str] = set()
        self._targets_file: Path | None = None
        self._targets: frozenset[tuple[str, str]] = frozenset()
        self._targets_lock = threading.Lock()
        self._desired = spec.replicas
        self._deployed = False
        self._torn_down = False
        self._watch: ResourceWatch | None = None
        self._endpoints: EndpointsWatch | None = None
        self._node_port = 0
        self._prom: subprocess.Popen[bytes] | None = None
        self._prom_port = 0
        self.root: Path | None = None
        self.start_to_ready_s: list[float] = []

    # ── events ───────────────────────────────────────────────────────────────────────
    def emit(self, kind: str, replica: str = "", detail: str = "",
             at_wall: float | None = None) -> None:
        at = None if at_wall is None else self._clock.now() - (self._clock.wall() - at_wall)
        with contextlib.suppress(Exception):  # a broken sink never breaks a deployment
            self._on_event(DeployEvent(kind, replica, detail, at))

    def _on_pod(self, kind: str, obj: dict[str, Any], seen: float, live: bool) -> None:
        view = parse_pod(obj, manifests.APP_CONTAINER)
        with self._lock:
            self.pod_log.append((seen, kind == "DELETED", view))
            prev = self._pods.get(view.name)
            if prev is not None and prev.uid != view.uid:
                prev = None  # a new pod of the same name (manual re-creation)
            if kind == "DELETED":
                self._pods.pop(view.name, None)
                self._paused.discard(view.name)
                events = pod_events(prev or view, None, seen)
            else:
                self._pods[view.name] = view
                events = pod_events(prev, view, seen)
                if view.ready and view.container_state == "running" \
                        and view.life not in self._ready_at:
                    # seen as it happened (ms after the kubelet said so) beats the
                    # condition's whole-second lastTransitionTime; a relist only has that
                    self._ready_at[view.life] = seen if live else (view.ready_since or seen)
        for ev in events:
            self.emit(ev.kind, ev.pod, ev.detail, ev.at_wall)
        self._sync_targets()

    def _sync_targets(self, force: bool = False) -> None:
        """Prometheus' targets file follows the pods that have an address (kube_prometheus
        says why file_sd); rewritten only when that set changed."""
        if self._targets_file is None:
            return
        with self._lock:
            pods = frozenset((p.name, p.pod_ip) for p in self._pods.values()
                             if p.pod_ip and not p.deleting)
        with self._targets_lock:
            if pods == self._targets and not force:
                return
            kube_prometheus.write_targets(self._targets_file, kube_prometheus.targets_document(
                pods, namespace=self.namespace, app_port=self.spec.app.port,
                api_host_port=self.client.host_port, metrics_path=self.spec.app.metrics_path))
            self._targets = pods

    # ── Deployer ─────────────────────────────────────────────────────────────────────
    def deploy(self) -> None:
        self._claim_deploy(self._lock)
        t0 = self._clock.now()
        try:
            ensure_namespace(self.client, self.spec.run_id, self.namespace_timeout_s)
            self._watch = ResourceWatch(
                self.client, ns_path(self.namespace, "pods"), self._on_pod,
                label_selector=manifests.selector(manifests.app_selector(self.spec)),
                name=f"kube-pods-{self.spec.trial_id}", wall=self._clock.wall)
            self._watch.start()
            if not self._watch.synced.wait(10.0):
                raise DeployError(f"the pod watch did not start: {self._watch.last_error}")
            self._create_app()
            svc = self.client.create(ns_path(self.namespace, "services"),
                                     manifests.service(self.spec, self.service_name))
            self._node_port = manifests.node_port(svc)
            self._endpoints = EndpointsWatch(
                self.client, self.namespace, self.service_name,
                lambda kind, pod, seen: self.emit(kind, pod, "", seen), self._clock.wall)
            self._endpoints.start()
            self._start_prometheus()
            self._wait_serving(t0 + self.deploy_timeout_s)
        except (DeployError, PrerequisiteError):
            raise
        except Exception as e:
            raise DeployError(f"kubernetes {self.kind} deploy failed: {type(e).__name__}: "
                              f"{e}") from e
        self.emit("deployed", detail=f"replicas={self.spec.replicas} lb={self.lb_url()} "
                                     f"namespace={self.namespace} "
                                     f"took_s={self._clock.now() - t0:.2f}")

    def _create_app(self) -> None:
        raise NotImplementedError

    def _scale(self, replicas: int) -> None:
        raise NotImplementedError

    def _start_prometheus(self) -> None:
        if not self.prometheus_bin:
            return
        from harness.platforms.local import local_prometheus
        from harness.platforms.local.local_procs import free_port, spawn

        parent = self._workdir_parent
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(
            prefix=f"harness-k8s-{manifests.dns_label(self.spec.trial_id, max_len=30)}-",
            dir=parent))
        auth = kube_prometheus.write_credentials(self.root, self.client.cfg)
        self._targets_file = self.root / "targets.json"
        self._sync_targets(force=True)
        cfg = self.root / "prometheus.yml"
        cfg.write_text(kube_prometheus.render_config(
            targets_file=self._targets_file, auth=auth, scheme=self.client.scheme,
            scrape_interval_s=self.scrape_interval_s))
        (self.root / "prometheus-data").mkdir()
        self._prom_port = free_port()
        self._prom = spawn(local_prometheus.command(
            self.prometheus_bin, config_file=cfg, storage_dir=self.root / "prometheus-data",
            port=self._prom_port), env=os.environ, log_path=self.root / "prometheus.log",
            cwd=self.root, run_id=self.spec.run_id)

    def _wait_serving(self, deadline: float) -> None:
        """Until the NodePort answers (kube-proxy has an endpoint) and Prometheus is up."""
        from harness.deploy.prometheus import is_ready

        lb_ok = prom_ok = False
        while self._clock.now() < deadline:
            lb_ok = lb_ok or self._lb_answers()
            prom_ok = prom_ok or self._prom is None or is_ready(self.prometheus_url() or "",
                                                                1.0)
            if self._prom is not None and self._prom.poll() is not None:
                raise DeployError("Prometheus exited: " + self._prom_log())
            if lb_ok and prom_ok:
                return
            time.sleep(0.2)
        why = " ".join(self.explain_unready())
        raise DeployError(f"kubernetes {self.kind}: "
                          f"{'the LB answered' if lb_ok else 'the NodePort never answered'}, "
                          f"Prometheus {'ready' if prom_ok else 'not ready'} after "
                          f"{self.deploy_timeout_s:.0f} s. {why}".strip())

    def _lb_answers(self) -> bool:
        import http.client

        try:
            conn = http.client.HTTPConnection(self.node_address, self._node_port, timeout=1.0)
            try:
                conn.request("GET", self.spec.app.ready_path)
                conn.getresponse().read()
                return True
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return False

    def _prom_log(self) -> str:
        from harness.platforms.local.local_procs import tail

        return tail(self.root / "prometheus.log", 600) if self.root else ""

    def scale(self, replicas: int) -> None:
        if replicas < 0:
            raise DeployError(f"replicas must be ≥ 0, not {replicas}")
        self._require_running()
        t0 = self._clock.now()
        with self._lock:
            before = self._desired
            self._scale(replicas)
            self._desired = replicas
        self.emit("scale_applied", detail=f"from={before} to={replicas} "
                                          f"command_s={self._clock.now() - t0:.2f}")

    def desired(self) -> int:
        return self._desired

    def pod_views(self) -> list[PodView]:
        with self._lock:
            return sorted(self._pods.values(), key=lambda p: (p.created_at or 0.0, p.name))

    def replicas(self) -> list[Replica]:
        with self._lock:
            # a replica is a pod whose container has started (a pod being scheduled or
            # created is not running yet: pod_created / pod_scheduled say where it is,
            # explain_unready why it is stuck); a terminating pod has left the Service
            pods = [p for p in self._pods.values() if not p.deleting and has_started(p)]
            paused = set(self._paused)
            ready_at = dict(self._ready_at)
        out = []
        for p in pods:
            state = replica_state(p, paused=p.name in paused)
            started = p.started_at
            if started is not None and p.container_id:
                precise = self.runtime.started_at(p.container_id)
                started = precise if precise is not None else started
            ready = ready_at.get(p.life) if state in (ReplicaState.READY,
                                                      ReplicaState.PAUSED) else None
            if ready is not None and started is not None:
                ready = max(ready, started)
            out.append(Replica(
                id=p.name, name=p.name, state=state, restarts=p.restarts, started_at=started,
                ready_at=ready,
                exit_code=p.exit_code if state == ReplicaState.EXITED else None,
                address=f"{p.pod_ip}:{self.spec.app.port}" if p.pod_ip else None))
        out.sort(key=lambda r: (r.started_at or 0.0, r.id))
        return out

    def _pod(self, replica_id: str) -> PodView:
        self._require_running()
        with self._lock:
            p = self._pods.get(replica_id)
        if p is None:
            raise KeyError(replica_id)
        return p

    def crash(self, replica_id: str) -> None:
        from harness.platforms.docker import docker_faults

        p = self._pod(replica_id)
        docker_faults.crash(self.runtime.container(self.namespace, p.name, p.container_id))
        with self._lock:
            self._paused.discard(replica_id)

    def kill(self, replica_id: str) -> None:
        """Delete the pod at once (grace period 0): a Deployment's ReplicaSet creates a new
        one; a manual pod stays gone."""
        self._pod(replica_id)
        self.client.delete(ns_path(self.namespace, "pods", replica_id), grace_period_s=0)

    def pause(self, replica_id: str) -> None:
        p = self._pod(replica_id)
        self.runtime.container(self.namespace, p.name, p.container_id, "pause").pause()
        with self._lock:
            self._paused.add(replica_id)

    def unpause(self, replica_id: str) -> None:
        with self._lock:
            p = self._pods.get(replica_id)
            self._paused.discard(replica_id)
        if p is None:
            return
        from harness.platforms.docker import docker_faults

        with contextlib.suppress(DeployError):
            docker_faults.unpause(self.runtime.container(self.namespace, p.name,
                                                         p.container_id, "pause"))

    def lb_url(self) -> str:
        return f"http://{self.node_address}:{self._node_port}"

    def prometheus_url(self) -> str | None:
        return f"http://127.0.0.1:{self._prom_port}" if self._prom is not None else None

    def teardown(self) -> None:
        """Thaw paused pods, stop Prometheus and the watch, delete the namespace and wait
        (bounded) until it is gone. Idempotent; never raises — `harness clean` finds a
        namespace that could not be deleted by its labels."""
        with self._teardown_lock:
            if self._torn_down:
                return
            self._torn_down = True
        errors: list[str] = []
        for rid in list(self._paused):
            with contextlib.suppress(Exception):
                self.unpause(rid)
        if self._prom is not None:
            from harness.platforms.local.local_procs import stop_groups

            stop_groups([self._prom], grace_s=2.0)
        for w in (self._watch, self._endpoints):
            if w is not None:
                w.stop()
        if self._deployed:
            try:
                if not delete_namespace(self.client, self.namespace, self.namespace_timeout_s):
                    errors.append(f"namespace {self.namespace} still terminating after "
                                  f"{self.namespace_timeout_s:.0f} s")
            except Exception as e:
                errors.append(f"namespace {self.namespace}: {type(e).__name__}: {e}")
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
        if self._deployed:
            self.emit("torn_down", detail="; ".join(errors))

    # ── extras ───────────────────────────────────────────────────────────────────────
    def explain_unready(self) -> list[str]:
        from harness.platforms.kubernetes.diagnostics import explain

        try:
            return explain(self.client, self.namespace, self.pod_views())
        except Exception as e:  # diagnostics never hide the error they explain
            return [f"pods could not be inspected ({type(e).__name__}: {e})"]

    def instance_of(self, replica: str | Replica) -> str:
        """Prometheus' `instance` label of a replica: the pod's "ip:port"."""
        if not isinstance(replica, str) and replica.address:
            return replica.address
        rid = replica if isinstance(replica, str) else replica.id
        for r in self.replicas():
            if r.id == rid and r.address:
                return r.address
        raise KeyError(rid)

    def metric_source(self, spec: AutoscalerSpec) -> None:
        """None: the wiring's Prometheus source reads the pods. The load-balancer presets
        read HAProxy's exporter, which this platform does not have."""
        from harness.autoscale.metrics import backend_level

        if backend_level(spec):
            raise DeployError(f"metric {spec.metric_name!r} reads HAProxy's exporter; the "
                              "kubernetes platform balances with kube-proxy (no exporter): "
                              "use a per-pod metric (utilization, rps, cpu, latency_p95_ms)")

    def container_ids(self) -> list[str]:
        """Docker ids of the running app containers (dockershim), for replicas_cpu_pct:
        their cgroups are under kubepods/ (harness/platforms/docker/cgroups.py)."""
        from harness.platforms.kubernetes.node_runtime import docker_id

        with self._lock:
            ids = [docker_id(p.container_id) for p in self._pods.values()
                   if p.container_state == "running" and not p.deleting]
        return [i for i in ids if i]

    def endpoints_ready(self) -> int:
        """Ready addresses in the Service's Endpoints (what kube-proxy routes to)."""
        doc = self.client.get(ns_path(self.namespace, "endpoints", self.service_name))
        return sum(len(s.get("addresses") or []) for s in (doc or {}).get("subsets") or [])

    def _require_running(self) -> None:
        if not self._deployed or self._torn_down:
            raise DeployError(f"the {self.kind} deployer is not running (deploy first)")
