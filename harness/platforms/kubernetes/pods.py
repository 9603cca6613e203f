"""Pods as the harness sees them (pure): a `PodView` from a Pod object, its replica state,
and the pod-level events between two observations of one pod.

Kubernetes' own timestamps (creationTimestamp, conditions' lastTransitionTime, a
container's startedAt) have one-second resolution in 1.20, so the watch also notes when
it *saw* a change (milliseconds after the kubelet reported it); `podwatch.py` uses that to
date readiness, and the node's runtime (Docker, through dockershim) to date a container's
start to the nanosecond where it is reachable.

The replica states map as on Docker (harness/platforms/docker/docker_objects.py,
`replica_state`): a running container is READY once the pod's Ready condition is True,
else STARTING; a pod still being created (Pending, ContainerCreating, image checks) is
STARTING; a terminated container, or one waiting to be restarted (CrashLoopBackOff after
a crash), is EXITED with the exit code of its last termination.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from harness.deploy.base import ReplicaState


def parse_time(value: Any) -> float | None:
    """RFC 3339 ("2021-01-02T03:04:05Z", optional fraction) → epoch seconds."""
    if not value or not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class PodView:
    name: str
    uid: str
    phase: str = "Pending"  # Pending | Running | Succeeded | Failed | Unknown
    created_at: float | None = None
    scheduled_at: float | None = None  # PodScheduled condition True
    node: str = ""
    pod_ip: str = ""
    deleting: bool = False  # deletionTimestamp set: terminating, out of the Service
    ready: bool = False  # the pod's Ready condition
    ready_since: float | None = None  # its lastTransitionTime
    container_state: str = ""  # running | waiting | terminated | "" (no status yet)
    reason: str = ""  # waiting/terminated reason (ContainerCreating, CrashLoopBackOff…)
    message: str = ""
    started_at: float | None = None  # the running container's startedAt
    restarts: int = 0
    exit_code: int | None = None  # of the current or last termination
    container_id: str = ""  # "docker://<id>" (runtime://id)
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def life(self) -> tuple[str, int]:
        """One life of the replica: a restart in place keeps the pod, adds a restart."""
        return (self.uid, self.restarts)


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in status.get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


def parse_pod(obj: dict[str, Any], container: str = "app") -> PodView:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    statuses = status.get("containerStatuses") or []
    cs = next((s for s in statuses if s.get("name") == container),
              statuses[0] if statuses else {})
    state = cs.get("state") or {}
    last = (cs.get("lastState") or {}).get("terminated") or {}
    kind = next(iter(state), "")
    body = state.get(kind) or {}
    exit_code = body.get("exitCode") if kind == "terminated" else last.get("exitCode")
    ready = _condition(status, "Ready")
    scheduled = _condition(status, "PodScheduled")
    return PodView(
        name=str(meta.get("name", "")), uid=str(meta.get("uid", "")),
        phase=str(status.get("phase") or "Pending"),
        created_at=parse_time(meta.get("creationTimestamp")),
        scheduled_at=parse_time(scheduled.get("lastTransitionTime"))
        if scheduled.get("status") == "True" else None,
        node=str((obj.get("spec") or {}).get("nodeName") or ""),
        pod_ip=str(status.get("podIP") or ""),
        deleting=bool(meta.get("deletionTimestamp")),
        ready=ready.get("status") == "True",
        ready_since=parse_time(ready.get("lastTransitionTime")),
        container_state=kind, reason=str(body.get("reason") or ""),
        message=str(body.get("message") or "")[:300],
        started_at=parse_time(body.get("startedAt")) if kind == "running" else None,
        restarts=int(cs.get("restartCount") or 0),
        exit_code=None if exit_code is None else int(exit_code),
        container_id=str(cs.get("containerID") or ""),
        labels=tuple(sorted((meta.get("labels") or {}).items())))


def replica_state(p: PodView, *, paused: bool = False) -> ReplicaState:
    if paused and p.container_state == "running":
        return ReplicaState.PAUSED
    if p.container_state == "running":
        return ReplicaState.READY if p.ready else ReplicaState.STARTING
    if p.container_state == "terminated" or p.phase in ("Failed", "Succeeded"):
        return ReplicaState.EXITED
    if p.container_state == "waiting" and (p.restarts > 0 or p.exit_code is not None):
        return ReplicaState.EXITED  # crashed, waiting for its restart (back-off)
    return ReplicaState.STARTING  # scheduling, pulling, creating the container


def has_started(p: PodView) -> bool:
    """Has this pod's container ever run (running now, or terminated / restarted since)?"""
    return (p.container_state in ("running", "terminated") or p.restarts > 0
            or p.exit_code is not None)


@dataclass(frozen=True)
class PodEvent:
    kind: str  # pod_created | pod_scheduled | pod_deleted
    pod: str
    detail: str = ""
    at_wall: float | None = None


def dated(stamp: float | None, seen_wall: float) -> float:
    """When a step the API dates to the whole second happened, as closely as known (pure):
    it happened in [stamp, stamp + 1) and before the watch saw it, so the earlier of the
    two bounds (the watch's, milliseconds late, for a step seen as it happened; the end of
    the stamp's second for one listed later)."""
    return seen_wall if stamp is None else min(seen_wall, stamp + 1.0)


def pod_events(prev: PodView | None, cur: PodView | None, seen_wall: float) -> list[PodEvent]:
    """What happened to one pod between two observations (pure). `cur` None: the pod is
    gone (DELETED); `prev` None: first sight. Starts, readiness, exits and restarts are
    the replica's, derived from `replicas()` by the run loop's ReplicaWatcher as on every
    platform; these are the pod's own steps around them."""
    out: list[PodEvent] = []
    if cur is None:
        if prev is not None:
            out.append(PodEvent("pod_deleted", prev.name,
                                f"phase={prev.phase} restarts={prev.restarts}", seen_wall))
        return out
    if prev is None:
        out.append(PodEvent("pod_created", cur.name, f"uid={cur.uid[:8]}",
                            dated(cur.created_at, seen_wall)))
    if cur.scheduled_at is not None and (prev is None or prev.scheduled_at is None):
        since = (f" since_created_s={cur.scheduled_at - cur.created_at:.0f}"
                 if cur.created_at is not None else "")
        out.append(PodEvent("pod_scheduled", cur.name, f"node={cur.node}{since}",
                            dated(cur.scheduled_at, seen_wall)))
    if cur.deleting and (prev is None or not prev.deleting):
        out.append(PodEvent("pod_deleting", cur.name, f"phase={cur.phase}", seen_wall))
    if cur.reason == "CrashLoopBackOff" and (prev is None or prev.reason != cur.reason):
        out.append(PodEvent("pod_backoff", cur.name,
                            f"restarts={cur.restarts} {cur.message[:120]}".strip(), seen_wall))
    return out


def describe(p: PodView) -> str:
    """One pod's state for an error message: phase, container state and reason."""
    parts = [f"phase={p.phase}"]
    if p.container_state:
        parts.append(f"container={p.container_state}"
                     + (f"({p.reason})" if p.reason else ""))
    if p.exit_code is not None:
        parts.append(f"exit_code={p.exit_code}")
    if p.restarts:
        parts.append(f"restarts={p.restarts}")
    if p.message:
        parts.append(f"message={p.message[:160]!r}")
    if p.deleting:
        parts.append("terminating")
    return " ".join(parts)
