"""A custom metrics API server (``custom.metrics.k8s.io/v1beta1``) for the real HPA.

Runs as a pod of the trial (python3 of the harness's base image, this file mounted from a
ConfigMap; standard library only) behind a Service that an APIService registers with the
cluster's aggregation layer — the way prometheus-adapter serves Prometheus data to the
HorizontalPodAutoscaler controller (docs/kubernetes.md, "The real HPA").

Why the values are pushed: the run's Prometheus is a host process listening on 127.0.0.1
only, which a pod cannot reach. The harness evaluates the autoscaler's metric (the same
PromQL its own controller uses) once a second and POSTs the per-pod values here through
the API server's pod proxy (``/harness/values``, guarded by a token from a Secret); the
aggregation layer forwards the HPA controller's metric reads here. Every read is logged
with the exact values served, and the same POST answers with the reads since the last one:
that log is what the harness's agreement check feeds its own HPA port.

Values are served in milli-units (``600m``), as the HPA controller reads them
(``Quantity.MilliValue``); a value older than ``--max-age-s`` is not served, so the HPA
counts that pod as missing rather than acting on stale data.
"""

from __future__ import annotations

import argparse
import collections
import hmac
import json
import os
import re
import ssl
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

GROUP = "custom.metrics.k8s.io"
VERSION = "v1beta1"
PREFIX = f"/apis/{GROUP}/{VERSION}"
PUSH_PATH = "/harness/values"
LOG_SIZE = 5000  # reads kept for the harness to collect (hours at one read a second)
MAX_BODY = 1 << 20
_METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")
_PATH = re.compile(rf"^{re.escape(PREFIX)}/namespaces/([a-z0-9-]+)/pods/([^/]+)/([^/]+)$")


# ── label selectors (k8s.io/apimachinery/pkg/labels) ───────────────────────────────────────

def parse_selector(text: str) -> list[tuple[str, str, frozenset[str]]]:
    """'a=b,c!=d,e in (x,y),f,!g' → (key, op, values) requirements; ValueError if malformed.
    Ops: = (also ==), !=, in, notin, exists, !exists."""
    reqs: list[tuple[str, str, frozenset[str]]] = []
    parts: list[str] = []
    depth, cur = 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' in {text!r}")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise ValueError(f"unbalanced '(' in {text!r}")
    parts.append(cur)
    for raw in (p.strip() for p in parts):
        if not raw:
            continue
        if m := re.fullmatch(r"([^\s=!(),]+)\s+(in|notin)\s+\(([^()]*)\)", raw):
            vals = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append((m.group(1), m.group(2), vals))
        elif m := re.fullmatch(r"([^\s=!(),]+)\s*(==|=|!=)\s*([^\s=!(),]*)", raw):
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append((m.group(1), op, frozenset([m.group(3)])))
        elif m := re.fullmatch(r"!\s*([^\s=!(),]+)", raw):
            reqs.append((m.group(1), "!exists", frozenset()))
        elif re.fullmatch(r"[^\s=!(),]+", raw):
            reqs.append((raw, "exists", frozenset()))
        else:
            raise ValueError(f"cannot parse label selector requirement {raw!r}")
    return reqs


def matches(labels: dict[str, str], reqs: list[tuple[str, str, frozenset[str]]]) -> bool:
    for key, op, vals in reqs:
        has, val = key in labels, labels.get(key)
        ok = {"=": has and val in vals, "in": has and val in vals,
              "!=": not has or val not in vals, "notin": not has or val not in vals,
              "exists": has, "!exists": not has}[op]
        if not ok:
            return False
    return True


# ── state ─────────────────────────────────────────────────────────────────────────────────

def milli(value: float) -> int:
    """The value in milli-units, rounded half away from zero (resource.Quantity rounds up
    a finer value when it is read as MilliValue; a push is already at most 1e-9 off)."""
    return int(value * 1000 + (0.5 if value >= 0 else -0.5))


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """The pushed values and the log of reads (thread-safe)."""

    def __init__(self, token: str, max_age_s: float, metrics: tuple[str, ...] = (),
                 clock: Any = time.time) -> None:
        self.token = token
        self.max_age_s = max_age_s
        self.clock = clock
        self.lock = threading.Lock()
        # (namespace, metric) → (pushed at, window_s, [(pod, labels, milli)])
        self.values: dict[tuple[str, str], tuple[float, int, list[tuple[str, dict[str, str],
                                                                     int]]]] = {}
        self.metric_names: set[str] = set(metrics)
        self.log: collections.deque[dict[str, Any]] = collections.deque(maxlen=LOG_SIZE)
        self.seq = 0

    def push(self, doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise ValueError("the body must be a JSON object")
        token = doc.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token, self.token):
            raise PermissionError("bad token")
        ns, metric = doc.get("namespace"), doc.get("metric")
        if not isinstance(ns, str) or not isinstance(metric, str) \
                or not _METRIC_NAME.match(metric):
            raise ValueError("namespace and metric are required")
        rows: list[tuple[str, dict[str, str], int]] = []
        replace = "values" in doc  # without: only collect the reads
        for v in doc.get("values") or []:
            pod, labels, value = v.get("pod"), v.get("labels") or {}, v.get("value")
            if not isinstance(pod, str) or not isinstance(labels, dict) \
                    or not isinstance(value, (int, float)) or value != value:
                raise ValueError(f"bad value entry {v!r}")
            rows.append((pod, {str(k): str(x) for k, x in labels.items()}, milli(value)))
        window = int(doc.get("window_s") or 0)
        since = int(doc.get("since") or 0)
        with self.lock:
            if replace:
                self.values[(ns, metric)] = (self.clock(), window, rows)
                self.metric_names.add(metric)
            reads = [r for r in self.log if r["seq"] > since]
            return {"reads": reads, "next": self.seq, "now": self.clock()}

    def read(self, ns: str, pod: str, metric: str, selector: str, metric_selector: str,
             user: str) -> list[dict[str, Any]]:
        """The MetricValue items for a read; the read is logged with what it served."""
        reqs = parse_selector(selector)
        now = self.clock()
        with self.lock:
            pushed_at, window, rows = self.values.get((ns, metric), (0.0, 0, []))
            fresh = now - pushed_at <= self.max_age_s
            served = [] if not fresh or metric_selector.strip() else [
                (p, m) for p, labels, m in rows
                if (pod == "*" or p == pod) and matches(labels, reqs)]
            self.seq += 1
            self.log.append({"seq": self.seq, "t": now, "namespace": ns, "metric": metric,
                             "pod": pod, "selector": selector, "user": user,
                             "age_s": round(now - pushed_at, 3) if pushed_at else None,
                             "served": {p: m for p, m in served}})
        ts = rfc3339(pushed_at or now)
        return [{"describedObject": {"kind": "Pod", "namespace": ns, "name": p,
                                     "apiVersion": "/v1"},
                 "metricName": metric, "timestamp": ts, "window": window or None,
                 "value": f"{m}m", "selector": None} for p, m in served]

    def resources(self) -> list[dict[str, Any]]:
        with self.lock:
            names = sorted(self.metric_names)
        return [{"name": f"pods/{n}", "singularName": "", "namespaced": True,
                 "kind": "MetricValueList", "verbs": ["get"]} for n in names]


# ── HTTP ──────────────────────────────────────────────────────────────────────────────────

class Handler(BaseHTTPRequestHandler):
    server_version = "harness-metrics-adapter"
    protocol_version = "HTTP/1.1"
    store: Store
    allowed_hosts: frozenset[str]

    def log_message(self, format: str, *args: Any) -> None:
        return  # every read is in the store's log; no line per request on stderr

    def _send(self, status: int, doc: Any) -> None:
        body = json.dumps(doc, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _status(self, code: int, reason: str, message: str) -> None:
        self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "message": message, "reason": reason, "code": code})

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]")
        if name in self.allowed_hosts:
            return True
        self._status(421, "Misdirected", f"host {host!r} is not served here")
        return False

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        u = urlsplit(self.path)
        if u.path in ("/healthz", "/readyz", "/livez"):
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if u.path.rstrip("/") == PREFIX:
            self._send(200, {"kind": "APIResourceList", "apiVersion": "v1",
                             "groupVersion": f"{GROUP}/{VERSION}",
                             "resources": self.store.resources()})
            return
        m = _PATH.match(u.path)
        if not m:
            self._status(404, "NotFound", f"{u.path} is not served (pods metrics only)")
            return
        q = parse_qs(u.query)
        ns, pod, metric = (unquote(g) for g in m.groups())  # the HPA sends '*' as %2A
        try:
            items = self.store.read(ns, pod, metric, (q.get("labelSelector") or [""])[0],
                                    (q.get("metricLabelSelector") or [""])[0],
                                    self.headers.get("X-Remote-User") or "")
        except ValueError as e:
            self._status(400, "BadRequest", str(e))
            return
        if pod != "*" and not items:
            self._status(404, "NotFound", f"no value of {metric} for pod {ns}/{pod}")
            return
        self._send(200, {"kind": "MetricValueList", "apiVersion": f"{GROUP}/{VERSION}",
                         "metadata": {"selfLink": u.path}, "items": items})

    def do_POST(self) -> None:
        try:
            n = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            n = -1
        if not 0 < n <= MAX_BODY:
            self.close_connection = True  # the body's end is unknown: no next request
            self._status(400, "BadRequest", "a JSON body of at most 1 MiB is required")
            return
        body = self.rfile.read(n)  # read before any answer: the connection stays in step
        if not self._host_ok():
            return
        if urlsplit(self.path).path != PUSH_PATH:
            self._status(405, "MethodNotAllowed", "only POST /harness/values")
            return
        try:
            self._send(200, self.store.push(json.loads(body)))
        except PermissionError as e:
            self._status(403, "Forbidden", str(e))
        except (ValueError, TypeError, AttributeError) as e:
            self._status(400, "BadRequest", str(e))


def serve(bind: str, port: int, cert: str, key: str, store: Store,
          allowed_hosts: frozenset[str]) -> ThreadingHTTPServer:
    """A started server (in a daemon thread); ``.shutdown()`` stops it."""
    handler = type("BoundHandler", (Handler,), {"store": store,
                                                "allowed_hosts": allowed_hosts})
    httpd = ThreadingHTTPServer((bind, port), handler)
    httpd.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, name="adapter", daemon=True).start()
    return httpd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=6443)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--metric", action="append", default=[],
                    help="listed in discovery before its first push")
    ap.add_argument("--host", action="append", default=[],
                    help="a Host header name this server answers (also $POD_IP); the API "
                         "server's pod proxy passes on its own client's Host")
    ap.add_argument("--max-age-s", type=float, default=10.0)
    a = ap.parse_args(argv)
    with open(a.token_file, encoding="utf-8") as fh:
        token = fh.read().strip()
    hosts = {h.lower() for h in a.host}
    if os.environ.get("POD_IP"):
        hosts.add(os.environ["POD_IP"])
    store = Store(token, a.max_age_s, tuple(a.metric))
    httpd = serve(a.bind, a.port, a.cert, a.key, store, frozenset(hosts))
    print(f"metrics adapter on https://{a.bind}:{a.port}{PREFIX} for hosts "
          f"{sorted(hosts)}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    httpd.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
