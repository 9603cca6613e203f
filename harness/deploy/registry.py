"""Every deployer, registered under (platform, kind) — one registry (docs/architecture.md,
"Conventions").

How to add a deployer: write a class that implements `harness.deploy.base.Deployer` (and
`FaultTarget` if it can kill/pause), give it a factory taking keyword arguments `spec`,
`on_event`, `clock` (plus whatever options it needs), and add one line to `DEPLOYERS`.
`create` passes each factory only the options it accepts, so the run loop can hand every
platform the same arguments (e.g. `client`, `restart_delay_s`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from harness.deploy.base import Deployer
from harness.errors import UsageError

Factory = Callable[..., Deployer]


def _docker_manual(*, client: Any, spec: Any, on_event: Any, clock: Any,
                   **options: Any) -> Deployer:
    from harness.deploy.manual import ManualDeployer

    return ManualDeployer(client, spec, on_event, clock, **options)


def _docker_compose(*, client: Any, spec: Any, on_event: Any, clock: Any,
                    **options: Any) -> Deployer:
    from harness.deploy.compose import ComposeDeployer

    return ComposeDeployer(client, spec, on_event, clock, **options)


def _docker_orchestrated(*, client: Any, spec: Any, on_event: Any, clock: Any,
                         restart_delay_s: float = 1.0, **options: Any) -> Deployer:
    from harness.deploy.swarm import SwarmDeployer

    return SwarmDeployer(client, spec, on_event, clock, restart_delay_s=restart_delay_s,
                         **options)


def _local(kind: str) -> Factory:
    def make(*, spec: Any, on_event: Any, clock: Any, **options: Any) -> Deployer:
        from harness.deploy.local import LocalDeployer

        return LocalDeployer(spec, kind, on_event, clock, **options)

    make.__name__ = f"local_{kind}"
    return make


# options the local deployer takes (harness/deploy/local.py, LocalDeployer.__init__)
_LOCAL_OPTIONS = (
    "restart_delay_s", "haproxy_bin", "prometheus_bin", "workdir", "use_prometheus",
    "max_replicas", "deploy_timeout_s", "balance", "server_timeout_s", "keep_workdir",
    "emit_replica_events")

# options each Docker deployer takes beyond the common ones (see docker_common)
_DOCKER_COMMON = ("lb_image", "prometheus_image", "deploy_timeout_s", "workdir_root",
                  "haproxy_settings", "scrape_interval_s", "prober_image",
                  "registry", "keep_metrics_dir")
OPTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("docker", "manual"): (*_DOCKER_COMMON, "spare_slots"),
    ("docker", "compose"): (*_DOCKER_COMMON, "compose_file", "command"),
    ("docker", "orchestrated"): (*_DOCKER_COMMON, "restart_delay_s", "leave_swarm"),
    **{("local", k): _LOCAL_OPTIONS for k in ("manual", "compose", "orchestrated")},
}

DEPLOYERS: dict[tuple[str, str], Factory] = {
    ("docker", "compose"): _docker_compose,
    ("docker", "manual"): _docker_manual,
    ("docker", "orchestrated"): _docker_orchestrated,
    **{("local", k): _local(k) for k in ("manual", "compose", "orchestrated")},
    # the sim's deployer is made by its runtime (harness/sim/runtime.py): it needs the
    # simulated world, which only exists inside a sim trial
}


def register(platform: str, kind: str, factory: Factory,
             options: tuple[str, ...] | None = None) -> None:
    DEPLOYERS[(platform, kind)] = factory
    if options is not None:
        OPTIONS[(platform, kind)] = options


def _accepted(key: tuple[str, str], factory: Factory, kwargs: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(factory).parameters
    base = {k: v for k, v in kwargs.items() if k in params}
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        allowed = OPTIONS.get(key)
        extra = {k: v for k, v in kwargs.items() if k not in base
                 and (allowed is None or k in allowed)}
        base.update(extra)
    return base


def create(platform: str, kind: str, **kwargs: Any) -> Deployer:
    """A deployer for (platform, kind); options it does not take are dropped."""
    factory = DEPLOYERS.get((platform, kind))
    if factory is None:
        known = ", ".join(f"{p}/{k}" for p, k in sorted(DEPLOYERS))
        raise UsageError(f"no deployer for kind {kind!r} on platform {platform!r} "
                         f"(known: {known})")
    return factory(**_accepted((platform, kind), factory, kwargs))
