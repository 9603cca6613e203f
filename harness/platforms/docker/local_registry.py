"""A real image registry on this machine: Debian's `docker-registry` (Distribution 2.8).

`harness registry up [--port 5000]` starts it as a host process (its own session, so it
outlives the command) listening on 127.0.0.1 only; Docker trusts registries on
127.0.0.0/8 without TLS by default, so no daemon change is needed. Everything it stores
lives in `/var/tmp/harness-registry/<port>/`:

    harness-registry.json   the marker: labels (harness.managed=true, harness.role=registry),
                            port, pid, the command line it runs
    config.yml              its configuration (filesystem storage, delete enabled)
    data/                   the blobs and manifests
    registry.log            its log

`harness registry down` stops it, removes the folder and untags the engine's names of its
images (`127.0.0.1:<port>/…`); `harness clean --volumes` does the same for every folder
carrying the marker. The process does not carry the harness's
process labels (local_procs.MANAGED_ENV): a plain `harness clean` sweeps leftovers of runs,
and a registry holding pushed images is kept data, removed only when asked.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.errors import PrerequisiteError, UsageError

ROOT = Path("/var/tmp/harness-registry")
MARKER = "harness-registry.json"
LABELS = {"harness.managed": "true", "harness.role": "registry"}
DEFAULT_PORT = 5000
BINARY_CANDIDATES = ("/usr/bin/docker-registry", "/usr/sbin/docker-registry")
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RegistryStatus:
    port: int
    folder: Path
    pid: int | None
    answers: bool
    size_bytes: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def line(self) -> str:
        state = "up" if self.answers else ("not answering" if self.pid else "down")
        return (f"registry {self.address}: {state}, pid {self.pid or '-'}, "
                f"{self.size_bytes / 1e6:.1f} MB in {self.folder}")


def render_config(port: int, data_dir: Path) -> str:
    """The registry's config.yml (pure): filesystem storage, 127.0.0.1 only, deletes on."""
    cfg = {
        "version": 0.1,
        "log": {"level": "warn", "fields": {"service": "registry"}},
        "storage": {"filesystem": {"rootdirectory": str(data_dir)},
                    "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "headers": {"X-Content-Type-Options":
                                                              ["nosniff"]}},
    }
    return "# written by harness (harness/platforms/docker/local_registry.py)\n" + yaml.safe_dump(
        cfg, sort_keys=False)


def binary() -> str:
    for path in BINARY_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("docker-registry")
    if found:
        return found
    raise PrerequisiteError("docker-registry is not installed (scripts/setup.sh installs "
                            "Debian's docker-registry package)")


def folder_of(port: int, root: Path = ROOT) -> Path:
    return root / str(port)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_marker(folder: Path) -> dict[str, object] | None:
    path = folder / MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    labels = doc.get("labels") if isinstance(doc, dict) else None
    if not isinstance(labels, dict) or labels.get("harness.managed") != "true":
        return None
    return doc


def _pid_is_ours(pid: int, config: Path) -> bool:
    """The pid still runs our registry with this config (pids are reused)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(config).encode() in cmd


def _answers(port: int, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=timeout_s) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _size(folder: Path) -> int:
    total = 0
    for p in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
    return total


def status(port: int, root: Path = ROOT) -> RegistryStatus:
    folder = folder_of(port, root)
    doc = _read_marker(folder)
    pid = None
    if doc is not None:
        raw = doc.get("pid")
        if isinstance(raw, int) and _pid_is_ours(raw, folder / "config.yml"):
            pid = raw
    return RegistryStatus(port=port, folder=folder, pid=pid,
                          answers=pid is not None and _answers(port),
                          size_bytes=_size(folder) if folder.is_dir() else 0)


def up(port: int = DEFAULT_PORT, root: Path = ROOT) -> RegistryStatus:
    """Start the registry on 127.0.0.1:port (idempotent: a running one is kept)."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port}: not a TCP port")
    current = status(port, root)
    if current.answers:
        return current
    exe = binary()
    folder = folder_of(port, root)
    for d in (root, folder, folder / "data"):
        if d.is_symlink():
            raise UsageError(f"{d} is a link; refusing to store a registry there")
        d.mkdir(mode=0o755, exist_ok=True)
    config = folder / "config.yml"
    _write_atomic(config, render_config(port, folder / "data"))
    cmd = [exe, "serve", str(config)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    with open(folder / "registry.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True, env=env)
    _write_atomic(folder / MARKER, json.dumps(
        {"labels": LABELS, "port": port, "pid": proc.pid, "command": cmd}, indent=1) + "\n")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (folder / "registry.log").read_text(errors="replace")[-400:].strip()
            raise PrerequisiteError(f"docker-registry exited at start ({proc.returncode}): "
                                    f"{tail.splitlines()[-1] if tail else 'no log'}")
        if _answers(port, timeout_s=1.0):
            return status(port, root)
        time.sleep(0.2)
    _stop_pid(proc.pid, config)
    raise PrerequisiteError(f"docker-registry did not answer on 127.0.0.1:{port} within "
                            f"{START_TIMEOUT_S:.0f} s (log: {folder / 'registry.log'})")


def _stop_pid(pid: int, config: Path, grace_s: float = 5.0) -> None:
    if not _pid_is_ours(pid, config):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _pid_is_ours(pid, config):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when we started it in this process
        time.sleep(0.1)
    if _pid_is_ours(pid, config):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def untag_local(port: int) -> list[str]:
    """Remove the engine's names of images from the registry on `port` (tags from `harness
    images push`, names and digests a deployer or Swarm pulled): they point at a registry
    that is going away. Untag only: an image keeps its other names, and one a container
    still uses stays."""
    try:
        from harness.platform import docker_client

        client = docker_client(timeout_s=10)
    except Exception:  # no engine: nothing can carry such names
        return []
    import docker.errors

    prefixes = (f"127.0.0.1:{port}/", f"localhost:{port}/")
    lines = []
    for image in client.images.list():
        refs = [*(image.attrs.get("RepoTags") or []), *(image.attrs.get("RepoDigests") or [])]
        for ref in refs:
            if ref.startswith(prefixes):
                try:
                    client.images.remove(ref, noprune=True)
                    lines.append(f"untagged {ref}")
                except docker.errors.ImageNotFound:
                    pass  # a digest name goes with the image's last tag
                except docker.errors.APIError as e:
                    lines.append(f"kept {ref}: {e.explanation or e}")
    return lines


def down(port: int = DEFAULT_PORT, root: Path = ROOT, keep_data: bool = False) -> list[str]:
    """Stop the registry on `port` and remove its folder and the engine's names of its
    images (unless keep_data)."""
    folder = folder_of(port, root)
    doc = _read_marker(folder)
    if doc is None:
        return []
    lines = []
    pid = doc.get("pid")
    if isinstance(pid, int) and _pid_is_ours(pid, folder / "config.yml"):
        _stop_pid(pid, folder / "config.yml")
        lines.append(f"stopped registry 127.0.0.1:{port} (pid {pid})")
    if not keep_data:
        lines.extend(untag_local(port))
        size = _size(folder)
        shutil.rmtree(folder, ignore_errors=True)
        lines.append(f"removed registry storage {folder} ({size / 1e6:.1f} MB)")
        with contextlib.suppress(OSError):  # the last one takes the parent with it
            if not root.is_symlink() and not any(root.iterdir()):
                root.rmdir()
    return lines


def known_ports(root: Path = ROOT) -> list[int]:
    """Ports of every registry folder carrying our marker."""
    if not root.is_dir() or root.is_symlink():
        return []
    return sorted(int(d.name) for d in root.iterdir()
                  if d.name.isdigit() and d.is_dir() and _read_marker(d) is not None)


def sweep(root: Path = ROOT) -> list[str]:
    """`harness clean --volumes`: every marked registry stopped and its storage removed."""
    lines: list[str] = []
    for port in known_ports(root):
        lines.extend(down(port, root))
    return lines
