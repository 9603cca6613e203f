"""A small raw-HTTP client of the Kubernetes API (stdlib only: http.client and ssl).

Why not the `kubernetes` PyPI client: it is generated per API version and lacks models
older clusters (1.20) still serve (autoscaling/v2beta2); plain JSON over HTTPS works with
1.20 and current clusters alike, and the harness needs a dozen calls. Like docker-py's
`api/` layer this speaks paths and JSON; the deployer above it speaks the harness's
dataclasses (docs/architecture.md, "Conventions": adapters at the edge).

One HTTPS connection per request: requests are few (the replica set is kept up to date by
a watch, harness/platforms/kubernetes/podwatch.py), and nothing has to be shared between
the threads of a trial. A watch is a long-lived streamed GET (`?watch=1`), one JSON
object per line; `WatchStream.close()` shuts its socket down from any thread, which ends
the reading thread's `readline()` at once.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from harness.errors import DeployError, PrerequisiteError
from harness.platforms.kubernetes.kubeconfig import KubeConfig

DEFAULT_TIMEOUT_S = 10.0


class KubeApiError(DeployError):
    """The API answered with an error status (a `Status` object)."""

    def __init__(self, status: int, reason: str, message: str, path: str) -> None:
        self.status, self.reason, self.path = status, reason, path
        super().__init__(f"Kubernetes API {status} {reason} on {path}: {message}")


def _ssl_context(cfg: KubeConfig) -> ssl.SSLContext:
    if cfg.insecure:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif cfg.ca_data:
        ctx = ssl.create_default_context(cadata=cfg.ca_data.decode("ascii", "replace"))
    else:
        ctx = ssl.create_default_context()
    if cfg.client_cert_data and cfg.client_key_data:
        # ssl loads a certificate chain only from files: write both to a private folder,
        # load them, remove them at once (the context keeps them in memory)
        with tempfile.TemporaryDirectory(prefix="harness-kube-") as d:
            cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
            for path, data in ((cert, cfg.client_cert_data), (key, cfg.client_key_data)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            ctx.load_cert_chain(cert, key)
    return ctx


def path_of(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts if p)


class WatchStream:
    """One streamed watch request; iterate for decoded events, close() from any thread."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse
                 ) -> None:
        self._conn, self._resp = conn, resp
        self._closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while not self._closed:
            try:
                line = self._resp.readline()
            except (OSError, http.client.HTTPException, ValueError):
                return  # closed under us, or the server ended the stream
            if not line:
                return
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                return

    def close(self) -> None:
        self._closed = True
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self._conn.close()


class KubeClient:
    def __init__(self, cfg: KubeConfig, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.cfg = cfg
        self.timeout_s = timeout_s
        u = urlsplit(cfg.server)
        if not u.hostname:
            raise PrerequisiteError(f"{cfg.source}: server {cfg.server!r} has no host")
        self.host, self.scheme = u.hostname, u.scheme
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.base_path = u.path.rstrip("/")
        self._ssl = _ssl_context(cfg) if u.scheme == "https" else None

    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"

    def _connect(self, timeout_s: float) -> http.client.HTTPConnection:
        if self._ssl is not None:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout_s,
                                               context=self._ssl)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)

    def _headers(self, content_type: str | None) -> dict[str, str]:
        h = {"Accept": "application/json", "User-Agent": "harness"}
        if self.cfg.token:
            h["Authorization"] = f"Bearer {self.cfg.token}"
        if content_type:
            h["Content-Type"] = content_type
        return h

    def _url(self, path: str, query: Mapping[str, Any] | None) -> str:
        q = {k: v for k, v in (query or {}).items() if v is not None}
        return self.base_path + path + (f"?{urlencode(q)}" if q else "")

    def request_text(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                     body: Any = None, content_type: str = "application/json",
                     timeout_s: float | None = None) -> tuple[int, str]:
        """(status, body text); raises DeployError when the server cannot be reached."""
        data = None if body is None else json.dumps(body).encode()
        conn = self._connect(timeout_s or self.timeout_s)
        url = self._url(path, query)
        try:
            conn.request(method, url, body=data,
                         headers=self._headers(content_type if data is not None else None))
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        except ssl.SSLError as e:
            raise PrerequisiteError(f"TLS to {self.cfg.server} failed ({e.reason}); check "
                                    f"the CA in {self.cfg.source}") from None
        except (OSError, http.client.HTTPException) as e:
            raise DeployError(f"the Kubernetes API at {self.cfg.server} does not answer "
                              f"({type(e).__name__}: {e})") from None
        finally:
            conn.close()

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json",
                timeout_s: float | None = None) -> Any:
        status, text = self.request_text(method, path, query=query, body=body,
                                         content_type=content_type, timeout_s=timeout_s)
        doc: Any = None
        with contextlib.suppress(json.JSONDecodeError):
            doc = json.loads(text) if text else None
        if status >= 400:
            reason = doc.get("reason", "") if isinstance(doc, dict) else ""
            msg = doc.get("message", "") if isinstance(doc, dict) else text[:200]
            raise KubeApiError(status, reason or http.client.responses.get(status, ""),
                               str(msg), path)
        return doc

    # ── verbs ────────────────────────────────────────────────────────────────────────
    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def create(self, path: str, obj: Mapping[str, Any]) -> Any:
        return self.request("POST", path, body=obj)

    def merge_patch(self, path: str, patch: Mapping[str, Any]) -> Any:
        return self.request("PATCH", path, body=patch,
                            content_type="application/merge-patch+json")

    def delete(self, path: str, *, grace_period_s: int | None = None,
               propagation: str | None = "Background", missing_ok: bool = True) -> Any:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_s is not None:
            body["gracePeriodSeconds"] = grace_period_s
        if propagation:
            body["propagationPolicy"] = propagation
        try:
            return self.request("DELETE", path, body=body)
        except KubeApiError as e:
            if missing_ok and e.status == 404:
                return None
            raise

    def version(self) -> dict[str, Any]:
        doc = self.get("/version")
        return doc if isinstance(doc, dict) else {}

    def log(self, namespace: str, pod: str, tail_lines: int = 20,
            previous: bool = False) -> str:
        status, text = self.request_text(
            "GET", path_of("api", "v1", "namespaces", namespace, "pods", pod, "log"),
            query={"tailLines": tail_lines, "previous": "true" if previous else None})
        return text if status == 200 else ""

    def watch(self, path: str, *, resource_version: str, timeout_s: int = 300,
              **query: Any) -> WatchStream:
        """Open a watch from `resource_version`; the server ends it after `timeout_s`."""
        q = {**query, "watch": "1", "resourceVersion": resource_version,
             "allowWatchBookmarks": "true", "timeoutSeconds": timeout_s}
        conn = self._connect(timeout_s + 30.0)
        try:
            conn.request("GET", self._url(path, q), headers=self._headers(None))
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise DeployError(f"watch {path}: {type(e).__name__}: {e}") from None
        if resp.status != 200:
            text = resp.read().decode("utf-8", "replace")
            conn.close()
            raise KubeApiError(resp.status, resp.reason, text[:200], path)
        return WatchStream(conn, resp)


def kube_client(kubeconfig: str | os.PathLike[str] | None = None,
                timeout_s: float = DEFAULT_TIMEOUT_S) -> KubeClient:
    """A client of the configured cluster, checked with GET /version (PrerequisiteError
    naming the server when it does not answer)."""
    from harness.platforms.kubernetes.kubeconfig import load_kubeconfig

    client = KubeClient(load_kubeconfig(kubeconfig), timeout_s)
    try:
        client.version()
    except KubeApiError as e:
        if e.status in (401, 403):
            raise PrerequisiteError(f"the Kubernetes API at {client.cfg.server} refused the "
                                    f"credentials of {client.cfg.source} ({e.status})") \
                from None
        raise
    except DeployError as e:
        raise PrerequisiteError(f"{e} (kubeconfig {client.cfg.source}; for the local "
                                "test cluster: scripts/k8s-local.sh up)") from None
    return client
