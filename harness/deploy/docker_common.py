"""What the three Docker deployers share: names, labels, readiness, LB and Prometheus
containers, replica state from `docker inspect`, faults, and a tear-down that always ends
with a label sweep of the trial's own objects.

Readiness (one way for all three) is observed from outside the replicas
(docs/architecture.md, "Readiness"): one prober container per trial, on the trial's
network, sends `GET ready_path` to every address of the DNS name HAProxy and Prometheus
use (`app_dns_name()`), and writes what it saw to a bind-mounted status file
(`readiness.py`). A replica is READY from the end of its first successful probe that
started after `State.StartedAt`, so start-to-ready does not depend on how often the
harness polls, and a restarted replica is STARTING again until it answers. Nothing is
exec'd into a replica and nothing but an HTTP port is needed inside the image; the
image's own HEALTHCHECK is disabled, so Docker keeps no health state that Swarm or
anything else could act on: readiness is not liveness, and a replica that is merely slow
under load or paused by a fault is never killed for it.

The host never sends traffic to container addresses: it reads them from the Docker API
(to map HAProxy servers and Prometheus `instance` labels to replicas) and talks only to
ports published on 127.0.0.1 (LB, HAProxy stats, Prometheus), to HAProxy's admin socket
and to the prober's status file, both in bind-mounted host directories.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.clock import Clock
from harness.deploy import haproxy, prometheus
from harness.deploy.base import (
    RUN_LABEL,
    DeployEvent,
    DeploySpec,
    EventSink,
    Replica,
    ReplicaState,
    labels_for,
)
from harness.deploy.readiness import (
    PROBER_DIR,
    STATUS_FILE,
    Probe,
    StatusReader,
    container_logs,
    describe_replica,
    first_ready_at,
    start_prober,
)
from harness.errors import DeployError, PrerequisiteError
from harness.faults import docker_faults
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


def label_filters(run_id: str, trial_id: str | None = None,
                  role: str | None = None) -> dict[str, list[str]]:
    labels = [f"{RUN_LABEL}={run_id}"]
    if trial_id is not None:
        labels.append(f"{TRIAL_LABEL}={trial_id}")
    if role is not None:
        labels.append(f"{ROLE_LABEL}={role}")
    return {"label": labels}


_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def list_containers(client: Any, filters: dict[str, Any],
                    include_stopped: bool = True) -> list[Any]:
    """client.containers.list without its race: docker-py lists, then inspects each id, and
    a container removed in between (a compose restart, a Swarm task, a tear-down) raised
    NotFound for the whole call. Here a vanished container is simply not listed."""
    import docker.errors

    out = []
    for d in client.api.containers(all=include_stopped, filters=filters):
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
        from harness.deploy.images import image_ref
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


class DockerDeployerBase:
    """Deployer + FaultTarget on Docker; subclasses start and scale the app replicas.

    Thread-safe: the run loop's watcher, fault timeline and autoscaler call it from
    their own threads. `teardown` is idempotent, safe after a failed or partial deploy,
    and ends with a sweep of every object carrying this trial's labels.
    """

    platform = "docker"
    kind = "docker"
    replicas_cache_s = 0.2  # several threads poll replicas(); one inspect round serves all

    def __init__(self, client: Any, spec: DeploySpec, on_event: EventSink, clock: Clock, *,
                 lb_image: str | None = None, prometheus_image: str | None = None,
                 deploy_timeout_s: float = 90.0, workdir_root: Path = WORKDIR_ROOT,
                 haproxy_settings: haproxy.HAProxySettings | None = None,
                 scrape_interval_s: float = 1.0,
                 prober_image: str | None = None,
                 registry: str | None = None,
                 keep_metrics_dir: Path | None = None) -> None:
        if client is None:
            raise PrerequisiteError("the docker platform needs a Docker client")
        self.client = client
        self.spec = spec
        self._on_event = on_event
        self._clock = clock
        self.lb_image = lb_image or default_image("haproxy", LB_IMAGE)
        self.prometheus_image = prometheus_image or default_image("prometheus",
                                                                  PROMETHEUS_IMAGE)
        # the prober is stdlib-only Python: any image of ours with python3 runs it
        self.prober_image = prober_image or default_image("base", PROBER_IMAGE)
        # images through a registry (registry_images.py): our own images by its names
        self.registry = registry
        if registry:
            from harness.deploy.registry_images import run_ref

            self.lb_image = run_ref("haproxy", registry, self.lb_image)
            self.prometheus_image = run_ref("prometheus", registry, self.prometheus_image)
            self.prober_image = run_ref("base", registry, self.prober_image)
            self.spec = spec = dataclasses.replace(
                spec, app=dataclasses.replace(spec.app,
                                              image=run_ref("app", registry, spec.app.image)))
        self.pull_s: dict[str, float] = {}
        # each trial's Prometheus data kept there (kept_metrics.py); None: thrown away
        self.keep_metrics_dir = keep_metrics_dir
        self.deploy_timeout_s = deploy_timeout_s
        self.workdir_root = workdir_root
        self.haproxy_settings = haproxy_settings or haproxy.HAProxySettings(
            ready_path=spec.app.ready_path)
        self.scrape_interval_s = scrape_interval_s
        self._status: StatusReader | None = None
        self._lock = threading.RLock()
        self._snap_lock = threading.Lock()
        self._teardown_lock = threading.Lock()
        self._desired = spec.replicas
        self._deployed = False
        self._torn_down = False
        self.workdir: Path | None = None
        self.network_name = ""
        self._api: haproxy.RuntimeAPI | None = None
        self._lb_port = 0
        self._stats_port = 0
        self._prom_port = 0
        self._cache: tuple[float, list[Replica], dict[str, Any]] | None = None
        self._ready_cache: dict[tuple[str, float | None], float] = {}
        self.start_to_ready_s: list[float] = []

    # ── naming ────────────────────────────────────────────────────────────────────
    def name(self, *suffix: str, max_len: int = 63) -> str:
        return safe_name("harness", self.spec.run_id, self.spec.trial_id, *suffix,
                         max_len=max_len)

    def labels(self, role: str) -> dict[str, str]:
        return trial_labels(self.spec, self.kind, role)

    def emit(self, kind: str, replica: str = "", detail: str = "",
             at: float | None = None) -> None:
        with contextlib.suppress(Exception):  # a broken sink never breaks a deployment
            self._on_event(DeployEvent(kind, replica, detail, at))

    # ── Deployer ──────────────────────────────────────────────────────────────────
    def deploy(self) -> None:
        with self._lock:
            if self._deployed or self._torn_down:
                raise DeployError(f"a {type(self).__name__} deploys once; create a new one "
                                  "per trial")
            self._deployed = True
        t0 = self._clock.now()
        self._get_images()
        self.workdir = make_workdir(self.spec, self.kind, self.workdir_root)
        self._status = StatusReader(self.workdir / PROBER_DIR / STATUS_FILE)
        try:
            self._deploy()
            self._start_prober()
            self._wait_frontends(t0 + self.deploy_timeout_s)
        except DeployError:
            raise
        except PrerequisiteError:
            raise
        except Exception as e:
            raise DeployError(f"{self.kind} deploy failed: {type(e).__name__}: {e}") from e
        pulled = f" pull_s={sum(self.pull_s.values()):.2f}" if self.pull_s else ""
        self.emit("deployed", detail=f"replicas={self.spec.replicas} lb={self.lb_url()} "
                                     f"took_s={self._clock.now() - t0:.2f}{pulled}")

    # the engine pulls the app image itself (Swarm) instead of the harness pulling it
    engine_pulls_app = False

    def _get_images(self) -> None:
        """Pull from the registry when one is set, else require the local images."""
        if not self.registry:
            require_images(self.client, self.spec.app.image, self.lb_image,
                           self.prometheus_image, self.prober_image)
            return
        from harness.deploy.registry_images import pull

        refs = [self.lb_image, self.prometheus_image, self.prober_image]
        if not self.engine_pulls_app:
            refs.insert(0, self.spec.app.image)
        for ref in dict.fromkeys(refs):
            self.pull_s[ref] = round(pull(self.client, ref), 3)

    def _deploy(self) -> None:
        raise NotImplementedError

    def app_dns_name(self) -> str:
        """The name HAProxy, Prometheus and the prober resolve to find the replicas."""
        return APP_ALIAS

    def _start_prober(self) -> None:
        assert self.workdir is not None
        start_prober(self.client, image=self.prober_image, name=self.name("prober"),
                     network=self.network_name, dns_name=self.app_dns_name(),
                     port=self.spec.app.port, path=self.spec.app.ready_path,
                     workdir=self.workdir, labels=self.labels("prober"))

    def scale(self, replicas: int) -> None:
        if replicas < 0:
            raise DeployError(f"replicas must be ≥ 0, not {replicas}")
        self._require_running()
        t0 = self._clock.now()
        with self._lock:
            before = self._desired
            self._scale(replicas)
            self._desired = replicas
            self._cache = None
        self.emit("scale_applied", detail=f"from={before} to={replicas} "
                                          f"command_s={self._clock.now() - t0:.2f}")

    def _scale(self, replicas: int) -> None:
        raise NotImplementedError

    def desired(self) -> int:
        return self._desired

    def replicas(self) -> list[Replica]:
        return self._snapshot()[0]

    def crash(self, replica_id: str) -> None:
        docker_faults.crash(self._container_of(replica_id))
        self._cache = None

    def kill(self, replica_id: str) -> None:
        docker_faults.kill(self._container_of(replica_id))
        self._cache = None

    def pause(self, replica_id: str) -> None:
        docker_faults.pause(self._container_of(replica_id))
        self._cache = None

    def unpause(self, replica_id: str) -> None:
        with contextlib.suppress(KeyError):
            docker_faults.unpause(self._container_of(replica_id))
        self._cache = None

    def lb_url(self) -> str:
        return f"http://127.0.0.1:{self._lb_port}"

    def prometheus_url(self) -> str | None:
        return f"http://127.0.0.1:{self._prom_port}" if self._prom_port else None

    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self._stats_port}/stats"

    def haproxy_exporter_url(self) -> str:
        return f"http://127.0.0.1:{self._stats_port}/metrics"

    def teardown(self) -> None:
        """Unpause, remove app replicas, LB, Prometheus, network, then sweep the trial's
        labels and remove the working directory. Idempotent; never raises for leftovers
        it cannot remove — a later `harness clean` finds them by label."""
        with self._teardown_lock:
            if self._torn_down:
                return
            self._torn_down = True
            self._cache = None
            errors: list[str] = []
            # the prober first: on compose it holds an endpoint in compose's own network
            for step in (self._snapshot_metrics, self._unpause_all, self._remove_prober,
                         self._teardown_app, self._remove_aux, self._remove_network,
                         self._sweep_trial, self._after_teardown, self._finalize_metrics):
                try:
                    step()
                except Exception as e:
                    errors.append(f"{step.__name__}: {type(e).__name__}: {e}")
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
            self.emit("torn_down", detail="; ".join(errors))

    def __enter__(self) -> DockerDeployerBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    # ── extras: metrics targets, LB view ─────────────────────────────────────────
    def instance_of(self, replica: str | Replica) -> str:
        """Prometheus' `instance` label of a replica ("ip:port"; KeyError if gone)."""
        if not isinstance(replica, str) and replica.address:
            return replica.address  # a snapshot from replicas() already knows it
        rid = replica if isinstance(replica, str) else replica.id
        for r in self.replicas():
            if r.id == rid and r.address:
                return r.address
        raise KeyError(rid)

    def metrics_targets(self) -> dict[str, str]:
        """replica id → `instance` label, for every replica with an address."""
        return {r.id: r.address for r in self.replicas()
                if r.address and r.state != ReplicaState.EXITED}

    def lb_servers(self) -> list[haproxy.ServerStat]:
        """HAProxy's view of its app servers (runtime API `show stat`); [] if it is gone."""
        return [] if self._torn_down else haproxy.servers_of(self._api)

    def container_ids(self) -> list[str]:
        """Full ids of the replicas' containers (their cgroups hold their CPU time)."""
        reps, by_id = self._snapshot()
        return [str(by_id[r.id].id) for r in reps
                if r.id in by_id and r.state != ReplicaState.EXITED]

    def lb_ready_replicas(self) -> set[str]:
        """Ids of the replicas HAProxy is routing to right now."""
        routable = {s.addr for s in self.lb_servers() if s.routable and s.addr}
        return {r.id for r in self.replicas() if r.address in routable}

    # ── internals shared by the subclasses ────────────────────────────────────────
    def _require_running(self) -> None:
        if not self._deployed or self._torn_down:
            raise DeployError(f"the {self.kind} deployer is not running (deploy first)")

    def _app_containers(self) -> list[Any]:
        """Every app container of this trial (running or not)."""
        return list_containers(
            self.client, label_filters(self.spec.run_id, self.spec.trial_id, "app"))

    def _replica_id(self, attrs: dict[str, Any]) -> str:
        return str(attrs["Id"])[:12]  # = the container's default hostname = X-Replica

    def _to_replica(self, c: Any) -> Replica:
        attrs = c.attrs
        state = attrs.get("State") or {}
        started = parse_docker_time(state.get("StartedAt"))
        ip = container_ip(attrs, self.network_name)
        address = f"{ip}:{self.spec.app.port}" if ip else None
        key = (str(attrs["Id"]), started)
        ready_at = self._ready_cache.get(key)
        if ready_at is None and address and state.get("Status") in ("running", "paused"):
            ready_at = first_ready_at(self._probes_of(address), started)
            if ready_at is not None:  # once per life: readiness, not liveness
                self._ready_cache[key] = ready_at
                if started is not None:
                    self.start_to_ready_s.append(round(ready_at - started, 3))
        rs = replica_state(state, ready_at is not None)
        exit_code = state.get("ExitCode") if rs == ReplicaState.EXITED else None
        return Replica(id=self._replica_id(attrs), name=str(attrs.get("Name", "")).lstrip("/"),
                       state=rs, restarts=int(attrs.get("RestartCount") or 0),
                       started_at=started, ready_at=ready_at,
                       exit_code=None if exit_code is None else int(exit_code),
                       address=address)

    def _probes_of(self, address: str) -> Sequence[Probe]:
        status = self._status.read() if self._status is not None else None
        return status.probes.get(address, ()) if status is not None else ()

    def _snapshot(self) -> tuple[list[Replica], dict[str, Any]]:
        """(replicas, replica id → container), cached for `replicas_cache_s`."""
        if not self._deployed or self._torn_down:
            return [], {}
        with self._snap_lock:  # one inspect round at a time serves every caller
            return self._snapshot_locked()

    def _snapshot_locked(self) -> tuple[list[Replica], dict[str, Any]]:
        now = self._clock.now()
        cache = self._cache
        if cache is not None and now - cache[0] < self.replicas_cache_s:
            return cache[1], cache[2]
        import docker.errors

        reps: list[Replica] = []
        by_id: dict[str, Any] = {}
        try:
            containers = self._app_containers()
        except docker.errors.NotFound:  # a container vanished between list and inspect
            containers = []
        for c in containers:
            r = self._to_replica(c)
            reps.append(r)
            by_id[r.id] = c
        reps, by_id = self._select(reps, by_id)
        reps.sort(key=lambda r: (r.started_at or 0.0, r.id))
        self._cache = (now, reps, by_id)
        return reps, by_id

    def _select(self, reps: list[Replica], by_id: dict[str, Any]
                ) -> tuple[list[Replica], dict[str, Any]]:
        """Which containers are replicas (Swarm hides replaced tasks); all by default."""
        return reps, by_id

    def _container_of(self, replica_id: str) -> Any:
        self._require_running()
        self._cache = None
        by_id = self._snapshot()[1]
        if replica_id not in by_id:
            raise KeyError(replica_id)
        return by_id[replica_id]

    def _render_lb(self, servers: haproxy.StaticServers | haproxy.DnsServers) -> None:
        assert self.workdir is not None
        write_text(self.workdir / "haproxy" / "haproxy.cfg",
                   haproxy.render_config(servers, self.haproxy_settings))
        self._api = haproxy.RuntimeAPI(self.workdir / "haproxy-run" / haproxy.SOCKET_NAME)

    def _render_prometheus(self, app_dns_name: str, lb_target: str) -> None:
        assert self.workdir is not None
        write_text(self.workdir / "prometheus" / "prometheus.yml",
                   prometheus.render_config(app_dns_name=app_dns_name,
                                            app_port=self.spec.app.port,
                                            lb_target=lb_target,
                                            metrics_path=self.spec.app.metrics_path,
                                            scrape_interval_s=self.scrape_interval_s))

    def _lb_mounts(self) -> dict[str, dict[str, str]]:
        assert self.workdir is not None
        return {str(self.workdir / "haproxy"): {"bind": haproxy.CONFIG_DIR, "mode": "ro"},
                str(self.workdir / "haproxy-run"): {"bind": haproxy.RUN_DIR, "mode": "rw"}}

    def _prometheus_mounts(self) -> dict[str, dict[str, str]]:
        assert self.workdir is not None
        return {str(self.workdir / "prometheus"): {"bind": prometheus.CONFIG_DIR,
                                                   "mode": "ro"},
                str(self._prometheus_data()): {"bind": prometheus.DATA_DIR, "mode": "rw"}}

    def _start_aux(self, network: str, app_dns_name: str) -> None:
        """LB and Prometheus as plain containers (manual, orchestrated)."""
        self._render_prometheus(app_dns_name, f"{LB_ALIAS}:{haproxy.STATS_PORT}")
        for role, image, alias, ports, volumes, command, user in (
                ("lb", self.lb_image, LB_ALIAS, (haproxy.LB_PORT, haproxy.STATS_PORT),
                 self._lb_mounts(), None, None),
                ("prometheus", self.prometheus_image, PROMETHEUS_ALIAS, (prometheus.PORT,),
                 self._prometheus_mounts(), prometheus.command(self._prometheus_retention()),
                 harness_user())):
            c = self.client.api.create_container(
                image, name=self.name(role), labels=self.labels(role), detach=True,
                command=command, ports=list(ports), user=user,
                host_config=self.client.api.create_host_config(
                    port_bindings={p: ("127.0.0.1", None) for p in ports},
                    binds=volumes,
                    restart_policy={"Name": "no"}),
                networking_config=self.client.api.create_networking_config(
                    {network: self.client.api.create_endpoint_config(aliases=[alias])}))
            self.client.api.start(c["Id"])
        self._read_aux_ports()

    def _aux_container(self, role: str) -> Any:
        found = list_containers(
            self.client, label_filters(self.spec.run_id, self.spec.trial_id, role))
        if not found:
            raise DeployError(f"the {role} container of {self.spec.trial_id} is missing")
        return found[0]

    def _read_aux_ports(self) -> None:
        lb = self._aux_container("lb").attrs
        prom = self._aux_container("prometheus").attrs
        lb_port = published_port(lb, haproxy.LB_PORT)
        stats_port = published_port(lb, haproxy.STATS_PORT)
        prom_port = published_port(prom, prometheus.PORT)
        if not (lb_port and stats_port and prom_port):
            raise DeployError("the LB / Prometheus containers published no port on "
                              "127.0.0.1 (did they start?)")
        self._lb_port, self._stats_port, self._prom_port = lb_port, stats_port, prom_port

    def _wait_frontends(self, deadline: float) -> None:
        """Return when the LB answers HTTP, its admin socket answers, and Prometheus is
        ready; fail fast when one of their containers exited (a config error)."""
        pending = {"lb", "admin", "prometheus"}
        while pending:
            if "lb" in pending and http_answers(self.lb_url() + "/", timeout_s=1.0):
                pending.discard("lb")
            if "admin" in pending and self._api is not None and self._api.answers():
                pending.discard("admin")
            url = self.prometheus_url()
            if "prometheus" in pending and url and prometheus.is_ready(url, timeout_s=1.0):
                pending.discard("prometheus")
            if not pending:
                return
            for role in ("lb", "prometheus"):
                c = self._aux_container(role)
                if c.status in ("exited", "dead"):
                    logs = c.logs(tail=15).decode(errors="replace").strip()
                    raise DeployError(f"the {role} container exited at start: {logs}")
            if self._clock.now() > deadline:
                raise DeployError(f"{', '.join(sorted(pending))} did not answer within "
                                  f"{self.deploy_timeout_s:.0f} s")
            self._clock.sleep(0.2)

    def wait_ready(self, n: int, timeout_s: float = 60.0) -> list[Replica]:
        """Block until n replicas are READY (tests, tools); DeployError on timeout."""
        deadline = self._clock.now() + timeout_s
        while True:
            self._cache = None
            reps = self.replicas()
            ready = [r for r in reps if r.state == ReplicaState.READY]
            if len(ready) >= n:
                return ready
            if self._clock.now() > deadline:
                raise DeployError(f"{len(ready)} of {n} replicas ready after {timeout_s} s; "
                                  + " ".join(self.explain_unready()))
            self._clock.sleep(0.2)

    # ── ReadinessDiagnostics ──────────────────────────────────────────────────────
    def explain_unready(self, log_lines: int = 5) -> list[str]:
        """Why replicas are not ready: per unready replica its container state, exit
        code, OOM flag, the prober's last outcomes and its last log lines; and whether
        the prober itself is alive. Best effort: a failing inspect is said, not raised."""
        out: list[str] = []
        self._cache = None
        try:
            reps, by_id = self._snapshot()
        except Exception as e:
            return [f"replicas could not be listed ({type(e).__name__}: {e})"]
        status = self._status.read() if self._status is not None else None
        for r in reps:
            if r.state == ReplicaState.READY:
                continue
            c = by_id.get(r.id)
            st = ((c.attrs.get("State") if c is not None else None) or {})
            probes = self._probes_of(r.address) if r.address else ()
            out.append(describe_replica(r, st, probes, container_logs(c, log_lines)))
        if not reps:
            out.append("no replica container exists")
        if status is not None and status.resolve_error and not status.probes:
            out.append(f"the prober cannot resolve {status.resolve_error}")
        out.extend(self._prober_problem(log_lines))
        return out

    def _prober_problem(self, log_lines: int) -> list[str]:
        try:
            found = self._trial_containers("prober")
        except Exception as e:
            return [f"the prober could not be inspected ({type(e).__name__})"]
        if not found:
            return ["the readiness prober container is missing"]
        c = found[0]
        st = c.attrs.get("State") or {}
        if st.get("Status") == "running":
            return []
        return [f"the readiness prober died (state={st.get('Status')} "
                f"exit_code={st.get('ExitCode')}): {container_logs(c, log_lines)}"]

    # ── tear-down steps ────────────────────────────────────────────────────────────
    def _snapshot_metrics(self) -> None:
        """A kept trial: the head and WAL as blocks before Prometheus goes (kept_tsdb.py)."""
        self._metrics_snapshot: str | None = None
        url = self.prometheus_url()
        if self.keep_metrics_dir is not None and url:
            from harness.deploy.kept_tsdb import snapshot

            self._metrics_snapshot = snapshot(url)

    def _finalize_metrics(self) -> None:
        if self.keep_metrics_dir is not None:
            from harness.deploy.kept_tsdb import finalize

            finalize(self.keep_metrics_dir, getattr(self, "_metrics_snapshot", None))

    def _prometheus_data(self) -> Path:
        """The host folder Prometheus writes its TSDB into (it runs as our uid)."""
        assert self.workdir is not None
        if self.keep_metrics_dir is not None:
            self.keep_metrics_dir.mkdir(parents=True, exist_ok=True)
            return self.keep_metrics_dir.resolve()
        data = self.workdir / "prometheus-data"
        data.mkdir(exist_ok=True)
        return data

    def _prometheus_retention(self) -> str:
        return prometheus.KEPT_RETENTION if self.keep_metrics_dir is not None else "1h"

    def _trial_containers(self, role: str | None = None) -> list[Any]:
        return list_containers(
            self.client, label_filters(self.spec.run_id, self.spec.trial_id, role))

    def _unpause_all(self) -> None:
        # every fault is reverted at tear-down: no frozen container outlives a trial
        for c in self._trial_containers():
            if c.status == "paused":
                with contextlib.suppress(Exception):
                    c.unpause()

    def _teardown_app(self) -> None:
        raise NotImplementedError

    def _remove_prober(self) -> None:
        remove_containers(self._trial_containers("prober"))

    def _remove_aux(self) -> None:
        remove_containers(self._trial_containers())

    def _remove_network(self) -> None:
        if self.network_name:
            remove_networks(self.client, [self.network_name])

    def _sweep_trial(self) -> None:
        from harness.deploy.cleanup import sweep

        sweep(self.client, self.spec.run_id, trial_id=self.spec.trial_id,
              leave_swarm=False)

    def _after_teardown(self) -> None:
        """Subclass hook (the orchestrated deployer leaves the swarm it created)."""


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
