"""`harness clean` on a Kubernetes cluster: the namespaces labelled harness.managed=true
(of one run when given) are deleted, and nothing else — every object of a trial lives in
its run's namespace but policy kubernetes-hpa's APIService (cluster-scoped, labelled the
same way, deleted first). Only when a kubeconfig is configured (--kubeconfig is not needed:
KUBECONFIG or ~/.kube/config); with none, or a cluster that is down, there is nothing the
harness could have left there now, so nothing is said."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from harness.deploy.base import MANAGED_LABEL, RUN_LABEL
from harness.errors import DeployError, PrerequisiteError
from harness.platforms.kubernetes.client import KubeClient
from harness.platforms.kubernetes.manifests import RUN_ID_ANNOTATION, label_value, selector

SWEEP_TIMEOUT_S = 60.0


def _selector(run_id: str | None) -> str:
    labels = {MANAGED_LABEL: "true"}
    if run_id is not None:
        labels[RUN_LABEL] = label_value(run_id)
    return selector(labels)


def namespaces(client: KubeClient, run_id: str | None = None) -> list[dict[str, Any]]:
    doc = client.get("/api/v1/namespaces", labelSelector=_selector(run_id))
    return list((doc or {}).get("items") or [])


APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"


def apiservices(client: KubeClient, run_id: str | None = None) -> list[dict[str, Any]]:
    """The cluster-scoped APIServices of policy kubernetes-hpa (real_hpa.py): the one kind
    of object outside the run's namespace."""
    doc = client.get(APISERVICES, labelSelector=_selector(run_id))
    return list((doc or {}).get("items") or [])


def leftovers(client: KubeClient, run_id: str | None = None) -> list[str]:
    return [f"namespace {(n.get('metadata') or {}).get('name')}"
            for n in namespaces(client, run_id)] + [
        f"apiservice {(a.get('metadata') or {}).get('name')}"
        for a in apiservices(client, run_id)]


def run_ids(client: KubeClient) -> set[str]:
    """Run ids of the labelled namespaces and APIServices (the full id is an annotation)."""
    out = set()
    for n in [*namespaces(client), *apiservices(client)]:
        meta = n.get("metadata") or {}
        rid = (meta.get("annotations") or {}).get(RUN_ID_ANNOTATION) \
            or (meta.get("labels") or {}).get(RUN_LABEL)
        if rid:
            out.add(str(rid))
    return out


def sweep(client: KubeClient, run_id: str | None = None,
          timeout_s: float = SWEEP_TIMEOUT_S) -> list[str]:
    from harness.platforms.kubernetes.deployer import delete_namespace

    lines = []
    for a in apiservices(client, run_id):
        name = str((a.get("metadata") or {}).get("name"))
        client.delete(f"{APISERVICES}/{name}")
        lines.append(f"removed apiservice {name}")
    for n in namespaces(client, run_id):
        name = str((n.get("metadata") or {}).get("name"))
        gone = delete_namespace(client, name, timeout_s)
        lines.append(f"removed namespace {name}" if gone
                     else f"namespace {name} still terminating after {timeout_s:g} s")
    return lines


def configured_client(timeout_s: float = 5.0) -> KubeClient | None:
    """A client of the configured cluster when there is one that answers, else None."""
    from harness.platforms.kubernetes.kubeconfig import find_kubeconfig, load_kubeconfig

    if find_kubeconfig() is None:
        return None
    try:
        client = KubeClient(load_kubeconfig(), timeout_s)
        client.version()
    except (DeployError, PrerequisiteError):
        return None
    return client


def sweep_all(run_id: str | None = None) -> Iterator[str]:
    """`harness clean`: the configured cluster's labelled namespaces (silent without one)."""
    client = configured_client()
    if client is None:
        return
    yield from (f"kubernetes: {line}" for line in sweep(client, run_id))
    left = leftovers(client, run_id)
    if left:
        yield f"kubernetes: could not remove: {', '.join(left)}"

