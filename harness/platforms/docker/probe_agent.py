"""The readiness prober: one per Docker trial, run *next to* the replicas, never in them.

Standard library only: it runs as a plain script (`python3 probe_agent.py …`) in the
harness's base image, in one container on the trial's network, with this file and an
output directory bind-mounted (docs/architecture.md, "Readiness"). It needs nothing
inside the app image but an HTTP port, as kubelet's httpGet probes and load balancers do.

It resolves the same DNS name HAProxy and Prometheus use (`app`, or `tasks.<service>` on
Swarm) and sends `GET <ready path>` to every address; a 2xx or 3xx answer is ready.
Addresses that are new or failing are probed every `fast_s` (0.25 s), addresses that
answered ready once a second on one shared grid (so 30 ready replicas cost one wake-up a
second, not 30).

What it costs is what the harness adds to the machine it measures, per replica, so it is
kept small (benchmarks/bench_overhead.py):
- one thread and non-blocking sockets (a selector), not a thread per probe; a frozen
  replica (a pause fault) times out on its own deadline and holds up nobody;
- HTTP/1.1 keep-alive: a ready replica is probed on the connection of its previous probe
  when the server kept it open (a body of known length), so a steady probe is one
  request, not a TCP handshake, accept and teardown on both sides. A reused connection
  that fails before any answer byte (the replica restarted) is retried at once on a new
  one, and the probe's start is the new connection's;
- the name is resolved every `fast_s` only while something is moving — an address is
  new, failing or gone, the answer changed in the last `settle_s`, or the host touched
  the wake file (`--wake`, on deploy and scale) in the last `settle_s` — and once a
  second when every replica has been ready and unchanged.

The output is a JSON file, replaced atomically and only when new probes arrived:
`{"pid", "name", "updated", "resolve_error", "resolves", "addresses": {"ip:port": [probe,
…]}}`,
with the last `keep` probes per address, each `{"start", "end", "ok", "outcome"}`
(wall-clock seconds; the host and the container share one kernel clock). `outcome` is
`http <status>`, `refused`, `timeout` or `error: <text>`.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import selectors
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAST_S = 0.25
SLOW_S = 1.0
TIMEOUT_S = 1.0
KEEP = 20
SETTLE_S = 10.0  # resolve fast this long after the answer changed or the host woke us
GONE_KEEP_S = 60.0  # an address that left DNS keeps its history this long (diagnostics)
MAX_HEAD = 8192


def resolve(name: str, port: int) -> list[str]:
    """Every IPv4 address the name has right now, as "ip:port" (sorted)."""
    infos = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)
    return sorted({f"{info[4][0]}:{port}" for info in infos})


def parse_head(buf: bytes) -> tuple[int, int | None, bool] | None:
    """(status, content length or None, server keeps the connection) once the head is
    whole, else None. Raises ValueError on something that is not an HTTP answer."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise ValueError("no HTTP status line")
        return None
    lines = buf[:end].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ValueError("no HTTP status line")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip().lower()
    length = headers.get(b"content-length")
    keep = (parts[0] == b"HTTP/1.1" and b"close" not in headers.get(b"connection", b"")
            and b"transfer-encoding" not in headers and length is not None
            and length.isdigit())
    return int(parts[1]), int(length) if length and length.isdigit() else None, keep


@dataclass
class Probe:
    """One probe in flight on one connection."""
    addr: str
    sock: socket.socket
    start: float
    deadline: float
    reused: bool
    request: bytes
    sent: int = 0
    connected: bool = False
    buf: bytes = b""
    head: tuple[int, int | None, bool] | None = None
    body_start: int = 0


@dataclass
class Book:
    """Everything the prober knows of one address."""
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEEP))
    ready: bool = False
    next_due: float = 0.0
    gone_since: float | None = None
    idle: socket.socket | None = None  # the kept-alive connection of the last probe


class Prober:
    def __init__(self, name: str, port: int, path: str, out: Path, *,
                 fast_s: float = FAST_S, slow_s: float = SLOW_S,
                 timeout_s: float = TIMEOUT_S, keep: int = KEEP,
                 wake: Path | None = None, settle_s: float = SETTLE_S) -> None:
        self.name, self.port, self.path, self.out = name, port, path, out
        self.fast_s, self.slow_s, self.timeout_s, self.keep = fast_s, slow_s, timeout_s, keep
        self.wake, self.settle_s = wake, settle_s
        self.books: dict[str, Book] = {}
        self.flying: dict[str, Probe] = {}
        self.sel = selectors.DefaultSelector()
        self.resolve_error: str | None = None
        self.next_resolve = 0.0
        self.moving_until = 0.0
        self.wake_mtime: int | None = None
        self.resolves = 0  # how often the name was resolved (its pace is tested)
        self.dirty = True

    # ── probes ───────────────────────────────────────────────────────────────────
    def _request(self, addr: str) -> bytes:
        return (f"GET {self.path} HTTP/1.1\r\nHost: {addr}\r\n"
                "User-Agent: harness-prober\r\nConnection: keep-alive\r\n\r\n").encode()

    def _begin(self, addr: str, now: float, *, allow_reuse: bool = True) -> None:
        book = self.books[addr]
        sock, reused = (book.idle, True) if allow_reuse and book.idle else (None, False)
        book.idle = None
        if sock is None:
            host, port = addr.rsplit(":", 1)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex((host, int(port)))
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                self._record(addr, now, False, _outcome_of(err))
                return
        p = Probe(addr, sock, now, now + self.timeout_s, reused, self._request(addr),
                  connected=reused)
        self.flying[addr] = p
        self.sel.register(sock, selectors.EVENT_WRITE, p)

    def _finish(self, p: Probe, ok: bool, outcome: str, keep: bool = False) -> None:
        self.flying.pop(p.addr, None)
        self.sel.unregister(p.sock)
        book = self.books.get(p.addr)
        if keep and book is not None:
            book.idle = p.sock
        else:
            p.sock.close()
        self._record(p.addr, p.start, ok, outcome)

    def _fail_early(self, p: Probe, outcome: str) -> None:
        """A reused connection that broke before any answer byte: the replica closed it
        (idle timeout, a restart) — probe again at once on a new connection."""
        if p.reused and not p.buf:
            self.flying.pop(p.addr, None)
            self.sel.unregister(p.sock)
            p.sock.close()
            self._begin(p.addr, time.time(), allow_reuse=False)
        else:
            self._finish(p, False, outcome)

    def _on_ready(self, p: Probe) -> None:
        try:
            if not p.connected:
                err = p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    return self._finish(p, False, _outcome_of(err))
                p.connected = True
            if p.sent < len(p.request):
                p.sent += p.sock.send(p.request[p.sent:])
                if p.sent == len(p.request):
                    self.sel.modify(p.sock, selectors.EVENT_READ, p)
                return None
            chunk = p.sock.recv(65536)
        except BlockingIOError:
            return None
        except OSError as e:
            return self._fail_early(p, _outcome_of(e.errno or 0, e))
        if not chunk:
            if p.head is not None and p.head[1] is None:  # body to the close: it's over
                return self._finish(p, 200 <= p.head[0] < 400, f"http {p.head[0]}")
            return self._fail_early(p, "error: connection closed")
        p.buf += chunk
        if p.head is None:
            try:
                p.head = parse_head(p.buf)
            except ValueError as e:
                return self._finish(p, False, f"error: {e}")
            if p.head is None:
                return None
            p.body_start = p.buf.find(b"\r\n\r\n") + 4
        status, length, keep = p.head
        if length is None or not keep:  # the status is all we need; don't reuse
            return self._finish(p, 200 <= status < 400, f"http {status}")
        if len(p.buf) - p.body_start >= length:
            return self._finish(p, 200 <= status < 400, f"http {status}",
                                keep=len(p.buf) - p.body_start == length)
        return None

    def _record(self, addr: str, start: float, ok: bool, outcome: str) -> None:
        end = time.time()
        # rounded once: the schedule below and the readers see the same figures
        start, end = math.floor(start * 1e4) / 1e4, math.ceil(end * 1e4) / 1e4
        book = self.books.get(addr)
        if book is None:  # left DNS long ago while in flight
            return
        book.history.append({"start": start, "end": end, "ok": ok, "outcome": outcome})
        if ok != book.ready:
            self.moving_until = max(self.moving_until, end + self.settle_s)
        book.ready = ok
        # ready: next whole second of the shared grid; else again soon
        book.next_due = (math.floor(end / self.slow_s) + 1) * self.slow_s if ok \
            else start + self.fast_s
        self.dirty = True

    # ── discovery ────────────────────────────────────────────────────────────────
    def _woken(self) -> bool:
        if self.wake is None:
            return False
        try:
            mtime = os.stat(self.wake).st_mtime_ns
        except OSError:
            return False
        changed, self.wake_mtime = mtime != self.wake_mtime, mtime
        return changed

    def _discover(self, now: float) -> None:
        if self._woken():
            self.moving_until, self.next_resolve = now + self.settle_s, now
        if now < self.next_resolve:
            return
        self.resolves += 1
        try:
            addrs = resolve(self.name, self.port)
            err = None
        except OSError as e:  # no replica yet: Docker's DNS answers NXDOMAIN
            addrs, err = [], f"{self.name}: {e.strerror or e}"
        if err != self.resolve_error:
            self.resolve_error, self.dirty = err, True
        known = {a for a, b in self.books.items() if b.gone_since is None}
        if set(addrs) != known:
            self.moving_until = now + self.settle_s
        for addr in addrs:
            book = self.books.setdefault(addr, Book(deque(maxlen=self.keep)))
            if book.gone_since is not None or addr not in known:
                book.gone_since, book.next_due = None, now  # (back) in DNS: probe at once
        for addr, book in list(self.books.items()):
            if addr in addrs:
                continue
            if book.gone_since is None:
                book.gone_since = now
            if book.idle is not None:
                book.idle.close()
                book.idle = None
            if now - book.gone_since > GONE_KEEP_S and addr not in self.flying:
                del self.books[addr]
                self.dirty = True
        moving = err is not None or now < self.moving_until or \
            any(not b.ready for b in self.books.values() if b.gone_since is None)
        self.next_resolve = now + (self.fast_s if moving else self.slow_s)

    def round(self, now: float) -> None:
        self._discover(now)
        for addr, book in self.books.items():
            if book.gone_since is None and addr not in self.flying and book.next_due <= now:
                self._begin(addr, now)

    def write(self) -> None:
        if not self.dirty:
            return
        self.dirty = False
        doc = {"pid": os.getpid(), "name": self.name, "updated": round(time.time(), 4),
               "resolve_error": self.resolve_error, "resolves": self.resolves,
               "addresses": {a: list(b.history) for a, b in self.books.items()}}
        tmp = self.out.with_name(f".{self.out.name}.tmp")
        tmp.write_text(json.dumps(doc, separators=(",", ":")))
        os.replace(tmp, self.out)  # readers see a whole file, never half of one

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        while not stop.is_set():
            now = time.time()
            self.round(now)
            for p in [p for p in self.flying.values() if p.deadline <= now]:
                self._finish(p, False, "timeout")
            self.write()
            due = [b.next_due for a, b in self.books.items()
                   if b.gone_since is None and a not in self.flying]
            due += [p.deadline for p in self.flying.values()]
            wake = min([self.next_resolve, now + self.fast_s, *due])
            timeout = max(0.005, wake - time.time())
            if self.flying:
                for key, _ in self.sel.select(timeout):
                    self._on_ready(key.data)
            else:
                stop.wait(timeout)


def _outcome_of(err: int, exc: BaseException | None = None) -> str:
    if err == errno.ECONNREFUSED:
        return "refused"
    if err == errno.ETIMEDOUT:
        return "timeout"
    return f"error: {os.strerror(err) if err else type(exc).__name__}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="probe replicas' readiness over HTTP")
    ap.add_argument("--name", required=True, help="DNS name of the replicas")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/readyz")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--wake", type=Path, default=None,
                    help="a file the host touches when replicas are about to change")
    ap.add_argument("--fast", type=float, default=FAST_S)
    ap.add_argument("--slow", type=float, default=SLOW_S)
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S)
    ap.add_argument("--keep", type=int, default=KEEP)
    ap.add_argument("--settle", type=float, default=SETTLE_S)
    a = ap.parse_args(argv)
    Prober(a.name, a.port, a.path, a.out, fast_s=a.fast, slow_s=a.slow,
           timeout_s=a.timeout, keep=a.keep, wake=a.wake, settle_s=a.settle).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
