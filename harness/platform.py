"""Which platform a run uses, and the one place that reads the environment for Docker.

`auto` means docker when an engine answers, else local (the embedded default, so the
README's first command works on a machine with no Docker).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import PrerequisiteError


@dataclass
class Platform:
    name: str  # docker | local | sim
    why: str
    docker: Any = None  # docker.DockerClient on the docker platform
    # REGISTRY[/PREFIX] the Docker deployers take the harness's images from (None: local)
    registry: str | None = None


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


def resolve(requested: str) -> Platform:
    if requested == "docker":
        return Platform("docker", "requested", docker_client())
    if requested in ("local", "sim"):
        return Platform(requested, "requested")
    try:
        return Platform("docker", "a Docker engine answers", docker_client(timeout_s=3))
    except PrerequisiteError:
        return Platform("local", "no Docker engine answered; replicas run as local processes")
