"""HAProxy in a container for the Docker deployers: its config, its runtime API, its stats.

Two ways to find replicas, one config generator:

- `StaticServers` (manual): the server list written at deploy time, one `server` line per
  replica address, plus disabled spare slots an operator fills over the runtime API when
  scaling by hand (`set server app/app-K addr IP port P` + `state ready`) — the "edit the
  LB when you `docker run` one more" step of a manual deployment, without a reload.
- `DnsServers` (compose, orchestrated): `server-template` slots resolved through Docker's
  embedded DNS (127.0.0.11). Tuned for fast following (DESIGN.md's checked facts):
  `hold valid 1s` (default 10 s) and `accepted_payload_size 8192` (Docker answers for
  many replicas exceed the 512-byte default and would otherwise be truncated).

Health checks on the readiness path (`inter 1s fall 2 rise 1`, the defaults — `inter 2s
fall 3` — take ~6 s to take a dead server out) decide what HAProxy routes to. Balancing
is `leastconn` like the local platform's HAProxy: the sample app is a queueing server, so
join-the-shortest-queue is what a real deployment in front of it uses. A request that
meets a dead replica is re-sent elsewhere (`retry-on conn-failure empty-response`,
`option redispatch`), as in front of any production pool.

The admin socket lives in a bind-mounted host directory, so the harness talks to it
without any network traffic to the container; the stats page and HAProxy's Prometheus
exporter are published on 127.0.0.1 only.
"""

from __future__ import annotations

import csv
import io
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BACKEND = "app"
SERVER_PREFIX = "app-"
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
    slots: int = 50  # REAL_PLATFORM_MAX_REPLICAS


@dataclass(frozen=True)
class HAProxySettings:
    ready_path: str = "/readyz"
    balance: str = "leastconn"
    check_inter_s: float = 1.0
    fall: int = 2
    rise: int = 1
    connect_timeout_s: float = 1.0
    server_timeout_s: float = 5.0
    client_timeout_s: float = 30.0
    check_timeout_s: float = 1.0
    maxconn: int = 4096
    dns_hold_valid_s: float = 1.0
    dns_payload_bytes: int = 8192


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def server_name(slot: int) -> str:
    return f"{SERVER_PREFIX}{slot}"


def render_config(servers: StaticServers | DnsServers, s: HAProxySettings | None = None) -> str:
    """haproxy.cfg text (pure; tests run `haproxy -c` on it)."""
    s = s or HAProxySettings()
    # fastinter: re-check a failing server sooner; observe layer4: a connection error of
    # real traffic takes the server out at once (its request is re-sent elsewhere)
    check = (f"check inter {_ms(s.check_inter_s)} fastinter {_ms(s.check_inter_s / 2)} "
             f"fall {s.fall} rise {s.rise} observe layer4 error-limit 2 on-error mark-down")
    resolvers = ""
    if isinstance(servers, DnsServers):
        hold = _ms(s.dns_hold_valid_s)
        resolvers = f"""
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
        backend_servers = (
            f"    server-template {SERVER_PREFIX} 1-{servers.slots} "
            f"{servers.name}:{servers.port} resolvers docker init-addr none "
            "resolve-prefer ipv4\n")
    else:
        lines = [f"    server {server_name(i)} {addr}\n"
                 for i, addr in enumerate(servers.addresses, start=1)]
        n = len(servers.addresses)
        if servers.spare_slots > 0:
            lines.append("    # spare slots an operator fills over the runtime API\n")
            lines.append(f"    server-template {SERVER_PREFIX} {n + 1}-{n + servers.spare_slots}"
                         " 127.0.0.1:1 disabled\n")
        backend_servers = "".join(lines)
    return f"""\
# written by harness (docker platform)
global
    maxconn {s.maxconn}
    stats socket {RUN_DIR}/{SOCKET_NAME} mode 666 level admin
    stats timeout 10s

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
{resolvers}
frontend lb
    bind :{LB_PORT}
    default_backend {BACKEND}

frontend stats
    bind :{STATS_PORT}
    stats enable
    stats uri /stats
    stats refresh 2s
    http-request use-service prometheus-exporter if {{ path /metrics }}

backend {BACKEND}
    balance {s.balance}
    option httpchk GET {s.ready_path}
    default-server {check}
{backend_servers}"""


# ── the runtime API ────────────────────────────────────────────────────────────────


class RuntimeAPIError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServerStat:
    name: str  # app-N
    addr: str | None  # "ip:port" or None while unresolved
    status: str  # UP, DOWN, MAINT, "UP 1/2", "MAINT (resolution)", "no check", …
    sessions_total: int  # stot: requests (sessions) HAProxy sent to this slot so far

    @property
    def routable(self) -> bool:
        """HAProxy sends traffic to it now (UP, also while a failing check counts down)."""
        st = self.status.upper()
        return st.startswith("UP") or st == "NO CHECK"


class RuntimeAPI:
    """One command per connection on the admin socket (non-interactive mode)."""

    def __init__(self, socket_path: Path, timeout_s: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

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
            time.sleep(0.1)
        return False

    def servers(self) -> list[ServerStat]:
        return parse_stats(self.command("show stat"))

    def set_server(self, slot: int, addr: str | None, enabled: bool) -> None:
        """Point slot app-N at ip:port and put it in rotation, or take it out (maint)."""
        srv = f"{BACKEND}/{server_name(slot)}"
        if addr is not None:
            ip, port = addr.rsplit(":", 1)
            out = self.command(f"set server {srv} addr {ip} port {port}")
            if "changed" not in out and "no need" not in out:
                raise RuntimeAPIError(f"set server {srv} addr: {out.strip()}")
        out = self.command(f"set server {srv} state {'ready' if enabled else 'maint'}")
        if out.strip():
            raise RuntimeAPIError(f"set server {srv} state: {out.strip()}")


def parse_stats(text: str) -> list[ServerStat]:
    """The backend's server rows of `show stat` CSV (pure)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        return []
    header = lines[0][2:].split(",")
    out: list[ServerStat] = []
    for row in csv.DictReader(io.StringIO("\n".join(lines[1:])), fieldnames=header):
        if row.get("pxname") != BACKEND or row.get("svname") in ("FRONTEND", "BACKEND"):
            continue
        addr = (row.get("addr") or "").strip() or None
        try:
            stot = int(row.get("stot") or 0)
        except ValueError:
            stot = 0
        out.append(ServerStat(name=row.get("svname") or "", addr=addr,
                              status=(row.get("status") or "").strip(), sessions_total=stot))
    return out
