"""Host processes for the local platform: free ports, process groups, clean ends.

Every process the local deployer starts is the leader of its own session and process
group (`start_new_session=True`), so one `killpg` reaches whatever the replica forked
and the harness's own Ctrl-C (sent to the terminal's foreground group) does not hit the
replicas before teardown gets to them in order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free right now (a small race with others remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# The process-level twin of the Docker labels harness.managed / harness.run: every host
# process the harness starts carries them in its environment, so `harness clean` can find
# what a SIGKILLed run left behind (and nothing else) by reading /proc/PID/environ.
MANAGED_ENV = "HARNESS_MANAGED"
RUN_ENV = "HARNESS_RUN"


def labelled_env(env: Mapping[str, str], run_id: str | None) -> dict[str, str]:
    out = dict(env)
    if run_id:
        out[MANAGED_ENV] = "true"
        out[RUN_ENV] = run_id
    return out


def spawn(cmd: Sequence[str], *, env: Mapping[str, str], log_path: Path,
          cwd: Path | None = None, run_id: str | None = None) -> subprocess.Popen[bytes]:
    """Start `cmd` as a new session/process group, stdout+stderr appended to `log_path`,
    labelled with `run_id` (see MANAGED_ENV)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(list(cmd), env=labelled_env(env, run_id), cwd=cwd,
                                stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True)


def group_members(pgid: int, proc_root: Path = Path("/proc")) -> list[int]:
    """PIDs whose process group is `pgid`, read from /proc (field 5 of /proc/PID/stat)."""
    members: list[int] = []
    for entry in proc_root.iterdir() if proc_root.exists() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # comm (field 2) may contain spaces and parentheses: split after the last ')'
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> bool:
    """Send `sig` to the process group `proc` leads. False when nothing was there.

    While the leader is not reaped its PID (= the group id) cannot be reused, so the
    signal cannot reach a stranger. After it was reaped, only signal a group that /proc
    still shows members of (a forked child that outlived the leader).
    """
    pgid = proc.pid
    if proc.returncode is not None and not group_members(pgid):
        return False
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop_groups(procs: Iterable[subprocess.Popen[bytes]], grace_s: float = 2.0) -> None:
    """SIGCONT (a stopped process cannot act on SIGTERM), SIGTERM, wait, then SIGKILL.

    Returns when every leader is reaped and no member of their groups is left.
    """
    procs = list(procs)
    for p in procs:
        signal_group(p, signal.SIGCONT)
        signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
    for p in procs:
        # The leader may have exited on SIGTERM while a child of it lingers: kill the group
        # in every case (signal_group checks /proc once the leader is gone).
        signal_group(p, signal.SIGKILL)
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=5)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(group_members(p.pid) for p in procs):
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def wait_tcp(host: str, port: int, timeout_s: float) -> bool:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def exit_description(returncode: int | None) -> str:
    """'signal=SIGKILL' / 'code=1' for a Popen return code."""
    if returncode is None:
        return "running"
    if returncode < 0:
        try:
            return f"signal={signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal={-returncode}"
    return f"code={returncode}"


def child_env(base: Mapping[str, str], *overlays: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    for o in overlays:
        env.update({str(k): str(v) for k, v in o.items()})
    return env


def tail(path: Path, max_bytes: int = 2000) -> str:
    """The end of a log file on one line (" | " between lines), for error messages."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            text = f.read().decode(errors="replace").strip()
        return " | ".join(line for line in text.splitlines() if line.strip())
    except OSError:
        return ""


def labelled_processes(run_id: str | None = None,
                       proc_root: Path = Path("/proc")) -> list[tuple[int, str]]:
    """(pid, run id) of every process labelled HARNESS_MANAGED=true (of `run_id` if given),
    this process excluded."""
    out: list[tuple[int, str]] = []
    me = os.getpid()
    for entry in proc_root.iterdir() if proc_root.exists() else ():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{MANAGED_ENV}=true".encode() not in environ:
            continue
        rid = next((e.split(b"=", 1)[1].decode(errors="replace") for e in environ
                    if e.startswith(f"{RUN_ENV}=".encode())), "")
        if run_id is None or rid == run_id:
            out.append((int(entry.name), rid))
    return out


def sweep_processes(run_id: str | None = None) -> list[str]:
    """Kill every labelled process (paused ones are continued first so they die now)."""
    lines = []
    for pid, rid in labelled_processes(run_id):
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
        lines.append(f"process {pid} (run {rid or '?'}) killed")
    return lines
