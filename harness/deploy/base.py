"""The one small protocol every deployer implements (docs/architecture.md, "Strategies").

A deployer runs one strategy kind (manual / compose / orchestrated) on one platform
(docker / local / sim). Everything above the deployers (run loop, autoscaler, faults,
recorder) speaks only these dataclasses, never the Docker SDK.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from harness.errors import DeployError

MANAGED_LABEL = "harness.managed"
RUN_LABEL = "harness.run"


def labels_for(run_id: str, **extra: str) -> dict[str, str]:
    """The labels every Docker object the harness creates carries."""
    return {MANAGED_LABEL: "true", RUN_LABEL: run_id, **extra}


class ReplicaState(enum.StrEnum):
    STARTING = "starting"  # process/container up, readiness not answered yet
    READY = "ready"  # readiness endpoint answered
    EXITED = "exited"  # dead (crashed, killed); may be restarted by its strategy
    PAUSED = "paused"  # frozen by a pause fault


@dataclass(frozen=True)
class Replica:
    id: str  # stable for the replica's life (container id prefix, task id, pid-slot name)
    name: str
    state: ReplicaState
    restarts: int = 0
    # Optional details a platform may know (None where it does not). Wall-clock times
    # (epoch seconds) come from the platform itself (e.g. Docker's State.StartedAt), so
    # they do not depend on how often someone polls.
    started_at: float | None = None  # the current (re)start
    ready_at: float | None = None  # first readiness success after started_at
    exit_code: int | None = None  # of the last exit, when EXITED
    address: str | None = None  # "ip:port" inside the trial's network (never used from the host)


@dataclass(frozen=True)
class AppSpec:
    """The app under test, as the scenario describes it."""

    image: str = "harness-app:latest"
    port: int = 8000
    health_path: str = "/healthz"
    ready_path: str = "/readyz"
    metrics_path: str = "/metrics"
    work_path: str = "/work"
    env: Mapping[str, str] = field(default_factory=dict)
    # local platform: the command that starts one replica (PORT is set in its env)
    command: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DeploySpec:
    run_id: str
    trial_id: str  # unique within the run, safe as a name part: "<strategy>-<trial>"
    app: AppSpec
    replicas: int
    # how long the LB may take to notice a dead server etc. are the deployer's own business


@dataclass(frozen=True)
class DeployEvent:
    # replica_started | replica_ready | replica_exited | replica_restarted | scale | fault
    kind: str
    replica: str = ""
    detail: str = ""
    # when it happened on the sink's clock (Clock.now() scale), if known better than "now"
    # (e.g. a Docker timestamp); None: the sink stamps it on arrival
    at: float | None = None


EventSink = Callable[[DeployEvent], None]


class DeploysOnce:
    """A deployer serves one trial: deploying it twice, or after its teardown, is a caller's
    bug, and every deployer refuses it with the same words. The deployer's __init__ sets
    both flags to False and its teardown sets `_torn_down`."""

    _deployed: bool
    _torn_down: bool

    def _refuse_redeploy(self) -> None:
        """Raise DeployError when this deployer was deployed or torn down already."""
        if self._deployed or self._torn_down:
            raise DeployError(f"a {type(self).__name__} deploys once; create a new one "
                              "per trial")

    def _claim_deploy(self, lock: contextlib.AbstractContextManager[Any] | None = None) -> None:
        """Check and mark deployed in one step; under `lock` where other threads (watcher,
        faults, autoscaler) may call teardown meanwhile."""
        with lock if lock is not None else contextlib.nullcontext():
            self._refuse_redeploy()
            self._deployed = True


@runtime_checkable
class Deployer(Protocol):
    """deploy → (scale | crash)* → teardown. teardown is idempotent and always safe."""

    kind: str

    def deploy(self) -> None:
        """Start LB, metrics store and spec.replicas replicas; return when the LB answers."""
        ...

    def scale(self, replicas: int) -> None: ...

    def desired(self) -> int: ...

    def replicas(self) -> list[Replica]: ...

    def crash(self, replica_id: str) -> None:
        """Make the replica's main process die as a real crash does (SIGKILL by host PID)."""
        ...

    def lb_url(self) -> str:
        """http://127.0.0.1:PORT of the load balancer."""
        ...

    def prometheus_url(self) -> str | None: ...

    def teardown(self) -> None: ...


@runtime_checkable
class ReadinessDiagnostics(Protocol):
    """A deployer that can say why replicas are not ready (the trial's wait-for-ready
    appends this to its error): state, exit code, last probe outcome, last log lines."""

    def explain_unready(self) -> list[str]: ...


@runtime_checkable
class ContainerReplicas(Protocol):
    """A deployer whose replicas are containers: their ids, for reading their cgroups
    (replicas_cpu_pct in timeseries.csv)."""

    def container_ids(self) -> list[str]: ...


@runtime_checkable
class WaitsReady(Protocol):
    """A deployer that can wait for its own replicas (tools that run without a trial)."""

    def wait_ready(self, n: int, timeout_s: float = 60.0) -> list[Replica]: ...


@runtime_checkable
class FaultTarget(Protocol):
    """Extra fault abilities beyond crash; a deployer that has them implements this too."""

    def kill(self, replica_id: str) -> None:
        """Stop the replica for good: a restart policy does not replace it."""
        ...

    def pause(self, replica_id: str) -> None: ...

    def unpause(self, replica_id: str) -> None: ...
