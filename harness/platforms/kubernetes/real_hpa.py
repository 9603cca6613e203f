"""Policy ``kubernetes-hpa``: the cluster's own HorizontalPodAutoscaler controller scales
the trial's Deployment (docs/kubernetes.md, "The real HPA").

- ``RealHpa.prepare`` (at deploy, before the load): the custom metrics adapter
  (metrics_adapter.py) as a pod with its Secret, ConfigMap and Service, and the APIService
  ``v1beta1.custom.metrics.k8s.io`` that registers it with the aggregation layer; the run
  waits until the API server reports it Available.
- ``HpaLoop.run`` (the autoscaler thread, from the load's t=0): creates the HPA, then every
  ``PERIOD_S`` pushes the metric values the harness's own controller would read (the same
  Prometheus source, per ready pod) to the adapter, and collects the adapter's log of the
  HPA controller's reads. Each read is one sync of the controller: once it has settled
  (``SETTLE_S``), the HPA's status (currentReplicas, desiredReplicas, conditions) and its
  events give that sync's row of decisions.csv, with the values the controller was served.
  The harness decides nothing here; it records.
- ``RealHpa.teardown``: deletes the HPA and the APIService (the namespace takes the rest).

Rows: ``policy=kubernetes-hpa``; ``metric_values`` the values served to the controller
(milli-units, exact) plus ``=missing`` for a started pod it had no value for (the HPA's
missing pods: counted at the target on a scale-down, as 0 on a scale-up) and ``=unready``
for a Pending pod (the HPA's ignored pods); ``recommended``/``stabilized``/``rate_limited``
stay empty (the controller does not publish them; its conditions' reasons say which limit
held). harness/autoscale/agreement.py replays these rows through the harness's own HPA port.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.autoscale.controller import DecisionRow
from harness.autoscale.source import MetricSource
from harness.autoscale.spec import AutoscalerSpec
from harness.clock import Clock
from harness.deploy.base import ReplicaState
from harness.errors import DeployError
from harness.platforms.docker.image_recipe import image_ref
from harness.platforms.kubernetes import hpa_objects, manifests
from harness.platforms.kubernetes.client import KubeApiError, KubeClient, path_of
from harness.platforms.kubernetes.metrics_adapter import PUSH_PATH
from harness.platforms.kubernetes.pods import parse_time

log = logging.getLogger(__name__)

PERIOD_S = 0.5  # how often the loop looks for new reads
PUSH_EVERY_S = 1.0  # how often it pushes values (Prometheus scrapes every second)
SETTLE_S = 1.0  # a read's sync has written the HPA's status by then (ms in practice)
GIVE_UP_S = 4.0  # a read whose status never matched is recorded with what was seen
AVAILABLE_TIMEOUT_S = 60.0
HPA_USERS = ("horizontal-pod-autoscaler", "kube-controller-manager")


# ── pure helpers ─────────────────────────────────────────────────────────────────────────

_QTY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIX = {"": 1.0, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9,
           "T": 1e12, "P": 1e15, "E": 1e18, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30,
           "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60}


def parse_quantity(text: str | None) -> float | None:
    """resource.Quantity text ('612m', '1200m', '3', '1.5k', '2Ki') → float; None if absent
    or not a quantity."""
    if not text:
        return None
    m = _QTY.match(str(text).strip())
    if not m or m.group(2) not in _SUFFIX:
        return None
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def served_mean_milli(served: dict[str, int]) -> int | None:
    """The HPA's currentAverageValue for these values: the integer mean of milli-values
    (metricsclient.GetMetricUtilizationRatio divides int64s)."""
    return sum(served.values()) // len(served) if served else None


@dataclass(frozen=True)
class PodSeen:
    name: str
    phase: str
    deleting: bool


def classify(pods: list[PodSeen], served: dict[str, int]) -> dict[str, str]:
    """Each pod of the HPA's selection → its value text in metric_values, as the HPA's
    groupPods sees it for a non-CPU metric: terminating and failed pods are skipped,
    Pending ones ignored ('unready'), the others without a value 'missing'."""
    out = {p: repr(m / 1000) for p, m in served.items()}
    for p in pods:
        if p.name in out or p.deleting or p.phase in ("Failed", "Succeeded"):
            continue
        out[p.name] = "unready" if p.phase == "Pending" else "missing"
    return out


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """type → (status, reason, message) of the HPA's conditions."""
    return {str(c.get("type")): (str(c.get("status")), str(c.get("reason") or ""),
                                 str(c.get("message") or ""))
            for c in status.get("conditions") or []}


def status_average(status: dict[str, Any]) -> float | None:
    for m in status.get("currentMetrics") or []:
        cur = ((m or {}).get("pods") or {}).get("current") or {}
        v = parse_quantity(cur.get("averageValue"))
        if v is not None:
            return v
    return None


def sync_row(read: dict[str, Any], t_s: float, status: dict[str, Any],
             pods: list[PodSeen], target: float, events: list[str]) -> DecisionRow:
    """The decisions.csv row of one sync of the real controller."""
    served = {str(k): int(v) for k, v in (read.get("served") or {}).items()}
    values = classify(pods, served)
    conds = conditions(status)
    current = status.get("currentReplicas")
    desired = status.get("desiredReplicas")
    active = conds.get("ScalingActive", ("", "", ""))
    reasons = [r for c in ("ScalingActive", "AbleToScale", "ScalingLimited")
               if (r := conds.get(c, ("", "", ""))[1])]
    if active[0] == "False" and active[2]:
        reasons.append(active[2][:300])
    reasons += events
    mean = status_average(status)
    if mean is None and served:
        mean = (served_mean_milli(served) or 0) / 1000
    failed = active[0] == "False" or conds.get("AbleToScale", ("",))[0] == "False"
    if failed:
        # the controller left the scale alone; the status's desiredReplicas is whatever an
        # earlier sync wrote (0 before the first success)
        desired = current
    action = "error" if failed else (
        "scale" if desired is not None and current is not None and desired != current
        else "none")
    return DecisionRow(
        t_s=round(t_s, 3), policy="kubernetes-hpa",
        current_replicas=None if current is None else int(current),
        ready=len(served), unready=sum(v == "unready" for v in values.values()),
        missing=sum(v == "missing" for v in values.values()),
        metric_values=";".join(f"{k}={v}" for k, v in sorted(values.items())),
        metric_mean=mean, target=target, recommended=None, stabilized=None,
        rate_limited=None, desired=None if desired is None else int(desired),
        reason=";".join(reasons), action=action, forecast=None)


# ── the objects ──────────────────────────────────────────────────────────────────────────

def hpa_path(ns: str, name: str = "") -> str:
    parts = ["apis", "autoscaling", "v2beta2", "namespaces", ns, "horizontalpodautoscalers"]
    return path_of(*parts, *([name] if name else []))


class RealHpa:
    """The adapter, the APIService and the HPA of one trial."""

    def __init__(self, client: KubeClient, deploy_spec: Any, namespace: str, deployment: str,
                 spec: AutoscalerSpec, *, image: str | None = None,
                 pull_policy: manifests.PullPolicy = "Never") -> None:
        self.client, self.deploy_spec, self.namespace = client, deploy_spec, namespace
        self.deployment, self.spec = deployment, spec
        # the harness's base image as this host has it (HARNESS_BASE_IMAGE may name another
        # one with python3, e.g. python:3.11-slim); a remote cluster's nodes need it too
        self.image, self.pull_policy = image or image_ref("base"), pull_policy
        self.names = hpa_objects.adapter_names(deploy_spec)
        self.hpa_name = manifests.object_name(deploy_spec, "hpa")
        self.token = secrets.token_urlsafe(24)
        self._apiservice = False

    def prepare(self) -> None:
        """Adapter objects and the APIService; refuses to replace another's APIService."""
        try:
            existing = self.client.get(hpa_objects.APISERVICE_PATH)
        except KubeApiError as e:
            if e.status != 404:
                raise
            existing = None
        if existing is not None:
            meta = existing.get("metadata") or {}
            who = (meta.get("annotations") or {}).get(manifests.RUN_ID_ANNOTATION)
            svc = (existing.get("spec") or {}).get("service") or {}
            raise DeployError(
                f"the cluster already serves {hpa_objects.APISERVICE_NAME} (service "
                f"{svc.get('namespace')}/{svc.get('name')}"
                + (f", left by harness run {who}: harness clean {who}" if who else
                   ", not the harness's") + "); the kubernetes-hpa policy registers its own "
                "adapter there and will not replace it")
        hosts = hpa_objects.service_hosts(self.names["service"], self.namespace)
        cert, key = hpa_objects.serving_cert(hosts)
        for path, obj in hpa_objects.adapter_objects(
                self.deploy_spec, self.namespace, self.spec.metric_name, cert, key,
                self.token, self.image, self.pull_policy, api_host=self.client.host):
            self.client.create(path, obj)
        self.client.create("/apis/apiregistration.k8s.io/v1/apiservices",
                           hpa_objects.apiservice(self.deploy_spec, self.namespace,
                                                  self.names["service"], cert))
        self._apiservice = True

    def available(self) -> tuple[bool, str]:
        """(Available, why not) of the APIService, as the API server sees the adapter."""
        doc = self.client.get(hpa_objects.APISERVICE_PATH)
        for c in (doc.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Available":
                return c.get("status") == "True", str(c.get("message") or c.get("reason"))
        return False, "no Available condition yet"

    def wait_available(self, timeout_s: float = AVAILABLE_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        why = ""
        while time.monotonic() < deadline:
            ok, why = self.available()
            if ok:
                return
            time.sleep(0.5)
        raise DeployError(f"the metrics adapter's APIService {hpa_objects.APISERVICE_NAME} "
                          f"is not Available after {timeout_s:.0f} s: {why}")

    def push(self, values: list[dict[str, Any]] | None, since: int) -> dict[str, Any]:
        """POST values (None: only collect reads) through the API server's pod proxy."""
        path = path_of("api", "v1", "namespaces", self.namespace, "pods",
                       f"https:{self.names['pod']}:{hpa_objects.ADAPTER_PORT}", "proxy") \
            + PUSH_PATH
        body: dict[str, Any] = {"token": self.token, "namespace": self.namespace,
                                "metric": self.spec.metric_name, "since": since,
                                "window_s": int(self.spec.window_s)}
        if values is not None:
            body["values"] = values
        doc = self.client.request("POST", path, body=body, timeout_s=5.0)
        return doc if isinstance(doc, dict) else {}

    def create_hpa(self) -> None:
        self.client.create(hpa_path(self.namespace),
                           hpa_objects.hpa(self.deploy_spec, self.hpa_name, self.deployment,
                                           self.spec))

    def hpa_status(self) -> dict[str, Any]:
        doc = self.client.get(hpa_path(self.namespace, self.hpa_name))
        return dict((doc or {}).get("status") or {})

    def events_since(self, after_wall: float) -> list[str]:
        """'Reason: message' of the HPA's events last seen at or after ``after_wall`` − 1 s
        (events carry whole seconds)."""
        doc = self.client.get(path_of("api", "v1", "namespaces", self.namespace, "events"),
                              fieldSelector=f"involvedObject.name={self.hpa_name}")
        out = []
        for ev in (doc or {}).get("items") or []:
            t = parse_time(ev.get("lastTimestamp") or ev.get("eventTime"))
            if t is not None and t >= math.floor(after_wall) - 1:
                out.append(f"{ev.get('reason')}: {ev.get('message')}")
        return out

    def teardown(self) -> list[str]:
        errors = []
        with contextlib.suppress(Exception):  # the namespace's deletion takes it anyway
            self.client.delete(hpa_path(self.namespace, self.hpa_name))
        if self._apiservice:
            try:
                self.client.delete(hpa_objects.APISERVICE_PATH)
            except Exception as e:
                errors.append(f"APIService {hpa_objects.APISERVICE_NAME}: {e}")
        return errors


class HpaLoop:
    """The autoscaler thread of a kubernetes-hpa trial: pushes, collects, records."""

    def __init__(self, hpa: RealHpa, deployer: Any, source: MetricSource, clock: Clock,
                 t0: float, on_decision: Callable[[DecisionRow], None]) -> None:
        self.hpa, self.deployer, self.source, self.clock = hpa, deployer, source, clock
        self.t0, self.on_decision = t0, on_decision
        self.labels = manifests.trial_labels(hpa.deploy_spec, "app")
        self.next_seq = 0
        self.pending: deque[dict[str, Any]] = deque()

    def _values(self) -> list[dict[str, Any]]:
        ready = [r for r in self.deployer.replicas() if r.state == ReplicaState.READY]
        values = self.source.sample(ready) if ready else {}
        return [{"pod": rid, "labels": self.labels, "value": v}
                for rid, v in values.items() if v is not None and math.isfinite(v)]

    def _pods_at(self, wall: float) -> list[PodSeen]:
        """The trial's pods as the pod watch knew them at ``wall`` (the HPA controller's
        informer watches the same API: it knows them within milliseconds of that)."""
        pods: dict[str, PodSeen] = {}
        for seen, deleted, p in self.deployer.pod_history():
            if seen > wall:
                break
            if deleted:
                pods.pop(p.name, None)
            else:
                pods[p.name] = PodSeen(p.name, p.phase, p.deleting)
        return list(pods.values())

    def _is_ours(self, read: dict[str, Any]) -> bool:
        sel = str(read.get("selector") or "")
        user = str(read.get("user") or "")
        return read.get("metric") == self.hpa.spec.metric_name \
            and manifests.label_value(self.hpa.deploy_spec.trial_id) in sel \
            and (not user or any(u in user for u in HPA_USERS))

    def step(self, push: bool) -> None:
        doc = self.hpa.push(self._values() if push else None, self.next_seq)
        if int(doc.get("next") or 0) < self.next_seq:
            self.next_seq = 0  # the adapter restarted (a new log): read it from its start
            doc = self.hpa.push(None, 0)
        for read in doc.get("reads") or []:
            self.next_seq = max(self.next_seq, int(read.get("seq") or 0))
            if self._is_ours(read):
                self.pending.append(read)
        self._settle()

    def _settle(self) -> None:
        wall = self.clock.wall()
        while self.pending and wall - float(self.pending[0]["t"]) >= SETTLE_S:
            read = self.pending[0]
            status = self.hpa.hpa_status()
            served = {str(k): int(v) for k, v in (read.get("served") or {}).items()}
            avg = status_average(status)
            expect = served_mean_milli(served)
            late = wall - float(read["t"]) >= GIVE_UP_S
            if expect is not None and avg is not None and round(avg * 1000) != expect \
                    and not late and len(self.pending) == 1:
                return  # the status is not this sync's yet: look again next step
            self.pending.popleft()
            self._record(read, status)

    def _record(self, read: dict[str, Any], status: dict[str, Any]) -> None:
        t_wall = float(read["t"])
        t_mono = self.clock.now() - (self.clock.wall() - t_wall)
        events: list[str] = []
        if status.get("desiredReplicas") != status.get("currentReplicas") or \
                conditions(status).get("ScalingActive", ("True",))[0] == "False":
            with contextlib.suppress(Exception):
                events = self.hpa.events_since(t_wall)
        row = sync_row(read, t_mono - self.t0, status, self._pods_at(t_wall),
                       self.hpa.spec.target, events)
        if row["desired"] is not None:
            self.deployer.observe_scale(row["desired"], "kubernetes-hpa", at_wall=t_wall)
        self.on_decision(row)

    def run(self, stop: threading.Event) -> None:
        try:
            self.hpa.create_hpa()
        except Exception as e:
            log.error("kubernetes-hpa: could not create the HPA: %s", e)
            self.on_decision(DecisionRow(
                t_s=round(self.clock.now() - self.t0, 3), policy="kubernetes-hpa",
                current_replicas=None, ready=None, unready=None, missing=None,
                metric_values="", metric_mean=None, target=self.hpa.spec.target,
                recommended=None, stabilized=None, rate_limited=None, desired=None,
                reason=f"FailedCreateHPA: {e}", action="error", forecast=None))
            return
        last_push = -math.inf
        while not stop.is_set():
            now = self.clock.now()
            push = now - last_push >= PUSH_EVERY_S - 1e-3
            try:
                self.step(push)
                if push:
                    last_push = now
            except Exception as e:  # a hiccup of the API or the adapter: try again
                log.warning("kubernetes-hpa: %s: %s", type(e).__name__, e)
            stop.wait(PERIOD_S)
        with contextlib.suppress(Exception):  # the reads of the last moments
            self.step(False)
            for read in list(self.pending):
                self._record(read, self.hpa.hpa_status())
            self.pending.clear()
