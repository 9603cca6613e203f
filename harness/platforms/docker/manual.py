"""`manual` on Docker: what a person does with `docker run`, through the Docker SDK.

Replicas are containers started one by one on a user-defined bridge network, restart
policy `no`: a crashed replica stays dead. HAProxy gets a static server list written at
deploy time (health checks on the readiness path take a dead replica out of rotation, but
nothing replaces it). Every replica carries the network alias `app`, so Prometheus finds
them with DNS service discovery like on the other two kinds.

Scaling by hand, when asked (the scenario gives `manual` no autoscaler, but a user or a
test may): `docker run` more replicas and put them into HAProxy's spare server slots over
the runtime API, or take the newest live ones out of rotation and remove them. Replicas
that died stay listed as exited — the operator did not clean up after a crash.
"""

from __future__ import annotations

import contextlib
from typing import Any

from harness.clock import Clock
from harness.deploy import haproxy
from harness.deploy.base import DeploySpec, EventSink, ReplicaState
from harness.errors import DeployError
from harness.platforms.docker.docker_common import (
    APP_ALIAS,
    DockerDeployerBase,
    container_ip,
    remove_containers,
)
from harness.platforms.docker.docker_objects import NO_HEALTHCHECK, STOP_GRACE_S, app_env


class ManualDeployer(DockerDeployerBase):
    kind = "manual"

    def __init__(self, client: Any, spec: DeploySpec, on_event: EventSink, clock: Clock,
                 *, spare_slots: int = 20, **options: Any) -> None:
        super().__init__(client, spec, on_event, clock, **options)
        self.spare_slots = spare_slots
        self._seq = 0  # container name suffix, like a person numbering app-1, app-2, …
        self._slots: dict[str, int] = {}  # container id → HAProxy slot

    def _deploy(self) -> None:
        self.network_name = self.name("net")
        self.client.networks.create(self.network_name, driver="bridge",
                                    labels=self.labels("network"), check_duplicate=True)
        addrs = []
        for _ in range(self.spec.replicas):
            c = self._run_replica()
            addrs.append(self._address(c))
            self._slots[c.id] = len(addrs)
        self._render_lb(haproxy.StaticServers(addrs, spare_slots=self.spare_slots))
        self._start_aux(self.network_name, APP_ALIAS)

    def _run_replica(self) -> Any:
        self._seq += 1
        app = self.spec.app
        c = self.client.api.create_container(
            app.image, name=self.name(f"app-{self._seq}"), labels=self.labels("app"),
            environment=app_env(self.spec), detach=True, ports=[app.port],
            healthcheck=NO_HEALTHCHECK,  # readiness is probed from outside
            stop_signal="SIGTERM", stop_timeout=STOP_GRACE_S,
            host_config=self.client.api.create_host_config(
                restart_policy={"Name": "no"}),
            networking_config=self.client.api.create_networking_config(
                {self.network_name: self.client.api.create_endpoint_config(
                    aliases=[APP_ALIAS])}))
        self.client.api.start(c["Id"])
        return self.client.containers.get(c["Id"])

    def _address(self, c: Any) -> str:
        ip = container_ip(c.attrs, self.network_name)
        if not ip:
            raise DeployError(f"replica {c.name} got no address on {self.network_name}")
        return f"{ip}:{self.spec.app.port}"

    def _scale(self, replicas: int) -> None:
        assert self._api is not None
        self._cache = None
        reps, by_id = self._snapshot()
        live = [r for r in reps if r.state != ReplicaState.EXITED]
        if replicas > len(live):
            used = set(self._slots.values())
            free = [s for s in range(1, self.spec.replicas + self.spare_slots + 1)
                    if s not in used]
            if replicas - len(live) > len(free):
                raise DeployError(f"manual: HAProxy has {len(free)} free server slots, "
                                  f"{replicas - len(live)} needed")
            for slot in free[: replicas - len(live)]:
                c = self._run_replica()
                self._slots[c.id] = slot
                self._api.set_server(slot, self._address(c), enabled=True)
        else:
            victims = [by_id[r.id] for r in reversed(live[replicas:])]  # newest first
            for c in victims:
                slot = self._slots.pop(c.id, None)
                if slot is not None:  # out of rotation before it goes away
                    with contextlib.suppress(OSError, haproxy.RuntimeAPIError):
                        self._api.set_server(slot, None, enabled=False)
            for c in victims:
                with contextlib.suppress(Exception):
                    c.stop(timeout=STOP_GRACE_S)
            remove_containers(victims)
        self._cache = None

    def _teardown_app(self) -> None:
        remove_containers(self._trial_containers("app"))
