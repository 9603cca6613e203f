"""`orchestrated` on Docker: a Docker Swarm service (an existing orchestrator).

- A single-node swarm is initialised on demand (`advertise 127.0.0.1`, control port on
  127.0.0.1 only) and labelled as the harness's; it is left again at tear-down when the
  harness initialised it and no service of anyone remains. A swarm that was already
  there is used and left alone.
- The app is a replicated service on an attachable overlay network with
  `endpoint_mode: dnsrr`: no virtual IP and no routing mesh (both need IPVS, which some
  kernels lack). HAProxy resolves `tasks.<service>` through Docker's DNS.
- HAProxy and Prometheus are plain containers attached to the overlay network, published
  on 127.0.0.1 (a stack file cannot publish on 127.0.0.1 only: `mode: host` binds every
  interface) — which is also why this deployer uses the API rather than
  `docker stack deploy` of docker-compose.yml.
- Swarm restarts/reschedules by itself (`restart_policy: any`, the strategy's delay):
  a crashed task is replaced by a *new* task; scaling is a service update of
  `replicas` (what `docker service scale` does).
- Replica id = task id; the containers' hostname is the task id, so the sample app's
  REPLICA_ID (default: hostname) and X-Replica header match it.
- The service references the app image by its ID: Swarm then skips its registry pull
  attempt for every task (moby's container adapter skips pulls of image IDs only), which
  would otherwise cost each replacement a failed registry round trip on a machine
  without registry access. With a registry (`--registry`, registry_images.py) it gets
  `name:latest@sha256:<digest>` instead, and the engine pulls by name as every node of a
  real swarm would.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.clock import Clock
from harness.deploy import haproxy
from harness.deploy.base import DeploySpec, EventSink, Replica, ReplicaState
from harness.errors import DeployError
from harness.platforms.docker.docker_common import DockerDeployerBase, remove_containers
from harness.platforms.docker.docker_objects import NO_HEALTHCHECK, STOP_GRACE_S, app_env
from harness.platforms.docker.swarm_state import (
    ensure_swarm,
    leave_swarm_if_ours,
)

TASK_ID_LABEL = "com.docker.swarm.task.id"
NS = 1_000_000_000


@dataclass(frozen=True)
class TaskView:
    replica: Replica
    slot: int
    desired: str  # the task's DesiredState: running / ready / shutdown / remove
    task_state: str  # Status.State: new … running, complete, failed, shutdown, rejected
    created: str  # CreatedAt (RFC 3339; sorts in time order)


_FAILED = {"failed", "complete", "rejected", "orphaned"}


def select_replicas(views: Sequence[TaskView]) -> list[Replica]:
    """Which task containers are replicas right now (pure).

    Per slot: the current task (desired running/ready) is a replica. The newest failed
    task of a slot stays listed as EXITED until its replacement is READY, so a watcher
    sees the crash and then the recovery; older failed tasks and tasks shut down by a
    scale-down or a service removal are history, not replicas.
    """
    by_slot: dict[int, list[TaskView]] = {}
    for v in views:
        by_slot.setdefault(v.slot, []).append(v)
    out: list[Replica] = []
    for slot_views in by_slot.values():
        current = [v for v in slot_views if v.desired in ("running", "ready")]
        failed = sorted((v for v in slot_views
                         if v.desired not in ("running", "ready") and v.task_state in _FAILED),
                        key=lambda v: v.created)
        out.extend(v.replica for v in current)
        replaced_ready = any(v.replica.state == ReplicaState.READY for v in current)
        if current and failed and not replaced_ready:
            newest = failed[-1]
            out.append(Replica(id=newest.replica.id, name=newest.replica.name,
                               state=ReplicaState.EXITED, restarts=newest.replica.restarts,
                               started_at=newest.replica.started_at,
                               ready_at=newest.replica.ready_at,
                               exit_code=newest.replica.exit_code,
                               address=newest.replica.address))
    return out




class SwarmDeployer(DockerDeployerBase):
    kind = "orchestrated"
    engine_pulls_app = True  # with a registry: the service names the image, Swarm pulls

    def __init__(self, client: Any, spec: DeploySpec, on_event: EventSink, clock: Clock,
                 *, restart_delay_s: float = 1.0, leave_swarm: bool = True,
                 **options: Any) -> None:
        super().__init__(client, spec, on_event, clock, **options)
        self.restart_delay_s = restart_delay_s
        self.leave_swarm = leave_swarm
        self.service_name = self.name("app", max_len=50)
        self.swarm_initialised = False

    def _deploy(self) -> None:
        self.swarm_initialised = ensure_swarm(self.client, self.spec.run_id)
        if self.swarm_initialised:
            self.emit("swarm_init", detail="single-node swarm initialised by the harness")
        self.network_name = self.name("net")
        self.client.networks.create(self.network_name, driver="overlay", attachable=True,
                                    labels=self.labels("network"), check_duplicate=True)
        self._render_lb(haproxy.DnsServers(f"tasks.{self.service_name}", self.spec.app.port))
        self._create_service()
        self._start_aux(self.network_name, self.app_dns_name())

    def _create_service(self) -> None:
        from docker.types import EndpointSpec, Healthcheck, RestartPolicy, ServiceMode

        app = self.spec.app
        if self.registry:
            from harness.platforms.docker.registry_images import pinned, registry_digest

            image = pinned(app.image, registry_digest(self.client, app.image))
        else:
            image = self.client.images.get(app.image).id  # see the module docstring
        self.client.services.create(
            image, name=self.service_name, labels=self.labels("app"),
            container_labels=self.labels("app"),
            env=[f"{k}={v}" for k, v in app_env(self.spec).items()],
            hostname="{{.Task.ID}}",
            # no health state: a task is in DNS once it runs, HAProxy's checks on the
            # ready path gate traffic, the prober measures readiness
            healthcheck=Healthcheck(**NO_HEALTHCHECK),
            stop_grace_period=STOP_GRACE_S * NS, stop_signal="SIGTERM",
            mode=ServiceMode("replicated", replicas=self.spec.replicas),
            endpoint_spec=EndpointSpec(mode="dnsrr"), networks=[self.network_name],
            restart_policy=RestartPolicy(condition="any",
                                         delay=int(self.restart_delay_s * NS),
                                         max_attempts=0))

    def app_dns_name(self) -> str:
        return f"tasks.{self.service_name}"

    def _service(self) -> Any:
        return self.client.services.get(self.service_name)

    def _scale(self, replicas: int) -> None:
        """What `docker service scale` does: the service's spec sent back as stored, only
        `Replicas` changed. (docker-py's `update_service(fetch_current_spec=True)` sends
        the spec *with defaults inserted*, which Swarm takes for a new task template and
        answers with a rolling replacement of every running task.)"""
        import docker.errors

        api = self.client.api
        for attempt in range(5):
            current = api.inspect_service(self.service_name)
            spec = current["Spec"]
            spec["Mode"] = {"Replicated": {"Replicas": int(replicas)}}
            try:
                resp = api._post_json(api._url("/services/{0}/update", current["ID"]),
                                      data=spec,
                                      params={"version": current["Version"]["Index"]})
                api._result(resp, json=True)
                return
            except docker.errors.APIError as e:
                if "out of sequence" not in str(e) or attempt == 4:
                    raise DeployError(f"scaling {self.service_name} failed: {e}") from e
                time.sleep(0.2)

    def _replica_id(self, attrs: dict[str, Any]) -> str:
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        return str(labels.get(TASK_ID_LABEL) or attrs["Id"][:12])

    def _select(self, reps: list[Replica], by_id: dict[str, Any]
                ) -> tuple[list[Replica], dict[str, Any]]:
        import docker.errors

        try:
            tasks = {t["ID"]: t for t in self.client.api.tasks(
                filters={"service": self.service_name})}
        except docker.errors.APIError:
            return [], {}
        views = []
        for r in reps:
            t = tasks.get(r.id)
            if t is None:
                continue  # task history pruned: its container is history too
            views.append(TaskView(replica=r, slot=int(t.get("Slot") or 0),
                                  desired=str(t.get("DesiredState", "")),
                                  task_state=str((t.get("Status") or {}).get("State", "")),
                                  created=str(t.get("CreatedAt", ""))))
        selected = select_replicas(views)
        return selected, {r.id: by_id[r.id] for r in selected}

    def _teardown_app(self) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            self._service().remove()
        # Swarm would stop the tasks itself, but only after taking them out of service
        # discovery and a grace period (~3 s, then ~2.5 s more to remove them): remove
        # the containers at once, until none is left (a task may be mid-start)
        deadline = time.monotonic() + 15.0
        while True:
            left = self._trial_containers("app")
            if not left or time.monotonic() > deadline:
                break
            remove_containers(left)
            time.sleep(0.2)

    def _after_teardown(self) -> None:
        if self.leave_swarm and self.swarm_initialised:
            leave_swarm_if_ours(self.client)
