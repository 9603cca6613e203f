"""The HTTP/1.1 server: an asyncio Protocol per connection, the listener, signals, exit.

Why a Protocol and not asyncio streams: requests are parsed straight out of the receive
buffer and trivial ones are answered inside `data_received`, with no task and no extra
copy, which keeps the app far from being the bottleneck of a load test.

Per connection, requests are handled strictly in order (pipelining allowed): while one
waits for a slot or sleeps, later bytes stay in the buffer (reading pauses if it grows
past a bound). Every response is ONE `transport.write`, and TCP_NODELAY is set: a header
and a body written separately meet Nagle's algorithm and the peer's delayed ACK, which
stalls keep-alive connections by ~40 ms per response.

Shutdown (SIGTERM or SIGINT, e.g. as PID 1 in a container): stop listening, report not
ready, close idle connections, let requests holding a slot finish for up to
SHUTDOWN_GRACE_S (a second signal cuts that short), drop the rest, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import traceback
from collections.abc import Coroutine
from typing import Any

from sample_app.app import App, Handled, Reply
from sample_app.config import Config, ConfigError, from_env
from sample_app.wire import (
    CONTINUE,
    MAX_BODY_BYTES,
    MAX_HEAD_BYTES,
    HttpError,
    Request,
    parse_head,
    response,
)

# unprocessed input beyond this pauses reading (a client pipelining faster than we serve)
MAX_PENDING_BYTES = MAX_HEAD_BYTES + MAX_BODY_BYTES + 64 * 1024


def log(msg: str) -> None:
    print(f"sample_app: {msg}", file=sys.stderr, flush=True)


class Connection(asyncio.Protocol):
    def __init__(self, app: App, conns: set[Connection]) -> None:
        self.app = app
        self.conns = conns
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.pending: tuple[Request, int] | None = None  # parsed head awaiting its body
        self.sent_continue = False
        self.busy = False  # a request is being handled asynchronously
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self.read_paused = False
        self.write_paused = False
        self.eof = False
        self.last_active = app.now()

    # ---- asyncio callbacks ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # not TCP (tests over socketpairs)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conns.add(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buf += data
        self.last_active = self.app.now()
        if not self.busy and not self.write_paused:
            self._process()
        if len(self.buf) > MAX_PENDING_BYTES and not self.read_paused and self.transport:
            self.transport.pause_reading()
            self.read_paused = True

    def eof_received(self) -> bool:
        # The client half-closed: answer what it sent, then close. Returning True keeps our
        # write side open until then.
        self.eof = True
        if not self.busy and not self.write_paused:
            self.close()  # every complete request is answered; a partial one never will be
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.conns.discard(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.busy:
            self._process()

    # ---- request loop ----

    def _process(self) -> None:
        t = self.transport
        assert t is not None
        while not self.closing and not self.busy and not self.write_paused:
            if self.pending is None:
                try:
                    parsed = parse_head(self.buf)
                except HttpError as e:
                    self._fail(e)
                    return
                if parsed is None:
                    break
                self.pending = parsed
                self.sent_continue = False
            req, head_len = self.pending
            total = head_len + req.content_length
            if len(self.buf) < total:
                if req.expect_continue and not self.sent_continue:
                    t.write(CONTINUE)
                    self.sent_continue = True
                break
            del self.buf[:total]  # the body is read and ignored
            self.pending = None
            try:
                out: Handled = self.app.handle(req)
            except Exception:
                traceback.print_exc()
                out = self._error_reply(500)
            if isinstance(out, tuple):
                self._send(out)
            else:
                self.busy = True
                self.task = asyncio.get_running_loop().create_task(self._finish(out))
        if self.read_paused and len(self.buf) <= MAX_PENDING_BYTES // 2 and not self.closing:
            t.resume_reading()
            self.read_paused = False
        if self.eof and not self.busy and not self.write_paused and not self.closing:
            self.close()

    async def _finish(self, coro: Coroutine[Any, Any, Reply]) -> None:
        try:
            out = await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            traceback.print_exc()
            out = self._error_reply(500)
        self.busy = False
        self.task = None
        if self.closing or self.transport is None or self.transport.is_closing():
            return  # the client left meanwhile; the work was done all the same
        self._send(out)
        if not self.closing and not self.write_paused:
            self._process()

    def _send(self, out: Reply) -> None:
        data, keep = out
        assert self.transport is not None
        self.transport.write(data)
        self.last_active = self.app.now()
        if not keep:
            self.close()

    def _error_reply(self, status: int) -> Reply:
        self.app.metrics.count(status, "other")
        return response(status, f"{status}\n".encode(), keep_alive=False,
                        date=self.app.date()), False

    def _fail(self, e: HttpError) -> None:
        self.app.metrics.count(e.status, "other")
        if self.transport is not None:
            self.transport.write(response(e.status, f"{e.detail}\n".encode(), keep_alive=False,
                                          date=self.app.date()))
        self.close()

    # ---- closing ----

    def close(self) -> None:
        """Close after the bytes already written have been sent."""
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()

    def idle_for(self, now: float) -> float:
        """Seconds since the last byte in or out; 0 while a request is being served."""
        return 0.0 if self.busy else now - self.last_active


async def _sweep_idle(app: App, conns: set[Connection]) -> None:
    """Close keep-alive connections idle longer than IDLE_TIMEOUT_S (leaked fds otherwise)."""
    period = min(5.0, app.cfg.idle_timeout_s / 2)
    while True:
        await asyncio.sleep(period)
        now = app.now()
        for c in list(conns):
            if c.idle_for(now) > app.cfg.idle_timeout_s:
                c.close()


async def serve(cfg: Config, app: App | None = None) -> int:
    """Run until SIGTERM/SIGINT; the process exit code."""
    loop = asyncio.get_running_loop()
    app = app if app is not None else App(cfg)
    conns: set[Connection] = set()
    stop = asyncio.Event()
    hurry = asyncio.Event()

    def on_signal(signame: str) -> None:
        if stop.is_set():
            hurry.set()
            return
        log(f"{signame}: shutting down")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        server = await loop.create_server(lambda: Connection(app, conns), cfg.host, cfg.port,
                                          reuse_address=True, backlog=1024)
    except OSError as e:
        log(f"cannot listen on {cfg.host}:{cfg.port}: {e}")
        return 1
    port = server.sockets[0].getsockname()[1] if server.sockets else cfg.port
    log(f"replica {cfg.replica_id} listening on {cfg.host}:{port} (workers={cfg.workers} "
        f"service_ms={cfg.service_ms:g} dist={cfg.service_dist} queue_limit={cfg.queue_limit} "
        f"cpu_ms={cfg.cpu_ms:g} startup_s={cfg.startup_s:g})")
    if cfg.crash_after_s is not None:
        loop.call_later(cfg.crash_after_s, _crash, app, f"CRASH_AFTER_S={cfg.crash_after_s:g}")
    sweeper = loop.create_task(_sweep_idle(app, conns))

    await stop.wait()
    app.shutting_down = True
    server.close()
    for c in list(conns):
        if not c.busy:
            c.close()
    deadline = loop.time() + cfg.shutdown_grace_s
    while any(c.busy for c in conns) and loop.time() < deadline and not hurry.is_set():
        await asyncio.sleep(0.01)
    for c in list(conns):
        c.abort()
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper
    return 0


def _crash(app: App, why: str) -> None:
    log(f"{why}: exiting with code 1")
    app.exit_process(1)


def main() -> int:
    try:
        cfg = from_env(os.environ)
    except ConfigError as e:
        log(f"bad configuration: {e}")
        return 2
    return asyncio.run(serve(cfg))
