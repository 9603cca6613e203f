"""The simulator's platform constants: how long Docker, HAProxy and Prometheus take.

Defaults are the figures measured on this project's machines (the figures in docs/architecture.md,
harness/deploy/haproxy.py, harness/deploy/local_policy.py); each range is drawn uniformly
per replica life with the trial's seed. Pass a ``SimParams`` to the engine to explore
other platforms (e.g. a slow image pull: ``container_start_s=(20, 40)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

Range = tuple[float, float]
RANGES = ("container_start_s", "lb_check_s", "dns_discovery_s", "prom_discovery_s",
          "scale_command_s", "restart_lag_s", "reschedule_lag_s")


@dataclass(frozen=True)
class SimParams:
    # time step of the simulation: arrivals, LB decisions, lifecycle changes and faults are
    # applied on this grid (latencies themselves are exact, not rounded to it)
    tick_s: float = 0.05
    lb_policy: str = "leastconn"  # harness/deploy/haproxy.py HAProxySettings.balance
    # LB + network + HTTP parsing per request, added to every latency (also to 503s)
    overhead_ms: float = 1.0
    # container created → app process up (Docker SDK: 0.2–0.4 s on this machine), before
    # the app's own STARTUP_S
    container_start_s: Range = (0.3, 0.5)
    # a replica the LB already knows (same address, e.g. a compose restart) answers its
    # readiness check again: HAProxy's fastinter (0.5 s) while it is down
    lb_check_s: Range = (0.0, 0.5)
    # a new address (scale-up, Swarm's replacement task): Docker DNS + HAProxy resolvers
    # with hold valid 1 s: 1–3 s after the container exists
    dns_discovery_s: Range = (1.0, 3.0)
    # Prometheus discovery (DNS / file SD, refresh 1 s) until the first scrape: 1–5 s
    prom_discovery_s: Range = (1.0, 5.0)
    scrape_interval_s: float = 1.0
    stale_after_s: float = 10.0  # harness.autoscale.metrics.fresh_only
    # `docker-compose up --scale` / `docker service update --replicas` until the new
    # containers start (the compose command took 1.9 s for 3 → 6 on this machine)
    scale_command_s: Range = (0.5, 1.5)
    # after a crash, beyond the restart policy's own delay (Docker's back-off, the
    # strategy's restart_delay_s): the engine noticing the exit and creating the container
    restart_lag_s: Range = (0.1, 0.5)
    reschedule_lag_s: Range = (0.2, 0.9)  # Swarm: a new task for the failed one
    # HAProxy retries a refused connection on another server (retry-on conn-failure,
    # option redispatch) and marks the dead one down at once (observe layer4): a crashed
    # replica costs only what was inside it. False: requests routed to a dead replica fail
    # (conn) until the health checks take it out after lb_down_after_s.
    lb_retries: bool = True
    lb_down_after_s: float = 2.0  # fall 2 × inter 1 s
    # requests still in a replica a scale-down removes finish (SHUTDOWN_GRACE_S 0.5 s)
    ring_extra: int = 16  # see QueueBank: margin for long service times
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes for run.json

    def __post_init__(self) -> None:
        tps = round(1.0 / self.tick_s) if self.tick_s > 0 else 0
        if not 0.001 <= self.tick_s <= 1.0 or abs(tps * self.tick_s - 1) > 1e-9:
            raise ValueError(f"tick_s={self.tick_s}: must divide one second (e.g. 0.01, 0.05, "
                             "0.1)")
        for name in RANGES:
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name}={lo, hi}: need 0 ≤ low ≤ high")

    @property
    def ticks_per_s(self) -> int:
        return round(1.0 / self.tick_s)

    def with_(self, **kw: Any) -> SimParams:
        return replace(self, **kw)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}
