"""The sample app's configuration: environment variables, read in one place (`from_env`).

Variable (default): meaning.

- `PORT` (8000): TCP port to listen on; 0 picks a free one (the bound port is logged).
- `HOST` (0.0.0.0): address to listen on.
- `WORKERS` (4): concurrent slots, i.e. requests served at the same time.
- `SERVICE_MS` (50): mean service time of `/work` in ms (virtual: an asyncio sleep).
- `SERVICE_DIST` (exponential): constant | exponential | lognormal (mean preserved).
- `SIGMA` (0.5): shape of lognormal (sigma of the underlying normal).
- `CPU_MS` (0): real CPU burned per `/work` in ms of thread CPU time, after the sleep.
  It blocks the event loop, so CPU burns of one replica never overlap (one core at most).
- `QUEUE_LIMIT` (50): requests allowed to wait for a slot; one more gets 503 at once.
- `STARTUP_S` (0): seconds after start before `/readyz` answers 200.
- `REPLICA_ID` (the hostname): returned in `/work`'s body and its `X-Replica` header.
- `SEED` (none): integer seed of the service-time RNG.
- `ALLOW_CRASH` (0): 1 enables `POST /admin/crash`, which exits with code 1 at once.
- `CRASH_AFTER_S` (none): the process exits with code 1 this many seconds after start.
- `SHUTDOWN_GRACE_S` (0.5): on SIGTERM/SIGINT, how long requests already holding a slot
  may finish before the process exits.
- `IDLE_TIMEOUT_S` (120): keep-alive connections idle this long are closed.

Capacity of one replica ≈ WORKERS / SERVICE_MS (requests per millisecond), whatever the
host's CPU, as long as CPU_MS is 0 (docs/architecture.md, "The sample app's capacity model").
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

DISTRIBUTIONS = ("constant", "exponential", "lognormal")

T = TypeVar("T", int, float)


class ConfigError(ValueError):
    """An environment variable has a value the app cannot use (exit code 2)."""


@dataclass(frozen=True)
class Config:
    port: int = 8000
    host: str = "0.0.0.0"
    workers: int = 4
    service_ms: float = 50.0
    service_dist: str = "exponential"
    sigma: float = 0.5
    cpu_ms: float = 0.0
    queue_limit: int = 50
    startup_s: float = 0.0
    replica_id: str = "replica"
    seed: int | None = None
    allow_crash: bool = False
    crash_after_s: float | None = None
    shutdown_grace_s: float = 0.5
    idle_timeout_s: float = 120.0

    @property
    def capacity_rps(self) -> float:
        """Nominal requests per second one replica serves (infinite with SERVICE_MS=0)."""
        return self.workers * 1000.0 / self.service_ms if self.service_ms > 0 else float("inf")


def _number(env: Mapping[str, str], name: str, default: T, cast: Callable[[str], T],
            lo: float, hi: float) -> T:
    value = _optional(env, name, cast, lo, hi)
    return default if value is None else value


def _optional(env: Mapping[str, str], name: str, cast: Callable[[str], T], lo: float,
              hi: float) -> T | None:
    raw = env.get(name, "").strip()
    if raw == "":
        return None
    try:
        value = cast(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a{'n integer' if cast is int else ' number'}"
                          ) from None
    if not lo <= value <= hi:  # also rejects NaN
        raise ConfigError(f"{name}={raw!r} is outside [{lo:g}, {hi:g}]")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={raw!r} is not a boolean (1/0, true/false)")


def from_env(env: Mapping[str, str], hostname: Callable[[], str] = socket.gethostname
             ) -> Config:
    """The configuration the environment describes; ConfigError names the first bad value."""
    dist = env.get("SERVICE_DIST", "").strip().lower() or "exponential"
    if dist not in DISTRIBUTIONS:
        raise ConfigError(f"SERVICE_DIST={dist!r} is not one of {', '.join(DISTRIBUTIONS)}")
    replica_id = env.get("REPLICA_ID", "").strip() or hostname()
    # it goes into a response header verbatim: no control characters, bounded length
    if not replica_id.isprintable() or len(replica_id) > 200:
        raise ConfigError(f"REPLICA_ID={replica_id!r} must be printable and ≤ 200 characters")
    return Config(
        port=_number(env, "PORT", 8000, int, 0, 65535),
        host=env.get("HOST", "").strip() or "0.0.0.0",
        workers=_number(env, "WORKERS", 4, int, 1, 100_000),
        service_ms=_number(env, "SERVICE_MS", 50.0, float, 0, 3_600_000),
        service_dist=dist,
        sigma=_number(env, "SIGMA", 0.5, float, 0, 5),
        cpu_ms=_number(env, "CPU_MS", 0.0, float, 0, 60_000),
        queue_limit=_number(env, "QUEUE_LIMIT", 50, int, 0, 1_000_000),
        startup_s=_number(env, "STARTUP_S", 0.0, float, 0, 86_400),
        replica_id=replica_id,
        seed=_optional(env, "SEED", int, -(2**63), 2**63 - 1),
        allow_crash=_flag(env, "ALLOW_CRASH"),
        crash_after_s=_optional(env, "CRASH_AFTER_S", float, 0, 86_400 * 365),
        shutdown_grace_s=_number(env, "SHUTDOWN_GRACE_S", 0.5, float, 0, 30),
        idle_timeout_s=_number(env, "IDLE_TIMEOUT_S", 120.0, float, 0.1, 86_400),
    )
