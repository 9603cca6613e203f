"""The Docker fault primitives: crash, kill, pause, unpause of one container.

`crash` is a real crash: the container's main process dies by SIGKILL sent from the host
to its host PID (`State.Pid`), exactly as if the kernel's OOM killer or a segfault had
ended it. Docker records a non-zero exit that was not a manual stop, so a restart policy
(`always`) fires and Swarm replaces the task. `docker stop` / `docker kill` (the API kill)
are *manual* stops to the daemon — a restart policy never fires after them — so they are
never used to fake a crash; the API kill is the separate `kill` fault ("gone until someone
replaces it").

`pause` freezes every process of the container (cgroup freezer): TCP connections are still
accepted by the kernel, so clients see timeouts, not refusals.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from harness.errors import DeployError


def _pid_belongs_to(pid: int, container_id: str, proc_root: Path) -> bool:
    """Is `pid` still a process of that container? (guards against PID reuse between
    reading State.Pid and sending the signal). Unknown cgroup layouts count as yes."""
    try:
        cgroup = (proc_root / str(pid) / "cgroup").read_text()
    except OSError:
        return False
    if "docker" not in cgroup and "containerd" not in cgroup:
        return True  # a layout we do not know (e.g. a private cgroup namespace)
    return container_id in cgroup


def crash(container: Any, proc_root: Path = Path("/proc")) -> int:
    """SIGKILL the container's main process by its host PID; returns the PID.

    A paused container is thawed first: a frozen task keeps a pending SIGKILL until it
    thaws, so the crash would otherwise happen at some unknown later time.
    """
    container.reload()
    state = container.attrs.get("State", {})
    if state.get("Paused"):
        container.unpause()
        container.reload()
        state = container.attrs.get("State", {})
    pid = int(state.get("Pid") or 0)
    if not state.get("Running") or pid <= 0:
        raise DeployError(f"container {container.id[:12]} is not running; nothing to crash")
    if not _pid_belongs_to(pid, container.id, proc_root):
        raise DeployError(f"PID {pid} is no longer container {container.id[:12]}'s main "
                          "process (is the Docker daemon on this host?)")
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        raise DeployError(f"container {container.id[:12]}: PID {pid} vanished") from None
    except PermissionError:
        raise DeployError(f"not allowed to SIGKILL PID {pid} (the crash fault needs root "
                          "on the Docker host)") from None
    return pid


def kill(container: Any) -> None:
    """The API kill: Docker marks it a manual stop, so no restart policy undoes it."""
    container.kill()


def pause(container: Any) -> None:
    container.pause()


def unpause(container: Any) -> bool:
    """Thaw if frozen; False when it was not paused (or is gone)."""
    try:
        container.reload()
        if not container.attrs.get("State", {}).get("Paused"):
            return False
        container.unpause()
        return True
    except Exception as e:  # gone meanwhile: nothing frozen any more
        if type(e).__name__ == "NotFound":
            return False
        raise
