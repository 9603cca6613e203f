"""dockershim copies a pod's labels (harness.managed, harness.run) onto its Docker
containers: the docker platform's sweep and leak checks must leave them to the
kubernetes platform. A container labelled as a pod's (io.kubernetes.pod.name) is never
listed nor removed by the docker sweep — real daemon, no cluster needed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness.deploy.base import labels_for
from harness.platforms.docker.cleanup import leftovers, sweep
from harness.platforms.docker.docker_objects import is_kubernetes_container

pytestmark = pytest.mark.docker


def test_is_kubernetes_container() -> None:
    assert is_kubernetes_container({"io.kubernetes.pod.name": "p", "harness.run": "r"})
    assert not is_kubernetes_container({"harness.run": "r"})
    assert not is_kubernetes_container(None)


def test_docker_sweep_leaves_pod_containers_alone(docker_client: Any,
                                                  new_run_id: Callable[[str], str]) -> None:
    rid = new_run_id("podlabels")
    pod_like = docker_client.containers.create(
        "harness-base:bookworm", ["sleep", "60"],
        labels={**labels_for(rid), "io.kubernetes.pod.name": "app-1",
                "io.kubernetes.pod.namespace": "harness-x",
                "io.kubernetes.container.name": "app"})
    own = docker_client.containers.create("harness-base:bookworm", ["sleep", "60"],
                                          labels=labels_for(rid))
    try:
        assert leftovers(docker_client, rid) == [f"container {own.name}"]
        assert sweep(docker_client, rid, leave_swarm=False) == [f"removed container {own.name}"]
        pod_like.reload()  # still there: not the docker platform's to remove
    finally:
        pod_like.remove(force=True)
