"""Docker objects as the harness names, labels, finds and removes them: the labels and
names every trial's containers carry, parsing `docker inspect`, the per-trial work folders,
the images a deploy needs, and removal helpers. Pure helpers and thin Docker calls; no
deployer state (docker_common.py next to it is the deployer base, cleanup.py the sweep,
and both use this)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from harness.clock import Clock
from harness.deploy.base import (
    MANAGED_LABEL,
    RUN_LABEL,
    DeploySpec,
    ReplicaState,
    labels_for,
)
from harness.errors import PrerequisiteError
from harness.fsutil import atomic_write, private_root

TRIAL_LABEL = "harness.trial"
ROLE_LABEL = "harness.role"  # app | lb | prometheus | prober
KIND_LABEL = "harness.kind"  # manual | compose | orchestrated

APP_IMAGE = "harness-app:latest"
LB_IMAGE = "harness-haproxy:latest"
PROMETHEUS_IMAGE = "harness-prometheus:latest"
PROBER_IMAGE = "harness-base:bookworm"

# per-trial config dirs (bind-mounted) and run locks: one private (0700) root per user,
# so no other local user can read the configs or reach the HAProxy admin socket
WORKDIR_ROOT = Path(f"/tmp/harness-deploy-{os.getuid()}")
OWNER_FILE = "owner.json"

STOP_GRACE_S = 2  # "the app container must stop promptly"
LB_ALIAS = "lb"
PROMETHEUS_ALIAS = "prometheus"
APP_ALIAS = "app"


# ── pure helpers ─────────────────────────────────────────────────────────────────────


def safe_name(*parts: str, max_len: int = 63) -> str:
    """A Docker/DNS-safe lower-case name from parts; long names keep a hash for unicity."""
    raw = "-".join(p for p in parts if p)
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name) or "x"
    if len(name) > max_len:
        digest = hashlib.sha1(raw.encode()).hexdigest()[:6]
        name = name[: max_len - 7].rstrip("-") + "-" + digest
    if not name[0].isalnum():
        name = "h" + name[: max_len - 1]
    return name


def trial_labels(spec: DeploySpec, kind: str, role: str) -> dict[str, str]:
    return labels_for(spec.run_id, **{TRIAL_LABEL: spec.trial_id, KIND_LABEL: kind,
                                      ROLE_LABEL: role})


def label_filters(run_id: str | None, trial_id: str | None = None, role: str | None = None,
                  *, managed: bool = False) -> dict[str, list[str]]:
    """Docker's `filters` for the objects carrying these labels (each one given); managed:
    also harness.managed=true, which the sweeps ask for (they may span every run)."""
    labels = [f"{MANAGED_LABEL}=true"] if managed else []
    if run_id is not None:
        labels.append(f"{RUN_LABEL}={run_id}")
    if not labels:
        # no label at all would select every object on the engine, the user's own too
        raise ValueError("label_filters needs a run id or managed=True")
    if trial_id is not None:
        labels.append(f"{TRIAL_LABEL}={trial_id}")
    if role is not None:
        labels.append(f"{ROLE_LABEL}={role}")
    return {"label": labels}


_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


# dockershim (the kubelet's Docker runtime) copies a pod's labels onto its containers, so
# a kubernetes trial's pods carry harness.managed / harness.run too; they are the
# kubernetes platform's to remove (with their namespace), never the docker sweep's.
KUBERNETES_POD_LABEL = "io.kubernetes.pod.name"


def is_kubernetes_container(labels: dict[str, str] | None) -> bool:
    return bool(labels) and KUBERNETES_POD_LABEL in (labels or {})


def list_containers(client: Any, filters: dict[str, Any],
                    include_stopped: bool = True) -> list[Any]:
    """client.containers.list without its race: docker-py lists, then inspects each id, and
    a container removed in between (a compose restart, a Swarm task, a tear-down) raised
    NotFound for the whole call. Here a vanished container is simply not listed. Pod
    containers of a Kubernetes node on this engine are never listed (see above)."""
    import docker.errors

    out = []
    for d in client.api.containers(all=include_stopped, filters=filters):
        if is_kubernetes_container(d.get("Labels")):
            continue
        try:
            out.append(client.containers.get(d["Id"]))
        except docker.errors.NotFound:
            continue
    return out

def parse_docker_time(value: str | None) -> float | None:
    """Docker's RFC 3339 (nanoseconds) timestamps → epoch seconds; None for the zero time."""
    if not value or value.startswith("0001-01-01"):
        return None
    m = _TS.match(value.strip())
    if not m:
        return None
    base, frac, tz = m.groups()
    tz = "+00:00" if tz == "Z" else tz
    t = dt.datetime.fromisoformat(base + tz).timestamp()
    return t + (float(frac) if frac else 0.0)


NO_HEALTHCHECK: dict[str, Any] = {"test": ["NONE"]}  # the image's own one, disabled


def app_env(spec: DeploySpec) -> dict[str, str]:
    env = {"PORT": str(spec.app.port)}
    env.update({str(k): str(v) for k, v in spec.app.env.items()})
    return env


def replica_state(state: dict[str, Any], ready: bool) -> ReplicaState:
    """From a container's `State` and whether this life has answered a probe (pure)."""
    status = state.get("Status", "")
    if status == "paused" or state.get("Paused"):
        return ReplicaState.PAUSED
    if status == "running":
        return ReplicaState.READY if ready else ReplicaState.STARTING
    if status == "created":
        return ReplicaState.STARTING
    # restarting (Docker's back-off before a restart), exited, dead, removing
    return ReplicaState.EXITED


def container_ip(attrs: dict[str, Any], network: str) -> str | None:
    nets = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    ip = (nets.get(network) or {}).get("IPAddress")
    return ip or None


def published_port(attrs: dict[str, Any], port: int) -> int | None:
    ports = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for binding in ports.get(f"{port}/tcp") or []:
        if binding.get("HostIp") in ("127.0.0.1", "") and binding.get("HostPort"):
            return int(binding["HostPort"])
    return None


def localhost_ports(*ports: int) -> dict[str, tuple[str, None]]:
    """Publish on 127.0.0.1 only, on ports the kernel picks."""
    return {f"{p}/tcp": ("127.0.0.1", None) for p in ports}


def to_clock(clock: Clock, wall_ts: float | None) -> float | None:
    """A wall-clock timestamp on the clock's monotonic scale."""
    if wall_ts is None:
        return None
    return clock.now() - (clock.wall() - wall_ts)


def http_answers(url: str, timeout_s: float = 2.0) -> bool:
    """Any HTTP answer (also 503 before a replica is up) from a 127.0.0.1 URL."""
    assert url.startswith("http://127.0.0.1:"), url
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as resp:
            resp.read()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


# ── per-trial working directory (bind-mounted configs, admin socket) ─────────────────


def make_workdir(spec: DeploySpec, kind: str, root: Path = WORKDIR_ROOT) -> Path:
    """root/<short name>: short because the admin socket path must fit in 108 bytes."""
    # refused when a link or someone else's: a root planted in /tmp before us would let
    # its owner read the configs and swap the socket
    private_root(root)
    d = Path(tempfile.mkdtemp(prefix=f"{safe_name(spec.trial_id, max_len=20)}-", dir=root))
    atomic_write(d / OWNER_FILE, json.dumps({"run_id": spec.run_id, "trial_id": spec.trial_id,
                                             "kind": kind, "pid": os.getpid()}))
    for sub in ("haproxy", "prometheus"):
        # inside the container only the mount point's own mode counts: 0755 lets an
        # image's non-root user read its config, while the 0700 ancestors keep host users out
        (d / sub).mkdir(mode=0o755)
        os.chmod(d / sub, 0o755)
    run = d / "haproxy-run"
    run.mkdir()
    # whatever user HAProxy runs as creates its socket here (write+search, no listing);
    # the socket itself is mode 600 owned by our uid (haproxy.render_config)
    os.chmod(run, 0o733)
    return d


def remove_workdirs(run_id: str | None, root: Path = WORKDIR_ROOT,
                    trial_id: str | None = None) -> list[Path]:
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for d in root.iterdir():
        try:
            owner = json.loads((d / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if run_id is not None and owner.get("run_id") != run_id:
            continue
        if trial_id is not None and owner.get("trial_id") != trial_id:
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def harness_user() -> str:
    """"uid:gid" of the harness: Prometheus writes its TSDB as the user who runs us."""
    return f"{os.getuid()}:{os.getgid()}"


def write_text(path: Path, text: str) -> None:
    atomic_write(path, text, mode=0o644)


def default_image(role: str, fallback: str) -> str:
    """The image `harness images build` made for a role, or the user's override
    (HARNESS_HAPROXY_IMAGE, HARNESS_PROMETHEUS_IMAGE; see images.py)."""
    try:
        from harness.platforms.docker.images import image_ref
    except ImportError:  # pragma: no cover - images.py is part of the package
        return fallback
    return image_ref(role)


def require_images(client: Any, *names: str) -> None:
    import docker.errors

    missing = []
    for n in names:
        try:
            client.images.get(n)
        except docker.errors.ImageNotFound:
            missing.append(n)
    if missing:
        raise PrerequisiteError(f"missing image(s) {', '.join(missing)}: run "
                                "`harness images build`")


# ── the shared deployer skeleton ─────────────────────────────────────────────────────


def remove_containers(containers: Iterable[Any], log: Callable[[str], None] | None = None
                      ) -> None:
    import docker.errors

    for c in containers:
        try:
            if c.status == "paused":
                c.unpause()
            c.remove(force=True, v=True)  # v: anonymous volumes (e.g. an image VOLUME)
            if log:
                log(f"removed container {c.name}")
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if "already in progress" not in str(e):
                raise


def remove_networks(client: Any, names: Iterable[str], timeout_s: float = 20.0,
                    log: Callable[[str], None] | None = None) -> None:
    """Remove networks, retrying while endpoints detach (Swarm's take a moment)."""
    import docker.errors

    for name in names:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                net = client.networks.get(name)
            except docker.errors.NotFound:
                break
            try:
                net.remove()
                if log:
                    log(f"removed network {name}")
                break
            except docker.errors.NotFound:
                break
            except docker.errors.APIError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
