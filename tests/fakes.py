"""A fake deployer that implements the real protocol (docs/architecture.md, "Conventions"), for
run-loop tests."""

from __future__ import annotations

from harness.deploy.base import DeployEvent, EventSink, Replica, ReplicaState


class FakeDeployer:
    kind = "fake"

    def __init__(self, replicas: int = 3, on_event: EventSink | None = None) -> None:
        self._n = replicas
        self._states: dict[str, ReplicaState] = {}
        self.calls: list[tuple[str, str]] = []
        self._on_event = on_event or (lambda e: None)
        self.torn_down = False

    def deploy(self) -> None:
        for i in range(self._n):
            self._states[f"r{i}"] = ReplicaState.READY

    def scale(self, replicas: int) -> None:
        self.calls.append(("scale", str(replicas)))
        alive = [k for k, v in self._states.items() if v != ReplicaState.EXITED]
        while len(alive) < replicas:
            rid = f"r{len(self._states)}"
            self._states[rid] = ReplicaState.READY
            alive.append(rid)
        for rid in alive[replicas:]:
            del self._states[rid]
        self._n = replicas

    def desired(self) -> int:
        return self._n

    def replicas(self) -> list[Replica]:
        return [Replica(id=k, name=k, state=v) for k, v in sorted(self._states.items())]

    def crash(self, replica_id: str) -> None:
        self.calls.append(("crash", replica_id))
        self._states[replica_id] = ReplicaState.EXITED
        self._on_event(DeployEvent("replica_exited", replica_id))

    def kill(self, replica_id: str) -> None:
        self.calls.append(("kill", replica_id))
        self._states[replica_id] = ReplicaState.EXITED

    def pause(self, replica_id: str) -> None:
        self.calls.append(("pause", replica_id))
        self._states[replica_id] = ReplicaState.PAUSED

    def unpause(self, replica_id: str) -> None:
        self.calls.append(("unpause", replica_id))
        self._states[replica_id] = ReplicaState.READY

    def lb_url(self) -> str:
        return "http://127.0.0.1:1"

    def prometheus_url(self) -> str | None:
        return None

    def teardown(self) -> None:
        self.torn_down = True
