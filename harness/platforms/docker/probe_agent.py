"""The readiness prober: one per Docker trial, run *next to* the replicas, never in them.

Standard library only: it runs as a plain script (`python3 probe_agent.py …`) in the
harness's base image, in one container on the trial's network, with this file and an
output directory bind-mounted (docs/architecture.md, "Readiness"). It needs nothing
inside the app image but an HTTP port, as kubelet's httpGet probes and load balancers do.

Each round it resolves the same DNS name HAProxy and Prometheus use (`app`, or
`tasks.<service>` on Swarm) and sends `GET <ready path>` to every address; a 2xx or 3xx
answer is ready. Addresses that are new or failing are probed every `fast_s` (0.25 s),
addresses that answered ready once a second on one shared grid (so 30 ready replicas
cost one wake-up a second, not 30). Probes run in threads, so a frozen replica (a pause
fault) holds up nobody but itself.

The output is a JSON file, replaced atomically and only when new probes arrived:
`{"pid", "name", "updated", "resolve_error", "addresses": {"ip:port": [probe, …]}}`,
with the last `keep` probes per address, each `{"start", "end", "ok", "outcome"}`
(wall-clock seconds; the host and the container share one kernel clock). `outcome` is
`http <status>`, `refused`, `timeout` or `error: <text>`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

FAST_S = 0.25
SLOW_S = 1.0
TIMEOUT_S = 1.0
KEEP = 20
GONE_KEEP_S = 60.0  # an address that left DNS keeps its history this long (diagnostics)


def http_probe(host: str, port: int, path: str, timeout_s: float) -> tuple[bool, str]:
    """One raw HTTP/1.0 GET; (ready, outcome). No urllib: nothing to import or resolve."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n"
                      "User-Agent: harness-prober\r\n\r\n".encode())
            head = b""
            while b"\r\n" not in head and len(head) < 256:
                chunk = s.recv(256)
                if not chunk:
                    break
                head += chunk
    except ConnectionRefusedError:
        return False, "refused"
    except TimeoutError:
        return False, "timeout"
    except OSError as e:
        return False, f"error: {e.strerror or type(e).__name__}"
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False, "error: no HTTP status line"
    status = int(parts[1])
    return 200 <= status < 400, f"http {status}"


def resolve(name: str, port: int) -> list[str]:
    """Every IPv4 address the name has right now, as "ip:port" (sorted)."""
    infos = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)
    return sorted({f"{info[4][0]}:{port}" for info in infos})


class Prober:
    def __init__(self, name: str, port: int, path: str, out: Path, *,
                 fast_s: float = FAST_S, slow_s: float = SLOW_S,
                 timeout_s: float = TIMEOUT_S, keep: int = KEEP) -> None:
        self.name, self.port, self.path, self.out = name, port, path, out
        self.fast_s, self.slow_s, self.timeout_s, self.keep = fast_s, slow_s, timeout_s, keep
        self.lock = threading.Lock()
        self.history: dict[str, deque[dict[str, Any]]] = {}
        self.ready: dict[str, bool] = {}  # the address's latest probe answered ready
        self.in_flight: set[str] = set()
        self.next_due: dict[str, float] = {}
        self.gone_since: dict[str, float] = {}
        self.resolve_error: str | None = None
        self.dirty = True

    def _probe(self, addr: str) -> None:
        host, port = addr.rsplit(":", 1)
        start = time.time()
        ok, outcome = http_probe(host, int(port), self.path, self.timeout_s)
        end = time.time()
        # rounded once: the schedule below and the readers see the same figures
        start, end = math.floor(start * 1e4) / 1e4, math.ceil(end * 1e4) / 1e4
        with self.lock:
            hist = self.history.setdefault(addr, deque(maxlen=self.keep))
            hist.append({"start": start, "end": end, "ok": ok, "outcome": outcome})
            self.ready[addr] = ok
            self.in_flight.discard(addr)
            # ready: next whole second of the shared grid; else again soon
            self.next_due[addr] = (math.floor(end / self.slow_s) + 1) * self.slow_s if ok \
                else start + self.fast_s
            self.dirty = True

    def round(self, now: float) -> None:
        try:
            addrs = resolve(self.name, self.port)
            err = None
        except OSError as e:  # no replica yet: Docker's DNS answers NXDOMAIN
            addrs, err = [], f"{self.name}: {e.strerror or e}"
        with self.lock:
            if err != self.resolve_error:
                self.resolve_error, self.dirty = err, True
            for addr in addrs:
                self.gone_since.pop(addr, None)
                if addr not in self.next_due:
                    self.next_due[addr] = now  # new: probe at once
            for addr in list(self.next_due):
                if addr not in addrs:
                    since = self.gone_since.setdefault(addr, now)
                    if now - since > GONE_KEEP_S:
                        for d in (self.next_due, self.gone_since, self.history, self.ready):
                            d.pop(addr, None)
                        self.dirty = True
            due = [a for a in addrs if a not in self.in_flight and self.next_due[a] <= now]
            self.in_flight.update(due)
        for addr in due:
            threading.Thread(target=self._probe, args=(addr,), daemon=True).start()

    def write(self) -> None:
        with self.lock:
            if not self.dirty:
                return
            self.dirty = False
            doc = {"pid": os.getpid(), "name": self.name, "updated": round(time.time(), 4),
                   "resolve_error": self.resolve_error,
                   "addresses": {a: list(h) for a, h in self.history.items()}}
        tmp = self.out.with_name(f".{self.out.name}.tmp")
        tmp.write_text(json.dumps(doc, separators=(",", ":")))
        os.replace(tmp, self.out)  # readers see a whole file, never half of one

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        while not stop.is_set():
            t0 = time.time()
            self.round(t0)
            self.write()
            # the next round: the fast grid, or earlier if a ready address is due sooner
            with self.lock:
                due = [t for a, t in self.next_due.items() if a not in self.in_flight]
            wake = min([t0 + self.fast_s, *due])
            stop.wait(max(0.01, wake - time.time()))
            self.write()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="probe replicas' readiness over HTTP")
    ap.add_argument("--name", required=True, help="DNS name of the replicas")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/readyz")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--fast", type=float, default=FAST_S)
    ap.add_argument("--slow", type=float, default=SLOW_S)
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S)
    ap.add_argument("--keep", type=int, default=KEEP)
    a = ap.parse_args(argv)
    Prober(a.name, a.port, a.path, a.out, fast_s=a.fast, slow_s=a.slow,
           timeout_s=a.timeout, keep=a.keep).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
