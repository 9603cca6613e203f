"""When the Service starts and stops routing to each pod: its Endpoints, watched.

A pod is in the Service once its address is among the Endpoints' ready addresses — what
kube-proxy programs into iptables (within its sync period, ~1 s). `replica_in_service` /
`replica_out_of_service` events are the Kubernetes counterpart of the docker platform's
first-LB-traffic events: the discovery step between a pod's readiness and its traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.platforms.kubernetes.client import KubeClient, path_of
from harness.platforms.kubernetes.podwatch import ResourceWatch

OnChange = Callable[[str, str, float], None]  # (kind, pod, seen wall time)


def ready_pods(endpoints: dict[str, Any]) -> set[str]:
    """Names of the pods among the ready addresses of an Endpoints object (pure)."""
    return {str((a.get("targetRef") or {}).get("name") or a.get("ip") or "")
            for s in endpoints.get("subsets") or [] for a in s.get("addresses") or []}


def changes(before: set[str], after: set[str]) -> tuple[list[str], list[str]]:
    """(pods that entered, pods that left) the Service (pure, sorted)."""
    return sorted(after - before), sorted(before - after)


class EndpointsWatch:
    def __init__(self, client: KubeClient, namespace: str, service: str,
                 on_change: OnChange, wall: Callable[[], float]) -> None:
        self.emit = on_change
        self._in: set[str] = set()
        self.watch = ResourceWatch(
            client, path_of("api", "v1", "namespaces", namespace, "endpoints"), self._on,
            field_selector=f"metadata.name={service}", name=f"kube-endpoints-{service}",
            wall=wall)

    def _on(self, kind: str, obj: dict[str, Any], seen: float, live: bool) -> None:
        now = set() if kind == "DELETED" else ready_pods(obj)
        entered, left = changes(self._in, now)
        for pod in entered:
            self.emit("replica_in_service", pod, seen)
        for pod in left:
            self.emit("replica_out_of_service", pod, seen)
        self._in = now

    def count(self) -> int:
        return len(self._in)

    def start(self) -> None:
        self.watch.start()

    def stop(self) -> None:
        self.watch.stop()
