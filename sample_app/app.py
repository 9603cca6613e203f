"""The app's routes over the capacity model; no sockets (the server in `server.py` owns them).

- `GET|HEAD|POST /work`: the load target. Takes a slot (or a place in the queue, or gets
  503 at once), holds it for the service time, then answers 200 with
  `{"replica", "service_ms", "wait_ms"}` and the header `X-Replica`.
- `GET /healthz`: liveness, 200 while the process runs.
- `GET /readyz`: readiness, 503 for STARTUP_S after start and while shutting down.
- `GET /metrics`: Prometheus text format (`metrics.py`).
- `POST /admin/crash`: with ALLOW_CRASH=1, answers and then exits with code 1; else 404.
- anything else: 404 (405 for a known path with a wrong method).

`handle` answers synchronously when it can (everything but a `/work` that has to wait or
sleep), so trivial requests cost no task; otherwise it returns a coroutine. Either way the
result is `(response bytes, keep the connection open?)`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Callable, Coroutine
from email.utils import formatdate
from typing import Any

from sample_app.config import Config
from sample_app.metrics import AppMetrics
from sample_app.model import ServiceTime, Slots, burn_cpu, is_ready
from sample_app.wire import Request, response

Reply = tuple[bytes, bool]
Handled = Reply | Coroutine[Any, Any, Reply]

JSON = "application/json"
WORK_METHODS = ("GET", "HEAD", "POST")


class App:
    def __init__(self, cfg: Config, *, now: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 exit_process: Callable[[int], Any] = os._exit) -> None:
        """`now` is the monotonic clock service times and readiness are measured on;
        `wall` only dates responses; `exit_process` is what a crash calls."""
        self.cfg = cfg
        self.now = now
        self.wall = wall
        self.exit_process = exit_process
        self.started_at = now()
        self.shutting_down = False
        self.slots = Slots(cfg.workers, cfg.queue_limit)
        self.service = ServiceTime(cfg.service_dist, cfg.service_ms / 1000.0, cfg.sigma,
                                   random.Random(cfg.seed))
        self.metrics = AppMetrics(slots=self.slots, service_ms=cfg.service_ms, ready=self.ready,
                                  replica_id=cfg.replica_id, service_dist=cfg.service_dist)
        self._replica_header = f"X-Replica: {cfg.replica_id}\r\n"
        self._replica_json = json.dumps(cfg.replica_id)
        self._date_s = -1
        self._date = ""

    def ready(self) -> bool:
        return is_ready(self.now(), self.started_at, self.cfg.startup_s, self.shutting_down)

    def date(self) -> str:
        s = int(self.wall())
        if s != self._date_s:  # formatting once a second is plenty for a Date header
            self._date_s, self._date = s, formatdate(s, usegmt=True)
        return self._date

    # ---- routing ----

    def handle(self, req: Request) -> Handled:
        path, method = req.path, req.method
        if path == "/work":
            if method not in WORK_METHODS:
                return self._reply(req, 405, b"method not allowed\n",
                                   headers="Allow: GET, HEAD, POST\r\n")
            return self._work(req)
        if path == "/admin/crash" and self.cfg.allow_crash:
            if method != "POST":
                return self._reply(req, 405, b"method not allowed\n", headers="Allow: POST\r\n")
            # call_soon: the answer is written first (this runs inside data_received)
            asyncio.get_running_loop().call_soon(self.exit_process, 1)
            return self._reply(req, 200, b"crashing\n", keep_alive=False)
        if path in ("/healthz", "/readyz", "/metrics"):
            if method not in ("GET", "HEAD"):
                return self._reply(req, 405, b"method not allowed\n",
                                   headers="Allow: GET, HEAD\r\n")
            if path == "/healthz":
                return self._reply(req, 200, b"ok\n")
            if path == "/readyz":
                if self.ready():
                    return self._reply(req, 200, b"ready\n")
                why = b"shutting down\n" if self.shutting_down else b"starting\n"
                return self._reply(req, 503, why)
            return self._reply(req, 200, self.metrics.render(),
                               content_type=self.metrics.content_type)
        return self._reply(req, 404, b"not found\n")

    def _reply(self, req: Request, status: int, body: bytes, *, content_type: str = "",
               headers: str = "", keep_alive: bool = True) -> Reply:
        keep = keep_alive and req.keep_alive and not self.shutting_down
        self.metrics.count(status, req.path)
        data = response(status, body, content_type=content_type or "text/plain; charset=utf-8",
                        keep_alive=keep, headers=headers, head_only=req.method == "HEAD",
                        date=self.date())
        return data, keep

    # ---- /work: the capacity model ----

    def _work(self, req: Request) -> Handled:
        arrived = self.now()
        if self.slots.try_acquire():
            service_s = self.service.sample()
            if service_s == 0 and self.cfg.cpu_ms == 0:
                self.slots.release()  # nothing to wait for: answer without a task
                return self._served(req, arrived, arrived, 0.0)
            return self._hold(req, arrived, service_s)
        if self.slots.queue_full():
            return self._reply(req, 503, b'{"error":"queue full"}\n', content_type=JSON,
                               headers=self._replica_header + "Retry-After: 1\r\n")
        return self._queue(req, arrived, self.slots.enqueue())

    async def _queue(self, req: Request, arrived: float, place: asyncio.Future[None]) -> Reply:
        await self.slots.wait(place)
        return await self._hold(req, arrived, self.service.sample())

    async def _hold(self, req: Request, arrived: float, service_s: float) -> Reply:
        """Hold the slot (already taken) for the service time, then answer. A client that
        hangs up meanwhile does not free the slot early: work already accepted is done,
        as in a real server that does not watch its sockets while it computes."""
        started = self.now()
        try:
            if service_s > 0:
                await asyncio.sleep(service_s)
            if self.cfg.cpu_ms > 0:
                burn_cpu(self.cfg.cpu_ms)
        finally:
            self.slots.release()
        return self._served(req, arrived, started, service_s)

    def _served(self, req: Request, arrived: float, started: float, service_s: float) -> Reply:
        done = self.now()
        self.metrics.duration.observe(done - arrived)
        body = (f'{{"replica":{self._replica_json},"service_ms":{service_s * 1000:.3f},'
                f'"wait_ms":{(started - arrived) * 1000:.3f}}}\n').encode()
        return self._reply(req, 200, body, content_type=JSON, headers=self._replica_header)
