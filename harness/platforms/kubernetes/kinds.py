"""The three strategy kinds on Kubernetes: what differs is the app objects and how they
scale (the rest is `KubeDeployer`, deployer.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.autoscale.controller import DecisionRow
from harness.autoscale.source import MetricSource
from harness.autoscale.spec import AutoscalerSpec
from harness.clock import Clock
from harness.deploy.base import ReplicaState
from harness.errors import DeployError
from harness.platforms.kubernetes import manifests
from harness.platforms.kubernetes.client import KubeApiError
from harness.platforms.kubernetes.deployer import KubeDeployer, apps_path, ns_path
from harness.platforms.kubernetes.pods import PodView
from harness.platforms.kubernetes.real_hpa import HpaLoop, RealHpa


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
    subresource, as the HPA does — or, with ``policy: kubernetes-hpa``, the cluster's HPA
    controller does, reading the metric from the adapter real_hpa.py sets up."""

    kind = "orchestrated"

    def __init__(self, *args: Any, autoscaler: AutoscalerSpec | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.real_hpa: RealHpa | None = None
        if autoscaler is not None and autoscaler.policy == "kubernetes-hpa":
            self.real_hpa = RealHpa(self.client, self.spec, self.namespace, self.app_name,
                                    autoscaler, pull_policy=self.pull_policy)

    def _create_app(self) -> None:
        super()._create_app()
        if self.real_hpa is not None:  # the adapter starts while the app's pods do
            self.real_hpa.prepare()

    def deploy(self) -> None:
        super().deploy()
        if self.real_hpa is not None:
            try:
                self.real_hpa.wait_available()
            except KubeApiError as e:
                raise DeployError(f"kubernetes-hpa: {e}") from e

    def _scale(self, replicas: int) -> None:
        self.client.merge_patch(
            apps_path(self.namespace, "deployments", self.app_name, "scale"),
            {"spec": {"replicas": replicas}})

    def observe_scale(self, replicas: int, by: str, at_wall: float | None = None) -> None:
        """The cluster's HPA changed the scale (at its sync, ``at_wall``): the desired
        count follows, said once."""
        with self._lock:
            before, self._desired = self._desired, replicas
        if before != replicas:
            self.emit("scale_applied", detail=f"from={before} to={replicas} by={by}",
                      at_wall=at_wall)

    def pod_history(self) -> list[tuple[float, bool, PodView]]:
        """The pod watch's log: (seen wall time, deleted, pod), oldest first."""
        with self._lock:
            return list(self.pod_log)

    def external_loop(self, spec: AutoscalerSpec, source: MetricSource, clock: Clock,
                      t0: float, on_decision: Callable[[DecisionRow], None]) -> HpaLoop:
        if self.real_hpa is None:
            raise DeployError("policy kubernetes-hpa: the deployer was made without it")
        return HpaLoop(self.real_hpa, self, source, clock, t0, on_decision)

    def teardown(self) -> None:
        if self.real_hpa is not None and self._deployed and not self._torn_down:
            for err in self.real_hpa.teardown():
                self.emit("note", detail=f"kubernetes-hpa teardown: {err}")
        super().teardown()


KINDS: dict[str, type[KubeDeployer]] = {
    "manual": KubeManualDeployer, "compose": KubeDeploymentDeployer,
    "orchestrated": KubeScaledDeployer}
