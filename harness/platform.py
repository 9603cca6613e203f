"""Which platform a run uses, and the one place that reads the environment for Docker.

`auto` means docker when an engine answers, else local (the embedded default, so the
README's first command works on a machine with no Docker).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.errors import PrerequisiteError


@dataclass
class Platform:
    name: str  # docker | local | sim | kubernetes
    why: str
    docker: Any = None  # docker.DockerClient on the docker platform
    # REGISTRY[/PREFIX] the Docker deployers take the harness's images from (None: local)
    registry: str | None = None
    # the Kubernetes API client on the kubernetes platform
    # (harness/platforms/kubernetes/client.py)
    kube: Any = None
    # platform options every deployer of the run gets (the registry passes each deployer
    # the ones it declares), e.g. the kubernetes node address
    deploy_options: dict[str, Any] = field(default_factory=dict)


def docker_client(timeout_s: float = 5.0) -> Any:
    """docker.from_env() and a ping, or a PrerequisiteError naming what is missing."""
    try:
        import docker
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise PrerequisiteError(f"the docker Python SDK is missing: {e}") from None
    try:
        client = docker.from_env(timeout=int(max(timeout_s, 1)))
        client.ping()
        return client
    except Exception as e:
        raise PrerequisiteError(
            "no Docker engine answers (is dockerd running? run scripts/setup.sh): "
            f"{type(e).__name__}") from None


def kube_platform(kubeconfig: str | None = None) -> Platform:
    """The kubernetes platform: a client of the cluster the kubeconfig names, checked."""
    from harness.platforms.kubernetes.client import kube_client

    client = kube_client(kubeconfig)
    return Platform("kubernetes", f"requested; cluster {client.cfg.describe()}",
                    kube=client)


def resolve(requested: str, *, kubeconfig: str | None = None) -> Platform:
    if requested == "kubernetes":
        return kube_platform(kubeconfig)
    if requested == "docker":
        return Platform("docker", "requested", docker_client())
    if requested in ("local", "sim"):
        return Platform(requested, "requested")
    try:
        return Platform("docker", "a Docker engine answers", docker_client(timeout_s=3))
    except PrerequisiteError:
        return Platform("local", "no Docker engine answered; replicas run as local processes")
