"""Which runs are alive: a live `harness run` holds an flock for its whole life.

The lock file is `<private root>/runs/<run-id>.lock` (the root is the user's 0700 folder,
harness.platforms.docker.docker_objects.WORKDIR_ROOT), so `harness clean` can tell a run in progress
from a leftover without knowing where its results went, and the dashboard can tell a
`running` run.json whose process died (SIGKILL, power loss) from a live one. The kernel
drops an flock when its process dies, so a stale lock file never looks alive.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.fsutil import RUN_ID_RE, private_root

DEFAULT_ROOT = Path(f"/tmp/harness-deploy-{os.getuid()}")


def _lock_dir(root: Path) -> Path:
    d = private_root(root) / "runs"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def hold(run_id: str, root: Path = DEFAULT_ROOT) -> int:
    """Take the run's lock; returns the fd to keep open for the run's life."""
    path = _lock_dir(root) / f"{run_id}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def release(fd: int, run_id: str, root: Path = DEFAULT_ROOT) -> None:
    try:
        forget(run_id, root)
    finally:
        os.close(fd)


def forget(run_id: str, root: Path = DEFAULT_ROOT) -> None:
    """Remove the run's lock file (the second Ctrl-C exits without unwinding)."""
    (root / "runs" / f"{run_id}.lock").unlink(missing_ok=True)


def is_held(run_id: str, root: Path = DEFAULT_ROOT) -> bool | None:
    """True: a live process holds the run's lock; False: the lock file is there but
    nobody holds it; None: no lock file (another user's run, or none)."""
    if not RUN_ID_RE.match(run_id):
        return None
    try:
        fd = os.open(root / "runs" / f"{run_id}.lock",
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def live_run_ids(root: Path = DEFAULT_ROOT) -> set[str]:
    d = root / "runs"
    try:
        names = [p.name[:-5] for p in d.iterdir() if p.name.endswith(".lock")]
    except OSError:
        return set()
    return {n for n in names if is_held(n, root)}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def effective_status(run_id: str, run_json: Mapping[str, Any],
                     root: Path = DEFAULT_ROOT) -> str:
    """run.json's status, except that a `running` run whose process is gone is
    `incomplete` (what it measured is there, but nothing will finish it)."""
    status = str(run_json.get("status", "unknown"))
    if status != "running":
        return status
    held = is_held(run_id, root)
    if held is not None:
        return "running" if held else "incomplete"
    pid = run_json.get("pid")
    host = (run_json.get("host") or {}).get("hostname") if isinstance(
        run_json.get("host"), Mapping) else None
    if isinstance(pid, int) and pid > 0 and host == socket.gethostname():
        return "running" if _pid_alive(pid) else "incomplete"
    return status
