"""The three strategy kinds on Kubernetes: what differs is the app objects and how they
scale (the rest is `KubeDeployer`, deployer.py)."""

from __future__ import annotations

from typing import Any

from harness.deploy.base import ReplicaState
from harness.platforms.kubernetes import manifests
from harness.platforms.kubernetes.deployer import KubeDeployer, apps_path, ns_path


class KubeManualDeployer(KubeDeployer):
    """N bare pods with restartPolicy Never: nobody restarts or replaces them."""

    kind = "manual"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seq = 0

    def _new_pod(self) -> None:
        self._seq += 1
        name = manifests.object_name(self.spec, f"{manifests.APP_NAME}-{self._seq}")
        self.client.create(ns_path(self.namespace, "pods"),
                           manifests.bare_pod(self.spec, name, self.pull_policy))

    def _create_app(self) -> None:
        for _ in range(self.spec.replicas):
            self._new_pod()

    def _scale(self, replicas: int) -> None:
        live = [r for r in self.replicas() if r.state != ReplicaState.EXITED]
        for _ in range(replicas - len(live)):
            self._new_pod()
        for r in reversed(live[replicas:]):  # newest first, as a person would
            self.client.delete(ns_path(self.namespace, "pods", r.id))


class KubeDeploymentDeployer(KubeDeployer):
    """compose: a Deployment with a fixed replica count (scaled, when asked, by changing
    the Deployment as a new file would)."""

    kind = "compose"

    def _create_app(self) -> None:
        self.client.create(apps_path(self.namespace, "deployments"),
                           manifests.deployment(self.spec, self.app_name, self.spec.replicas,
                                                self.pull_policy))

    def _scale(self, replicas: int) -> None:
        self.client.merge_patch(apps_path(self.namespace, "deployments", self.app_name),
                                {"spec": {"replicas": replicas}})


class KubeScaledDeployer(KubeDeploymentDeployer):
    """orchestrated: the harness's controller scales the Deployment through its scale
    subresource, as the HPA does."""

    kind = "orchestrated"

    def _scale(self, replicas: int) -> None:
        self.client.merge_patch(
            apps_path(self.namespace, "deployments", self.app_name, "scale"),
            {"spec": {"replicas": replicas}})


KINDS: dict[str, type[KubeDeployer]] = {
    "manual": KubeManualDeployer, "compose": KubeDeploymentDeployer,
    "orchestrated": KubeScaledDeployer}
