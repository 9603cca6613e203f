"""The Kubernetes objects of one trial, as plain dicts (pure: names, labels, manifests).

Every object carries `harness.managed=true` and `harness.run=<run id>` (as every Docker
object does) plus `harness.trial` and `harness.role`; the per-run namespace carries them
too, so `harness clean` finds a run's leftovers by one label selector on namespaces.
Label values are at most 63 characters of [A-Za-z0-9._-] starting and ending with an
alphanumeric, stricter than run ids (up to 128 characters): `label_value` keeps a valid
id as it is and shortens a long one with a hash; the full id is an annotation.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from harness.deploy.base import MANAGED_LABEL, RUN_LABEL, DeploySpec

TRIAL_LABEL = "harness.trial"
ROLE_LABEL = "harness.role"
RUN_ID_ANNOTATION = "harness.run-id"
APP_CONTAINER = "app"
APP_NAME = "app"  # the Deployment's and the Service's name part
PullPolicy = Literal["Never", "IfNotPresent", "Always"]

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def dns_label(*parts: str, max_len: int = 63) -> str:
    """A DNS-1123 label (lower-case alphanumerics and '-', alphanumeric at both ends, ≤ 63)
    from parts; a name that had to be shortened or changed keeps a hash of the original,
    so two different run ids never map to one namespace."""
    raw = "-".join(p for p in parts if p)
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower())
    name = re.sub(r"-{2,}", "-", name).strip("-") or "x"
    if name != raw or len(name) > max_len:
        keep = max_len - 9
        name = name[:keep].rstrip("-") + "-" + _digest(raw)
    if not name[0].isalnum():
        name = "h" + name[: max_len - 1]
    return name


def namespace_name(run_id: str) -> str:
    """harness-<run id> as a DNS-1123 label."""
    return dns_label("harness", run_id)


def label_value(value: str) -> str:
    if _LABEL_VALUE.match(value):
        return value
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", value)[:54].strip("._-") or "x"
    return f"{cleaned}-{_digest(value)}"


def run_labels(run_id: str) -> dict[str, str]:
    return {MANAGED_LABEL: "true", RUN_LABEL: label_value(run_id)}


def trial_labels(spec: DeploySpec, role: str) -> dict[str, str]:
    return {**run_labels(spec.run_id), TRIAL_LABEL: label_value(spec.trial_id),
            ROLE_LABEL: role}


def selector(labels: dict[str, str]) -> str:
    """A labelSelector query value: k=v,k=v."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def app_selector(spec: DeploySpec) -> dict[str, str]:
    """What the Service and the Deployment select: this trial's app pods."""
    return {RUN_LABEL: label_value(spec.run_id), TRIAL_LABEL: label_value(spec.trial_id),
            ROLE_LABEL: "app"}


def object_name(spec: DeploySpec, *suffix: str) -> str:
    """Short per-trial names (a Deployment's pods add 17 characters to its name)."""
    return dns_label(spec.trial_id, *suffix, max_len=40)


def meta(name: str, labels: dict[str, str], run_id: str) -> dict[str, Any]:
    return {"name": name, "labels": labels, "annotations": {RUN_ID_ANNOTATION: run_id}}


def namespace(run_id: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": meta(namespace_name(run_id), run_labels(run_id), run_id)}


def app_env(spec: DeploySpec) -> list[dict[str, str]]:
    """The app's environment as the docker platform passes it: PORT plus app.env."""
    env = {"PORT": str(spec.app.port), **{str(k): str(v) for k, v in spec.app.env.items()}}
    return [{"name": k, "value": v} for k, v in env.items()]


def pod_spec(spec: DeploySpec, *, restart_policy: Literal["Never", "Always"],
             pull_policy: PullPolicy = "Never") -> dict[str, Any]:
    """One app container: the scenario's image and environment, port app.port, an httpGet
    readiness probe on app.ready_path every second (as the docker platform's prober), no
    liveness probe (readiness is not liveness: a slow or paused replica is not killed)."""
    app = spec.app
    return {
        "restartPolicy": restart_policy,
        "terminationGracePeriodSeconds": 2,  # the docker platform's STOP_GRACE_S
        "enableServiceLinks": False,  # no FOO_SERVICE_HOST variables in the app's env
        "automountServiceAccountToken": False,  # the app needs no API access
        "containers": [{
            "name": APP_CONTAINER,
            "image": app.image,
            "imagePullPolicy": pull_policy,
            "env": app_env(spec),
            "ports": [{"name": "http", "containerPort": app.port, "protocol": "TCP"}],
            "readinessProbe": {
                "httpGet": {"path": app.ready_path, "port": app.port},
                # HAProxy's checks on Docker: every 1 s, out after 2 failures, in after 1
                "periodSeconds": 1, "timeoutSeconds": 1, "successThreshold": 1,
                "failureThreshold": 2},
        }],
    }


def bare_pod(spec: DeploySpec, name: str, pull_policy: PullPolicy = "Never"
             ) -> dict[str, Any]:
    """manual: a pod nobody replaces (restartPolicy Never)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": meta(name, trial_labels(spec, "app"), spec.run_id),
            "spec": pod_spec(spec, restart_policy="Never", pull_policy=pull_policy)}


def deployment(spec: DeploySpec, name: str, replicas: int,
               pull_policy: PullPolicy = "Never") -> dict[str, Any]:
    """compose / orchestrated: a Deployment (its ReplicaSet replaces deleted pods, the
    kubelet restarts crashed containers in place)."""
    labels = trial_labels(spec, "app")
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(name, trial_labels(spec, "deployment"), spec.run_id),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": app_selector(spec)},
            # new pods all at once on a scale-up; the template never changes in a trial
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "revisionHistoryLimit": 0,
            "template": {"metadata": {"labels": labels,
                                      "annotations": {RUN_ID_ANNOTATION: spec.run_id}},
                         "spec": pod_spec(spec, restart_policy="Always",
                                          pull_policy=pull_policy)},
        },
    }


def service(spec: DeploySpec, name: str) -> dict[str, Any]:
    """A NodePort Service over the trial's app pods: kube-proxy balances (iptables mode:
    a random endpoint per connection); the host connects to NODE:nodePort only."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": meta(name, trial_labels(spec, "lb"), spec.run_id),
        "spec": {"type": "NodePort", "selector": app_selector(spec),
                 "externalTrafficPolicy": "Cluster",
                 "ports": [{"name": "http", "port": spec.app.port,
                            "targetPort": spec.app.port, "protocol": "TCP"}]},
    }


def node_port(svc: dict[str, Any]) -> int:
    for p in (svc.get("spec") or {}).get("ports") or []:
        if p.get("nodePort"):
            return int(p["nodePort"])
    raise KeyError("nodePort")
