"""Readiness of Docker replicas, observed from outside them (docs/architecture.md,
"Readiness").

One prober container per trial (`probe_agent.py`, run by the harness's base image on the
trial's network) probes every replica over HTTP and writes what it saw to a status file
in the trial's bind-mounted working directory. This module is the host's side:

- `start_prober` starts that container (no port published, nothing exec'd anywhere);
- `StatusReader` reads the file, and re-parses it only when it changed;
- `first_ready_at` is a replica life's ready time: the end of its first successful probe
  that *started* after the container's `State.StartedAt` — so a compose restart on the
  same address must answer again, and a probe of the previous life never counts;
- `describe_last` says in a few words why a replica is not ready (for error messages).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.deploy.base import Replica

PROBER_DIR = "prober"  # in the trial's working directory: status.json lands here
PROBER_BIN_DIR = "prober-bin"  # a copy of probe_agent.py, mounted read-only
STATUS_FILE = "status.json"
WAKE_FILE = "wake"  # touched by the host when replicas are about to change
MOUNT_OUT = "/harness-prober/out"
MOUNT_BIN = "/harness-prober/bin"
AGENT = Path(__file__).with_name("probe_agent.py")


@dataclass(frozen=True)
class Probe:
    start: float  # wall-clock seconds
    end: float
    ok: bool
    outcome: str  # "http 200" | "refused" | "timeout" | "error: …"


@dataclass(frozen=True)
class Status:
    updated: float | None
    resolve_error: str | None
    probes: Mapping[str, Sequence[Probe]]  # "ip:port" → oldest first


EMPTY = Status(None, None, {})


def parse_status(doc: Mapping[str, Any]) -> Status:
    probes: dict[str, list[Probe]] = {}
    for addr, rows in (doc.get("addresses") or {}).items():
        probes[str(addr)] = [Probe(float(r["start"]), float(r["end"]), bool(r["ok"]),
                                   str(r.get("outcome", ""))) for r in rows]
    updated = doc.get("updated")
    return Status(None if updated is None else float(updated), doc.get("resolve_error"),
                  probes)


def first_ready_at(probes: Sequence[Probe], started_at: float | None) -> float | None:
    """End of the first successful probe that started after `started_at` (pure)."""
    ends = [p.end for p in probes if p.ok and (started_at is None or p.start >= started_at)]
    return min(ends) if ends else None


def describe_last(probes: Sequence[Probe]) -> str:
    """"last probe: http 404 (20 probes: 18 http 404, 2 refused)" — or that none came."""
    if not probes:
        return "no probe answered yet (not in DNS, or the prober has not reached it)"
    counts = Counter(p.outcome for p in probes)
    mix = ", ".join(f"{n} {o}" for o, n in counts.most_common())
    return f"last probe: {probes[-1].outcome} ({len(probes)} probes: {mix})"


class StatusReader:
    """The prober's status file, parsed again only when it changed on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[int, int, int] | None = None
        self._status = EMPTY

    def read(self) -> Status:
        try:
            st = os.stat(self.path)
        except OSError:
            return self._status  # not written yet (or the trial is gone)
        key = (st.st_ino, st.st_mtime_ns, st.st_size)  # replaced atomically: a new inode
        if key == self._key:
            return self._status
        try:
            self._status = parse_status(json.loads(self.path.read_text()))
            self._key = key
        except (OSError, ValueError, KeyError, TypeError):
            pass  # keep the last good view; the next replacement will be whole
        return self._status


def prepare(workdir: Path) -> Path:
    """Create the prober's directories in a trial's working directory; → status path."""
    out = workdir / PROBER_DIR
    out.mkdir(mode=0o755, exist_ok=True)
    bin_dir = workdir / PROBER_BIN_DIR
    bin_dir.mkdir(mode=0o755, exist_ok=True)
    shutil.copyfile(AGENT, bin_dir / AGENT.name)
    (bin_dir / AGENT.name).chmod(0o644)
    return out / STATUS_FILE


def wake(workdir: Path | None) -> None:
    """Tell the prober replicas are about to change (a deploy, a scale): it resolves the
    name every 0.25 s for a while instead of once a second, so a new replica is found as
    soon as it is in DNS (probe_agent.py, discovery)."""
    if workdir is None:
        return
    path = workdir / PROBER_DIR / WAKE_FILE
    tmp = path.with_name(f".{WAKE_FILE}.tmp")
    try:
        tmp.write_text(repr(time.time()))
        os.replace(tmp, path)  # a new inode and mtime: never a write through a link
    except OSError:
        pass  # the trial is being torn down; nothing to wake


def start_prober(client: Any, *, image: str, name: str, network: str, dns_name: str,
                 port: int, path: str, workdir: Path, labels: Mapping[str, str]) -> Any:
    """The trial's prober container; it runs as the host user, so the status file it
    writes into the bind-mounted directory is the harness's own."""
    prepare(workdir)
    api = client.api
    c = api.create_container(
        image, name=name, labels=dict(labels), detach=True,
        command=["python3", "-I", "-S", f"{MOUNT_BIN}/{AGENT.name}", "--name", dns_name,
                 "--port", str(port), "--path", path,
                 "--out", f"{MOUNT_OUT}/{STATUS_FILE}", "--wake", f"{MOUNT_OUT}/{WAKE_FILE}"],
        user=f"{os.getuid()}:{os.getgid()}",
        healthcheck={"test": ["NONE"]},
        host_config=api.create_host_config(
            binds={str(workdir / PROBER_DIR): {"bind": MOUNT_OUT, "mode": "rw"},
                   str(workdir / PROBER_BIN_DIR): {"bind": MOUNT_BIN, "mode": "ro"}},
            restart_policy={"Name": "no"}),
        networking_config=api.create_networking_config(
            {network: api.create_endpoint_config()}))
    api.start(c["Id"])
    return client.containers.get(c["Id"])


def container_logs(c: Any, lines: int) -> str:
    """A container's last log lines, on one line ("" if there are none or it is gone)."""
    if c is None:
        return ""
    try:
        text = c.logs(tail=lines).decode(errors="replace")
    except Exception:
        return ""
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def describe_replica(r: Replica, state: dict[str, Any], probes: Sequence[Probe],
                     logs: str) -> str:
    """One unready replica in one sentence (pure)."""
    parts = [f"replica {r.id}: container {state.get('Status', '?')}"]
    if state.get("Status") in ("exited", "dead", "restarting"):
        parts.append(f"exit_code={state.get('ExitCode')}")
    if state.get("OOMKilled"):
        parts.append("OOM-killed")
    if r.restarts:
        parts.append(f"restarts={r.restarts}")
    text = ", ".join(parts) + "; " + describe_last(probes)
    return text + (f"; last log lines: {logs}" if logs else "; no log output") + "."
