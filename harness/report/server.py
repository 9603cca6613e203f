"""`harness dashboard [RESULTS_DIR]`: serve the results folder on 127.0.0.1 (stdlib only).

    /                       list of runs (status from run.json), refreshing while one runs
    /run/<id>/              that run's dashboard, regenerated from its CSVs; while the run
                            is `running` the page polls data.json and redraws in place
    /run/<id>/data.json     the dashboard's data (harness.report.html.dashboard_data)
    /run/<id>/<file>        run.json and the CSVs / report.html, for download
    /compare?run=A&run=B…   ticked runs and strategies compared (harness.report.pages)

The index shows headline figures per strategy and picks runs for /compare; both pages are
built in harness.report.pages, this module only routes and guards.

Only folder names directly under RESULTS_DIR are served and only the files listed in
`FILES`: a request cannot climb out of the results folder (`..`, encoded or not, and
symlinks leading elsewhere are refused with 404). Only regular files are read, never
through a link and never blocking (harness.fsutil), so a run folder from someone else
cannot make the server serve or hang on another file. Requests whose Host is not this
loopback address get 421 and every response carries a CSP (harness.report.websec).
"""

from __future__ import annotations

import errno
import html
import json
import os
import threading
from collections.abc import Callable
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from harness.analysis.rundata import load_run
from harness.errors import UsageError
from harness.fsutil import RUN_ID_RE, UnsafeFileError, is_regular, read_regular
from harness.report.html import HERE, _json_for_script, dashboard_data, render_html
from harness.report.pages import ComparePages, Headlines, index_body
from harness.report.websec import header_csp, host_ok
from harness.runlock import effective_status

FILES = {
    "run.json": "application/json", "timeseries.csv": "text/csv", "events.csv": "text/csv",
    "decisions.csv": "text/csv", "summary.csv": "text/csv", "disturbances.csv": "text/csv",
    "summary_aggregate.csv": "text/csv", "report.html": "text/html",
}
_RUN_ID = RUN_ID_RE
REQUEST_TIMEOUT_S = 10  # a client that stalls mid-request is dropped, not waited for
_CSP = header_csp(((HERE / "dashboard.js").read_text(encoding="utf-8"),))
LIVE_INTERVAL_MS = 3000
INDEX_REFRESH_S = 5
# not 8089: Locust's web UI uses that one, and its users already have it open
DEFAULT_PORT = 8642


def _sig(run_dir: Path) -> tuple[tuple[int, int], ...]:
    out = []
    for name in ("run.json", "timeseries.csv", "events.csv", "decisions.csv"):
        try:
            st = os.lstat(run_dir / name)
            out.append((st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            out.append((0, 0))
    return tuple(out)


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, results_dir: Path, address: tuple[str, int],
                 live_interval_ms: int = LIVE_INTERVAL_MS) -> None:
        self.results_dir = results_dir.resolve()
        self.live_interval_ms = live_interval_ms
        self._cache: dict[str, tuple[tuple[tuple[int, int], ...], dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.headlines = Headlines()
        self.compare_pages = ComparePages()
        super().__init__(address, Handler)

    def run_dir(self, run_id: str) -> Path | None:
        """The folder of `run_id` if it is a direct child of the results folder."""
        if not _RUN_ID.match(run_id) or ".." in run_id:
            return None
        p = (self.results_dir / run_id)
        try:
            real = p.resolve(strict=True)
        except (FileNotFoundError, RuntimeError, OSError):
            return None
        if real.parent != self.results_dir or not real.is_dir():
            return None
        return real

    def runs(self) -> list[dict[str, Any]]:
        out = []
        if not self.results_dir.is_dir():
            return out
        for p in self.results_dir.iterdir():
            if not p.is_dir() or not _RUN_ID.match(p.name) or self.run_dir(p.name) is None:
                continue
            if not (p / "run.json").exists() and not (p / "timeseries.csv").exists():
                continue
            info: dict[str, Any] = {"id": p.name, "status": "unknown", "scenario": "",
                                    "strategies": [], "started": "", "ended": ""}
            try:
                rj = json.loads(read_regular(p / "run.json"))
                sc = rj.get("scenario") or {}
                info.update(status=effective_status(p.name, rj),
                            scenario=str(sc.get("name", "")),
                            strategies=[str(s.get("name")) for s in sc.get("strategies") or []],
                            started=str(rj.get("started") or ""),
                            ended=str(rj.get("ended") or ""))
            except (OSError, UnsafeFileError, ValueError, AttributeError):
                pass
            info["mtime"] = max((os.lstat(f).st_mtime for f in p.iterdir()
                                 if is_regular(f)),
                                default=p.stat().st_mtime)
            out.append(info)
        return sorted(out, key=lambda r: r["mtime"], reverse=True)

    def data(self, run_id: str, run_dir: Path) -> dict[str, Any] | None:
        """The dashboard data, recomputed only when the run's files changed."""
        sig = _sig(run_dir)
        with self._lock:
            hit = self._cache.get(run_id)
            if hit and hit[0] == sig:
                return hit[1]
        data = load_run(run_dir)
        if data.timeseries.empty:
            return None
        model = dashboard_data(data)
        model["run"]["status"] = effective_status(run_id, data.run)
        with self._lock:
            self._cache[run_id] = (sig, model)
        return model


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "harness-dashboard"
    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: a polling page would flood the terminal

    def do_GET(self) -> None:
        try:
            if not host_ok(self.headers.get("Host"), self.server.server_address[1]):
                # DNS rebinding: a foreign page reaching 127.0.0.1 under its own name
                return self._send(HTTPStatus.MISDIRECTED_REQUEST,
                                  "text/plain; charset=utf-8", b"misdirected request\n")
            self._route()
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # the page says what went wrong; the server keeps serving
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8",
                       f"error: {type(e).__name__}: {e}\n".encode())

    def do_HEAD(self) -> None:
        self.do_GET()

    def _route(self) -> None:
        path = unquote(urlsplit(self.path).path)
        if "\x00" in path or "\\" in path:
            return self._not_found()
        if path == "/":
            return self._index()
        if path == "/compare":
            status, page = self.server.compare_pages.page(
                parse_qs(urlsplit(self.path).query), self.server.run_dir)
            return self._send(HTTPStatus(status), "text/html; charset=utf-8", page.encode())
        if path in ("/favicon.ico", "/robots.txt"):
            return self._send(HTTPStatus.NO_CONTENT, "text/plain", b"")
        parts = path.split("/")
        # "", "run", id, rest...
        if len(parts) < 3 or parts[1] != "run":
            return self._not_found()
        run_id = parts[2]
        run_dir = self.server.run_dir(run_id)
        if run_dir is None:
            return self._not_found()
        rest = "/".join(parts[3:])
        if len(parts) == 3:
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", f"/run/{run_id}/")
            self.send_header("Content-Length", "0")
            self.send_header("Content-Security-Policy", _CSP)
            self.end_headers()
            return None
        if rest == "":
            return self._dashboard(run_id, run_dir)
        if rest == "data.json":
            model = self.server.data(run_id, run_dir)
            if model is None:
                return self._send(HTTPStatus.SERVICE_UNAVAILABLE, "application/json",
                                  b'{"error": "no data yet"}')
            return self._send(HTTPStatus.OK, "application/json",
                              _json_for_script(model).encode())
        if rest in FILES:
            try:
                body = read_regular(run_dir / rest)  # no link, no FIFO, no device
            except (OSError, UnsafeFileError):
                return self._not_found()
            return self._send(HTTPStatus.OK, FILES[rest], body)
        return self._not_found()

    def _dashboard(self, run_id: str, run_dir: Path) -> None:
        model = self.server.data(run_id, run_dir)
        if model is None:
            page = _page(f"harness · {run_id}",
                         f"<p>Run <b>{html.escape(run_id)}</b> has no data yet; this page "
                         "reloads every few seconds.</p><p><a href='/'>all runs</a></p>",
                         refresh_s=3)
            return self._send(HTTPStatus.OK, "text/html; charset=utf-8", page.encode())
        live = ({"url": "data.json", "interval_ms": self.server.live_interval_ms}
                if model["run"]["status"] == "running" else None)
        page = render_html(model, live=live)
        return self._send(HTTPStatus.OK, "text/html; charset=utf-8", page.encode())

    def _index(self) -> None:
        runs = self.server.runs()
        body = index_body(runs, self.server.results_dir, self.server.headlines.get,
                          datetime.now().astimezone())
        live = any(r["status"] == "running" for r in runs)
        page = _page("harness · runs", body,
                     refresh_s=INDEX_REFRESH_S if live else None)
        self._send(HTTPStatus.OK, "text/html; charset=utf-8", page.encode())

    def _not_found(self) -> None:
        self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def _send(self, status: HTTPStatus, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _page(title: str, body: str, refresh_s: int | None = None) -> str:
    css = (Path(__file__).parent / "dashboard.css").read_text(encoding="utf-8")
    refresh = f"<meta http-equiv=refresh content={refresh_s}>" if refresh_s else ""
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>{refresh}"
            f"<title>{html.escape(title)}</title><style>{css}"
            "a{color:#6e9fff} h1{font-size:18px;font-weight:500}</style></head>"
            f"<body><div id=app>{body}</div></body></html>\n")


def make_server(results_dir: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                live_interval_ms: int = LIVE_INTERVAL_MS) -> DashboardServer:
    """A bound, not yet serving server (port 0: any free port; see .server_address).
    A busy port is a UsageError (one line, exit 2), not a traceback."""
    try:
        return DashboardServer(Path(results_dir), (host, port), live_interval_ms)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is busy (another dashboard or program "
                             "uses it); pick another with --port") from None
        raise


def serve(results_dir: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          echo: Callable[[str], object] | None = None) -> None:
    """Serve until Ctrl-C."""
    try:
        srv = make_server(results_dir, host, port)
    except OSError as e:  # port taken or not ours to bind: one line, exit 2
        raise UsageError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror})")\
            from None
    h, p = srv.server_address[:2]
    if echo:
        echo(f"harness dashboard: http://{h}:{p}/  (results: {srv.results_dir}; Ctrl-C stops)")
    try:
        srv.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
