"""The node's container runtime, where it is this host's Docker engine (dockershim).

Kubernetes has no "crash this container" call: deleting a pod is a `kill` (the ReplicaSet
makes a new pod), and an exec'd `kill 1` would need a shell in the image and would be a
signal from inside. A crash is the kernel killing the main process — SIGKILL by its host
PID, as on the docker platform (harness/platforms/docker/docker_faults.py) — after which
the kubelet restarts the container in place with CrashLoopBackOff's growing back-off.
With dockershim (the local cluster, Kubernetes ≤ 1.23) every pod container is a Docker
container, named by the pod's containerStatuses[].containerID (docker://<id>) and
labelled io.kubernetes.pod.namespace / .name / io.kubernetes.container.name; the same
lookup serves `pause` (the cgroup freezer, as `docker pause`) and a start time to the
nanosecond (Kubernetes' own startedAt has whole seconds).

On a cluster whose runtime is not this host's Docker, crash and pause fail with a clear
error instead of doing something else.
"""

from __future__ import annotations

import threading
from typing import Any

from harness.errors import DeployError, PrerequisiteError

POD_NAME_LABEL = "io.kubernetes.pod.name"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
CONTAINER_NAME_LABEL = "io.kubernetes.container.name"


def docker_id(container_id: str) -> str | None:
    """The Docker id of a containerStatuses containerID ("docker://<id>"), else None."""
    scheme, _, cid = container_id.partition("://")
    return cid if scheme == "docker" and cid else None


class NodeRuntime:
    """Docker containers of this trial's pods, when the node runs on this host's engine."""

    def __init__(self, docker: Any = None) -> None:
        self._docker = docker
        self._tried = docker is not None
        self._lock = threading.Lock()
        self._why = ""
        self._started: dict[str, float | None] = {}

    def _client(self) -> Any:
        with self._lock:
            if not self._tried:
                self._tried = True
                from harness.platform import docker_client

                try:
                    self._docker = docker_client(timeout_s=5)
                except PrerequisiteError as e:
                    self._why = str(e)
            return self._docker

    def container(self, namespace: str, pod: str, container_id: str,
                  action: str = "crash") -> Any:
        """The Docker container of a pod's app container, or a DeployError saying why the
        fault needs the node's runtime on this host."""
        need = (f"the {action} fault on Kubernetes needs the node's container runtime on "
                "this host (dockershim on the local Docker engine)")
        cid = docker_id(container_id)
        if cid is None:
            raise DeployError(f"{need}; pod {pod}'s container is "
                              f"{container_id or 'not started'}")
        client = self._client()
        if client is None:
            raise DeployError(f"{need}: {self._why}")
        import docker.errors

        try:
            c = client.containers.get(cid)
        except docker.errors.NotFound:
            raise DeployError(f"{need}; container {cid[:12]} of pod {pod} is not in the "
                              "local Docker engine (another node or runtime?)") from None
        labels = c.labels or {}
        if labels.get(POD_NAME_LABEL) != pod or labels.get(POD_NAMESPACE_LABEL) != namespace:
            raise DeployError(f"container {cid[:12]} is not pod {namespace}/{pod}'s")
        return c

    def started_at(self, container_id: str) -> float | None:
        """The container's start to the nanosecond (Docker's State.StartedAt), once per
        container id; None where the runtime is not reachable."""
        cid = docker_id(container_id)
        if cid is None:
            return None
        if cid in self._started:
            return self._started[cid]
        client = self._client()
        value = None
        if client is not None:
            try:
                from harness.platforms.docker.docker_objects import parse_docker_time

                attrs = client.api.inspect_container(cid)
                value = parse_docker_time((attrs.get("State") or {}).get("StartedAt"))
            except Exception:
                value = None
        self._started[cid] = value
        return value
