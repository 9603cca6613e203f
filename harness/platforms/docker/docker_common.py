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
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.clock import Clock
from harness.deploy import haproxy
from harness.deploy.base import (
    DeployEvent,
    DeploysOnce,
    DeploySpec,
    EventSink,
    Replica,
    ReplicaState,
)
from harness.errors import DeployError, PrerequisiteError
from harness.platforms.docker import docker_faults
from harness.platforms.docker.docker_aux import AuxServices
from harness.platforms.docker.docker_objects import (
    APP_ALIAS,
    LB_IMAGE,
    PROBER_IMAGE,
    PROMETHEUS_IMAGE,
    WORKDIR_ROOT,
    container_ip,
    default_image,
    label_filters,
    list_containers,
    make_workdir,
    parse_docker_time,
    remove_containers,
    remove_networks,
    replica_state,
    require_images,
    safe_name,
    trial_labels,
)
from harness.platforms.docker.readiness import (
    PROBER_DIR,
    STATUS_FILE,
    Probe,
    StatusReader,
    first_ready_at,
    start_prober,
    wake,
)


class DockerDeployerBase(AuxServices, DeploysOnce):
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
                 lb_scrape_interval_s: float | None = None,
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
            from harness.platforms.docker.registry_images import run_ref

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
        # HAProxy's exporter at its own pace (an autoscaler on lb_rps / lb_queue asks)
        self.lb_scrape_interval_s = lb_scrape_interval_s
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
        self._claim_deploy(self._lock)
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
        from harness.platforms.docker.registry_images import pull

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
        wake(self.workdir)  # the prober looks for new replicas at its fast pace
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
        from harness.platforms.docker.cleanup import sweep

        sweep(self.client, self.spec.run_id, trial_id=self.spec.trial_id,
              leave_swarm=False)

    def _after_teardown(self) -> None:
        """Subclass hook (the orchestrated deployer leaves the swarm it created)."""
