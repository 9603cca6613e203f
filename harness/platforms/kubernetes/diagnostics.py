"""Why pods are not ready, in one line each (the trial's wait-for-ready error appends it):
phase, container state and reason (ErrImageNeverPull, CrashLoopBackOff, …), the last
readiness-probe failure from the pod's events, and its last log lines; warnings of the
namespace when there is no pod at all (e.g. a ReplicaSet's FailedCreate)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.platforms.kubernetes.client import KubeClient, path_of
from harness.platforms.kubernetes.pods import PodView, describe


def _events(client: KubeClient, namespace: str, field_selector: str | None = None
            ) -> list[dict[str, Any]]:
    try:
        doc = client.get(path_of("api", "v1", "namespaces", namespace, "events"),
                         fieldSelector=field_selector)
    except Exception:
        return []
    items = list((doc or {}).get("items") or [])
    items.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    return items


def last_probe_failure(events: Iterable[dict[str, Any]]) -> str:
    """The newest 'Readiness probe failed: …' of a pod's events (pure)."""
    msg = ""
    for e in events:
        if e.get("reason") == "Unhealthy" or "probe failed" in str(e.get("message", "")):
            count = e.get("count")
            msg = str(e.get("message", "")).strip()[:200] + (f" (×{count})" if count else "")
    return msg


def one_line(text: str, lines: int, limit: int = 400) -> str:
    tail = [ln.strip() for ln in text.strip().splitlines() if ln.strip()][-lines:]
    out = " | ".join(tail)
    return out if len(out) <= limit else "…" + out[-limit:]


def explain(client: KubeClient, namespace: str, pods: Iterable[PodView],
            log_lines: int = 5) -> list[str]:
    out: list[str] = []
    pods = list(pods)
    for p in pods:
        if p.ready and p.container_state == "running" and not p.deleting:
            continue
        parts = [f"pod {p.name}: {describe(p)}"]
        probe = last_probe_failure(_events(client, namespace,
                                           f"involvedObject.name={p.name}"))
        if probe:
            parts.append(f"last probe: {probe}")
        logs = ""
        try:
            logs = client.log(namespace, p.name, tail_lines=20)
            if not logs and p.restarts:
                logs = client.log(namespace, p.name, tail_lines=20, previous=True)
        except Exception:
            logs = ""
        if logs.strip():
            parts.append(f"log: {one_line(logs, log_lines)}")
        out.append("; ".join(parts) + ".")
    if not pods:
        warnings = [e for e in _events(client, namespace) if e.get("type") == "Warning"]
        detail = "; ".join(f"{(e.get('involvedObject') or {}).get('name', '?')}: "
                           f"{e.get('reason')}: {str(e.get('message', ''))[:160]}"
                           for e in warnings[-3:])
        out.append("no app pod exists" + (f" ({detail})" if detail else "") + ".")
    return out
