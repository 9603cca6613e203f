"""HAProxy, the load balancer of every platform: its config, its runtime API, its stats.

One HAProxy setup serves both real platforms; they differ only in where HAProxy runs and
how it learns of replicas:

- docker (manual, compose, swarm): HAProxy in a container, configured here by
  `render_config` with one of two ways to find replicas:
  - `StaticServers` (manual): the server list written at deploy time, one `server` line
    per replica address, plus disabled spare slots an operator fills over the runtime API
    when scaling by hand (`set server app/app-K addr IP port P` + `state ready`) — the
    "edit the LB when you `docker run` one more" step of a manual deployment, without a
    reload.
  - `DnsServers` (compose, orchestrated): `server-template` slots resolved through
    Docker's embedded DNS (127.0.0.11). Tuned for fast following (docs/architecture.md): `hold
    valid 1s` (default 10 s) and `accepted_payload_size 8192` (Docker
    answers for many replicas exceed the 512-byte default and would otherwise be
    truncated).
- local: HAProxy as a host process with pre-declared slots on 127.0.0.1 that the deployer
  switches over the runtime API (`local_haproxy.py` renders that config and says why not
  reloads); it builds on the sections and the `RuntimeAPI` here.

Shared by both (`global_section`, `defaults_section`, `backend_section`): health checks
on the readiness path (`inter 1s fall 2 rise 1`; the defaults — `inter 2s fall 3` — take
~6 s to take a dead server out) decide what HAProxy routes to. Balancing is `leastconn`:
the sample app is a queueing server, so join-the-shortest-queue is what a real deployment
in front of it uses, and it keeps a slow or frozen replica from receiving its round-robin
share. A request that meets a dead replica is re-sent elsewhere (`retry-on conn-failure
empty-response`, `retries 2`, `option redispatch`), as in front of any production pool.

On docker the admin socket lives in a bind-mounted host directory, so the harness talks
to it without any network traffic to the container; the stats page and HAProxy's
Prometheus exporter are published on 127.0.0.1 only.
"""

from __future__ import annotations

import csv
import io
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from harness.bounds import REAL_PLATFORM_MAX_REPLICAS

BACKEND = "app"
SERVER_PREFIX = "app-"  # docker slots app-N; the local platform's are rN (local_haproxy)
LB_PORT = 8080  # inside the container
STATS_PORT = 8404  # stats page (/stats) and Prometheus exporter (/metrics), inside
CONFIG_DIR = "/usr/local/etc/haproxy"  # the image reads haproxy.cfg from here
RUN_DIR = "/run/haproxy-admin"  # bind mount of a host dir: the admin socket
SOCKET_NAME = "admin.sock"
DOCKER_DNS = "127.0.0.11:53"


@dataclass(frozen=True)
class StaticServers:
    addresses: Sequence[str]  # "ip:port", written as app-1..app-N
    spare_slots: int = 20  # disabled slots for hand-scaling over the runtime API


@dataclass(frozen=True)
class DnsServers:
    name: str  # "app" (compose service / network alias) or "tasks.<service>" (swarm)
    port: int
    slots: int = REAL_PLATFORM_MAX_REPLICAS


@dataclass(frozen=True)
class HAProxySettings:
    ready_path: str = "/readyz"
    balance: str = "leastconn"
    check_inter_s: float = 1.0
    fall: int = 2
    rise: int = 1
    # fastinter: re-check a failing server at half the interval
    fastinter: bool = True
    # observe layer4: this many connection errors of real traffic take the server out at
    # once (its request is re-sent elsewhere); None leaves it to the health checks alone
    observe_error_limit: int | None = 2
    connect_timeout_s: float = 1.0
    server_timeout_s: float = 5.0
    client_timeout_s: float = 30.0
    check_timeout_s: float = 1.0
    maxconn: int = 4096
    dns_hold_valid_s: float = 1.0
    dns_payload_bytes: int = 8192


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def server_name(slot: int, prefix: str = SERVER_PREFIX) -> str:
    return f"{prefix}{slot}"


# ── config sections both platforms share ──────────────────────────────────────────


def global_section(s: HAProxySettings, stats_socket: str) -> str:
    """`global`; `stats_socket`: the rest of the `stats socket` line (path, mode, level)."""
    return f"""\
global
    maxconn {s.maxconn}
    stats socket {stats_socket}
    stats timeout 10s
"""


def defaults_section(s: HAProxySettings) -> str:
    return f"""\
defaults
    mode http
    option dontlognull
    timeout connect {_ms(s.connect_timeout_s)}
    timeout client {_ms(s.client_timeout_s)}
    timeout server {_ms(s.server_timeout_s)}
    timeout check {_ms(s.check_timeout_s)}
    timeout http-request 10s
    # a request that met a dead replica goes to another one instead of failing
    retries 2
    retry-on conn-failure empty-response
    option redispatch
"""


def check_options(s: HAProxySettings) -> str:
    """The `default-server` health-check options of the app backend."""
    out = f"check inter {_ms(s.check_inter_s)}"
    if s.fastinter:
        out += f" fastinter {_ms(s.check_inter_s / 2)}"
    out += f" fall {s.fall} rise {s.rise}"
    if s.observe_error_limit is not None:
        out += f" observe layer4 error-limit {s.observe_error_limit} on-error mark-down"
    return out


def backend_section(s: HAProxySettings, server_lines: str) -> str:
    """The app backend; `server_lines`: its `server`/`server-template` lines."""
    return f"""\
backend {BACKEND}
    balance {s.balance}
    option httpchk GET {s.ready_path}
    default-server {check_options(s)}
{server_lines}"""


# ── the docker platform's config ───────────────────────────────────────────────────


def _resolvers_section(s: HAProxySettings) -> str:
    hold = _ms(s.dns_hold_valid_s)
    return f"""
# Docker's embedded DNS: every replica's A record, re-asked every second
resolvers docker
    nameserver dns {DOCKER_DNS}
    accepted_payload_size {s.dns_payload_bytes}
    resolve_retries 3
    timeout resolve 1s
    timeout retry 1s
    hold valid {hold}
    hold other {hold}
    hold refused {hold}
    hold nx {hold}
    hold timeout {hold}
    hold obsolete {hold}
"""


def _docker_server_lines(servers: StaticServers | DnsServers) -> str:
    if isinstance(servers, DnsServers):
        return (f"    server-template {SERVER_PREFIX} 1-{servers.slots} "
                f"{servers.name}:{servers.port} resolvers docker init-addr none "
                "resolve-prefer ipv4\n")
    lines = [f"    server {server_name(i)} {addr}\n"
             for i, addr in enumerate(servers.addresses, start=1)]
    n = len(servers.addresses)
    if servers.spare_slots > 0:
        lines.append("    # spare slots an operator fills over the runtime API\n")
        lines.append(f"    server-template {SERVER_PREFIX} {n + 1}-{n + servers.spare_slots}"
                     " 127.0.0.1:1 disabled\n")
    return "".join(lines)


def render_config(servers: StaticServers | DnsServers, s: HAProxySettings | None = None,
                  socket_owner: tuple[int, int] | None = None) -> str:
    """haproxy.cfg text of the docker platform (tests run `haproxy -c` on it).
    `socket_owner`: (uid, gid) that owns the admin socket (default: ours); mode 600, so
    only the harness's user can drive HAProxy through it."""
    s = s or HAProxySettings()
    uid, gid = socket_owner if socket_owner is not None else (os.getuid(), os.getgid())
    resolvers = _resolvers_section(s) if isinstance(servers, DnsServers) else ""
    return f"""\
# written by harness (docker platform)
{global_section(s, f"{RUN_DIR}/{SOCKET_NAME} mode 600 uid {uid} gid {gid} level admin")}
{defaults_section(s)}{resolvers}
frontend lb
    bind :{LB_PORT}
    default_backend {BACKEND}

frontend stats
    bind :{STATS_PORT}
    stats enable
    stats uri /stats
    stats refresh 2s
    http-request use-service prometheus-exporter if {{ path /metrics }}

{backend_section(s, _docker_server_lines(servers))}"""


# ── stats ──────────────────────────────────────────────────────────────────────────


class RuntimeAPIError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServerStat:
    """One server slot of the app backend as HAProxy sees it (`show stat`)."""

    name: str  # app-N (docker) or rN (local)
    addr: str | None  # "ip:port"; None while unresolved; "127.0.0.1:1" while never used
    status: str  # UP, DOWN, MAINT, "UP 1/2", "MAINT (resolution)", "no check", …
    sessions_total: int  # stot: requests (sessions) HAProxy sent to this slot so far

    @property
    def routable(self) -> bool:
        """HAProxy sends traffic to it now (UP, also while a failing check counts down)."""
        st = self.status.upper()
        return st.startswith("UP") or st == "NO CHECK"


def parse_stats(text: str) -> list[ServerStat]:
    """The app backend's server rows of `show stat` CSV (pure; the header names the
    columns)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("# "):
        return []
    header = lines[0][2:].split(",")
    out: list[ServerStat] = []
    for row in csv.DictReader(io.StringIO("\n".join(lines[1:])), fieldnames=header):
        name = row.get("svname") or ""
        if row.get("pxname") != BACKEND or name in ("FRONTEND", "BACKEND", ""):
            continue
        addr = (row.get("addr") or "").strip() or None
        try:
            stot = int(row.get("stot") or 0)
        except ValueError:
            stot = 0
        out.append(ServerStat(name=name, addr=addr,
                              status=(row.get("status") or "").strip(), sessions_total=stot))
    return out


# HAProxy's SRV_ADMF_MAINT bits (forced, inherited, resolution); 0x04 (SRV_ADMF_CMAINT)
# only remembers the config's `disabled`
ADMIN_MAINT_MASK = 0x23
OP_RUNNING = 2  # SRV_ST_RUNNING


class SlotState(NamedTuple):
    """One slot of `show servers state`."""

    port: int
    op_state: int  # 0 stopped, 1 starting, 2 running, 3 stopping
    admin_state: int  # bit field, see ADMIN_MAINT_MASK

    @property
    def in_rotation(self) -> bool:
        return self.op_state == OP_RUNNING and not self.admin_state & ADMIN_MAINT_MASK


def parse_servers_state(text: str, prefix: str = SERVER_PREFIX) -> dict[int, SlotState]:
    """slot → state from `show servers state <backend>` (pure; columns by position: 3
    srv_name, 5 srv_op_state, 6 srv_admin_state, 18 srv_port)."""
    result: dict[int, SlotState] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 19 or parts[0].startswith("#") or not parts[3].startswith(prefix):
            continue
        try:
            slot = int(parts[3][len(prefix):])
            result[slot] = SlotState(int(parts[18]), int(parts[5]), int(parts[6]))
        except ValueError:
            continue
    return result


def up_ports(states: dict[int, SlotState]) -> set[int]:
    """Ports of the servers HAProxy is sending traffic to right now."""
    return {st.port for st in states.values() if st.in_rotation}


# ── the runtime API ────────────────────────────────────────────────────────────────


class RuntimeAPI:
    """One command per connection on the admin socket (non-interactive mode).

    `prefix` names the backend's slots (`app-` on docker, `r` on the local platform).
    """

    def __init__(self, socket_path: Path, timeout_s: float = 2.0,
                 prefix: str = SERVER_PREFIX) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self.prefix = prefix

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout_s)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks: list[bytes] = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    def answers(self) -> bool:
        try:
            return "Name: HAProxy" in self.command("show info")
        except OSError:
            return False

    def wait_answers(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.socket_path.exists() and self.answers():
                return True
            time.sleep(0.05)
        return False

    def servers(self) -> list[ServerStat]:
        """`show stat` of the app backend's servers (type 4 = servers only)."""
        return parse_stats(self.command("show stat -1 4 -1"))

    def servers_state(self) -> dict[int, SlotState]:
        """slot → (port, operational state, admin state) from `show servers state`."""
        return parse_servers_state(self.command(f"show servers state {BACKEND}"),
                                   self.prefix)

    def set_server(self, slot: int, addr: str | None, enabled: bool,
                   force_up: bool = False) -> None:
        """Point a slot at ip:port (`addr` None: leave it) and put it in rotation, or take
        it out (maint).

        `force_up` skips waiting for the first health check of a server the caller has
        just seen ready itself (`set server ... health up`); checks keep running after.
        """
        srv = f"{BACKEND}/{server_name(slot, self.prefix)}"
        if addr is not None:
            ip, port = addr.rsplit(":", 1)
            out = self.command(f"set server {srv} addr {ip} port {port}")
            if "changed" not in out and "no need" not in out:
                raise RuntimeAPIError(f"set server {srv} addr: {out.strip()}")
        out = self.command(f"set server {srv} state {'ready' if enabled else 'maint'}")
        if out.strip():
            raise RuntimeAPIError(f"set server {srv} state: {out.strip()}")
        if enabled and force_up:
            self.command(f"set server {srv} health up")


def servers_of(api: RuntimeAPI | None) -> list[ServerStat]:
    """HAProxy's view of its app servers; [] when there is none to ask (not started yet,
    or its socket is gone)."""
    if api is None:
        return []
    try:
        return api.servers()
    except OSError:
        return []
