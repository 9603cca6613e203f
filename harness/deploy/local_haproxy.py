"""HAProxy as a host process for the local platform: its config and its runtime API.

Why the runtime API and not reloads: the backend pre-declares a pool of server slots
(`server-template r 1-<max> 127.0.0.1:1 disabled`), and following a scale or a replaced
replica is `set server app/rN addr 127.0.0.1 port P` + `set server app/rN state
ready|maint` over the admin stats socket. Nothing restarts, so no connection is dropped
and no health state is forgotten; a reload (even a seamless one with `expose-fd
listeners`, which the socket also allows) would start a new process with fresh checks.

Balancing is `leastconn`: the sample app is a queueing server with a bounded number of
workers, so sending each request to the replica with the fewest in-flight requests
(join-the-shortest-queue) is what a real deployment in front of such a service uses, and
it keeps a slow or frozen replica from receiving its round-robin share.

A crashed replica costs few errors: `retry-on conn-failure empty-response` with
`retries 2` and `option redispatch` re-send a request that hit a dead port to another
server; health checks (`inter 1s fall 2 rise 1`) take the server out within ~2 s. A
frozen (paused) replica still accepts TCP, so its requests wait for `timeout server` —
the realistic cost of a hung replica — until the checks (`timeout check 1s`) mark it down.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path

BACKEND = "app"
SERVER_PREFIX = "r"


@dataclass(frozen=True)
class HAProxyConfig:
    lb_port: int
    exporter_port: int
    stats_socket: Path
    ready_path: str = "/readyz"
    max_servers: int = 64
    balance: str = "leastconn"
    connect_timeout_s: float = 1.0
    server_timeout_s: float = 5.0
    client_timeout_s: float = 30.0
    check_timeout_s: float = 1.0
    maxconn: int = 4096


def server_name(slot: int) -> str:
    return f"{SERVER_PREFIX}{slot}"


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def render_config(c: HAProxyConfig) -> str:
    """The haproxy.cfg text (pure; tests read it)."""
    return f"""\
# written by harness (local platform); one process, foreground (-db)
global
    maxconn {c.maxconn}
    stats socket {c.stats_socket} mode 600 level admin expose-fd listeners
    stats timeout 10s

defaults
    mode http
    option dontlognull
    timeout connect {_ms(c.connect_timeout_s)}
    timeout client {_ms(c.client_timeout_s)}
    timeout server {_ms(c.server_timeout_s)}
    timeout check {_ms(c.check_timeout_s)}
    timeout http-request 10s
    # a request that met a dead replica goes to another one instead of failing
    retries 2
    retry-on conn-failure empty-response
    option redispatch

frontend lb
    bind 127.0.0.1:{c.lb_port}
    default_backend {BACKEND}

frontend exporter
    bind 127.0.0.1:{c.exporter_port}
    http-request use-service prometheus-exporter if {{ path /metrics }}
    no log

backend {BACKEND}
    balance {c.balance}
    option httpchk GET {c.ready_path}
    default-server check inter 1s fall 2 rise 1
    # slots filled at run time over the stats socket (see the module docstring)
    server-template {SERVER_PREFIX} 1-{c.max_servers} 127.0.0.1:1 disabled
"""


class RuntimeAPIError(RuntimeError):
    pass


@dataclass(frozen=True)
class LbServer:
    """One backend server slot as HAProxy sees it (`show stat`)."""

    name: str  # rN
    addr: str | None  # "127.0.0.1:PORT" (":1" while the slot was never used)
    status: str  # UP, DOWN, MAINT, "UP 1/2", "DOWN 1/2", …
    sessions_total: int  # stot: sessions HAProxy sent to this slot so far

    @property
    def routable(self) -> bool:
        """HAProxy sends traffic to it now (UP, also while a failing check counts down)."""
        return self.status.upper().startswith("UP")


def parse_stat(csv_text: str) -> list[LbServer]:
    """The app backend's servers from `show stat` CSV (pure; header names the columns)."""
    lines = [ln for ln in csv_text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("#"):
        return []
    header = lines[0].lstrip("# ").split(",")
    out: list[LbServer] = []
    for ln in lines[1:]:
        row = dict(zip(header, ln.split(","), strict=False))
        name = row.get("svname", "")
        if row.get("pxname") != BACKEND or name in ("FRONTEND", "BACKEND", ""):
            continue
        try:
            stot = int(row.get("stot") or 0)
        except ValueError:
            stot = 0
        out.append(LbServer(name=name, addr=row.get("addr") or None,
                            status=(row.get("status") or "").strip(), sessions_total=stot))
    return out


class RuntimeAPI:
    """One command per connection on HAProxy's admin stats socket (non-interactive mode)."""

    def __init__(self, socket_path: Path, timeout_s: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout_s)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks: list[bytes] = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    def answers(self) -> bool:
        try:
            return "Name: HAProxy" in self.command("show info")
        except OSError:
            return False

    def set_server(self, slot: int, port: int | None, enabled: bool,
                   force_up: bool = False) -> None:
        """Point slot rN at 127.0.0.1:port and put it in rotation (or in maintenance).

        `force_up` skips waiting for the first health check of a server the harness has
        just seen ready itself (`set server ... health up`); checks keep running after.
        """
        srv = f"{BACKEND}/{server_name(slot)}"
        if port is not None:
            out = self.command(f"set server {srv} addr 127.0.0.1 port {port}")
            if "changed" not in out and "no need" not in out:
                raise RuntimeAPIError(f"set server {srv} addr: {out.strip()}")
        out = self.command(f"set server {srv} state {'ready' if enabled else 'maint'}")
        if out.strip():
            raise RuntimeAPIError(f"set server {srv} state: {out.strip()}")
        if enabled and force_up:
            self.command(f"set server {srv} health up")

    def servers_state(self) -> dict[int, tuple[int, int, int]]:
        """slot → (port, operational state, admin state) from `show servers state`.

        Operational state 2 is running (UP); admin state & 0x23 is maintenance (HAProxy's
        SRV_ADMF_MAINT; 0x04 only remembers the config's `disabled`).
        """
        out = self.command(f"show servers state {BACKEND}")
        result: dict[int, tuple[int, int, int]] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 19 or parts[0].startswith("#") or not parts[3].startswith(
                    SERVER_PREFIX):
                continue
            try:
                slot = int(parts[3][len(SERVER_PREFIX):])
                result[slot] = (int(parts[18]), int(parts[5]), int(parts[6]))
            except ValueError:
                continue
        return result

    def servers(self) -> list[LbServer]:
        """`show stat` of the app backend's servers (type 4 = servers only)."""
        return parse_stat(self.command("show stat -1 4 -1"))

    def wait_answers(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.socket_path.exists() and self.answers():
                return True
            time.sleep(0.05)
        return False


def up_ports(states: dict[int, tuple[int, int, int]]) -> set[int]:
    """Ports of the servers HAProxy is sending traffic to right now."""
    return {port for port, op, admin in states.values() if op == 2 and not admin & 0x23}
