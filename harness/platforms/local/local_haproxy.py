"""The local platform's HAProxy: a host process with pre-declared slots on 127.0.0.1.

Everything both platforms share — the global/defaults/backend sections, health checks,
retries, the runtime API and its `show stat` parser — is in `haproxy.py`; this module
holds only what differs on the host: where HAProxy listens, its admin socket, its slots
and its check options.

Why the runtime API and not reloads: the backend pre-declares a pool of server slots
(`server-template r 1-<max> 127.0.0.1:1 disabled`), and following a scale or a replaced
replica is `set server app/rN addr 127.0.0.1 port P` + `set server app/rN state
ready|maint` over the admin stats socket (`runtime_api`). Nothing restarts, so no
connection is dropped and no health state is forgotten; a reload (even a seamless one
with `expose-fd listeners`, which the socket also allows) would start a new process with
fresh checks.

A crashed replica costs few errors: retries and redispatch re-send a request that hit a
dead port to another server; health checks (`inter 1s fall 2 rise 1`) take the server
out within ~2 s. Unlike the docker config there is no `fastinter` and no `observe layer4`
(`LOCAL_SETTINGS`): only the checks mark a server down. A frozen (paused) replica still
accepts TCP, so its requests wait for `timeout server` — the realistic cost of a hung
replica — until the checks (`timeout check 1s`) mark it down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.deploy.haproxy import (
    BACKEND,
    HAProxySettings,
    RuntimeAPI,
    backend_section,
    defaults_section,
    global_section,
)

SERVER_PREFIX = "r"
HOST = "127.0.0.1"
# the local config as it has always been: health checks alone take a server out
LOCAL_SETTINGS = HAProxySettings(fastinter=False, observe_error_limit=None)


@dataclass(frozen=True)
class HAProxyConfig:
    lb_port: int
    exporter_port: int
    stats_socket: Path
    max_servers: int = 64
    settings: HAProxySettings = field(default_factory=lambda: LOCAL_SETTINGS)


def render_config(c: HAProxyConfig) -> str:
    """The haproxy.cfg text (pure; tests run `haproxy -c` on it)."""
    s = c.settings
    slots = ("    # slots filled at run time over the stats socket (see the module docstring)\n"
             f"    server-template {SERVER_PREFIX} 1-{c.max_servers} {HOST}:1 disabled\n")
    return f"""\
# written by harness (local platform); one process, foreground (-db)
{global_section(s, f"{c.stats_socket} mode 600 level admin expose-fd listeners")}
{defaults_section(s)}
frontend lb
    bind {HOST}:{c.lb_port}
    default_backend {BACKEND}

frontend exporter
    bind {HOST}:{c.exporter_port}
    http-request use-service prometheus-exporter if {{ path /metrics }}
    no log

{backend_section(s, slots)}"""


def runtime_api(stats_socket: Path) -> RuntimeAPI:
    """The runtime API on the local HAProxy's socket, naming slots rN."""
    return RuntimeAPI(stats_socket, prefix=SERVER_PREFIX)


def slot_addr(port: int) -> str:
    """What `RuntimeAPI.set_server` points a slot at: the replica's port on the host."""
    return f"{HOST}:{port}"
