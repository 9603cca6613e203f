"""Every deployer, registered under (platform, kind) — one registry (docs/architecture.md,
"Layers and where to add things").

A `Registration` is a factory with one signature for every platform —
`(client, spec, on_event, clock, options) -> Deployer` — and the option names it takes,
declared next to it. The run loop hands every platform the same options (e.g.
`restart_delay_s`, `registry`); `create` passes each deployer exactly the declared ones, so
nothing is guessed from signatures. How to add a deployer: implement
`harness.deploy.base.Deployer` (and `FaultTarget` if it can kill/pause), write a factory,
declare its options and add one entry to `DEPLOYERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.deploy.base import Deployer, DeploySpec, EventSink
from harness.errors import UsageError

Factory = Callable[[Any, DeploySpec, EventSink, Any, Mapping[str, Any]], Deployer]


@dataclass(frozen=True)
class Registration:
    factory: Factory
    options: frozenset[str]  # the keyword options the deployer takes


def _docker_manual(client: Any, spec: DeploySpec, on_event: EventSink, clock: Any,
                   options: Mapping[str, Any]) -> Deployer:
    from harness.platforms.docker.manual import ManualDeployer

    return ManualDeployer(client, spec, on_event, clock, **options)


def _docker_compose(client: Any, spec: DeploySpec, on_event: EventSink, clock: Any,
                    options: Mapping[str, Any]) -> Deployer:
    from harness.platforms.docker.compose import ComposeDeployer

    return ComposeDeployer(client, spec, on_event, clock, **options)


def _docker_orchestrated(client: Any, spec: DeploySpec, on_event: EventSink, clock: Any,
                         options: Mapping[str, Any]) -> Deployer:
    from harness.platforms.docker.swarm import SwarmDeployer

    return SwarmDeployer(client, spec, on_event, clock, **options)


def _local(kind: str) -> Factory:
    def make(client: Any, spec: DeploySpec, on_event: EventSink, clock: Any,
             options: Mapping[str, Any]) -> Deployer:
        from harness.platforms.local.local import LocalDeployer

        return LocalDeployer(spec, kind, on_event, clock, **options)

    make.__name__ = f"local_{kind}"
    return make


def _kubernetes(kind: str) -> Factory:
    def make(client: Any, spec: DeploySpec, on_event: EventSink, clock: Any,
             options: Mapping[str, Any]) -> Deployer:
        from harness.platforms.kubernetes.kinds import KINDS

        return KINDS[kind](client, spec, on_event, clock, **options)

    make.__name__ = f"kubernetes_{kind}"
    return make


# harness/platforms/kubernetes/deployer.py, KubeDeployer.__init__
_KUBERNETES_OPTIONS = frozenset({
    "node_address", "image_pull_policy", "deploy_timeout_s", "prometheus_bin",
    "use_prometheus", "scrape_interval_s", "namespace_timeout_s", "node_runtime", "workdir"})
# harness/platforms/local/local.py, LocalDeployer.__init__
_LOCAL_OPTIONS = frozenset({
    "restart_delay_s", "haproxy_bin", "prometheus_bin", "workdir", "use_prometheus",
    "max_replicas", "deploy_timeout_s", "balance", "server_timeout_s", "keep_workdir",
    "emit_replica_events", "scrape_interval_s", "lb_scrape_interval_s"})
# harness/platforms/docker/docker_common.py, DockerDeployerBase.__init__
_DOCKER_COMMON = frozenset({
    "lb_image", "prometheus_image", "deploy_timeout_s", "workdir_root", "haproxy_settings",
    "scrape_interval_s", "lb_scrape_interval_s", "prober_image", "registry",
    "keep_metrics_dir"})

DEPLOYERS: dict[tuple[str, str], Registration] = {
    ("docker", "manual"): Registration(_docker_manual, _DOCKER_COMMON | {"spare_slots"}),
    ("docker", "compose"): Registration(_docker_compose,
                                        _DOCKER_COMMON | {"compose_file", "command"}),
    ("docker", "orchestrated"): Registration(_docker_orchestrated,
                                             _DOCKER_COMMON | {"restart_delay_s",
                                                               "leave_swarm"}),
    **{("local", k): Registration(_local(k), _LOCAL_OPTIONS)
       for k in ("manual", "compose", "orchestrated")},
    **{("kubernetes", k): Registration(_kubernetes(k), _KUBERNETES_OPTIONS)
       for k in ("manual", "compose")},
    # kinds.py KubeScaledDeployer: the autoscaler block, for policy kubernetes-hpa
    ("kubernetes", "orchestrated"): Registration(_kubernetes("orchestrated"),
                                                 _KUBERNETES_OPTIONS | {"autoscaler"}),
    # the sim's deployer is made by its runtime (harness/platforms/sim/runtime.py): it needs
    # the simulated world, which only exists inside a sim trial
}


def register(platform: str, kind: str, registration: Registration) -> None:
    DEPLOYERS[(platform, kind)] = registration


def create(platform: str, kind: str, *, spec: DeploySpec, on_event: EventSink, clock: Any,
           client: Any = None, **options: Any) -> Deployer:
    """A deployer for (platform, kind) with the options it declares; others are dropped."""
    reg = DEPLOYERS.get((platform, kind))
    if reg is None:
        known = ", ".join(f"{p}/{k}" for p, k in sorted(DEPLOYERS))
        raise UsageError(f"no deployer for kind {kind!r} on platform {platform!r} "
                         f"(known: {known})")
    taken = {k: v for k, v in options.items() if k in reg.options}
    return reg.factory(client, spec, on_event, clock, taken)
