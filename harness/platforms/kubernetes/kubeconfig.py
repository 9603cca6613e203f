"""Which cluster, and how to authenticate to it: a kubeconfig, parsed (pure but for reading
the files it names).

Where it comes from, first match wins (as kubectl does, minus merging several files):
`--kubeconfig PATH` (or the scenario's `kubernetes.kubeconfig`), the first existing file of
the KUBECONFIG environment variable (a colon-separated list), `~/.kube/config`, and last
the local cluster's (`scripts/k8s-local.sh up` writes `$HARNESS_K8S_STATE/kubeconfig`,
default /var/lib/harness-k8s), so `up` then `harness run --platform kubernetes` just works.

What is understood of the current context's cluster and user: `server`,
`certificate-authority[-data]`, `insecure-skip-tls-verify`, `token` / `tokenFile`,
`client-certificate[-data]` / `client-key[-data]`. Exec and auth-provider plugins are not
run (they would execute arbitrary commands from the file); such a user is reported as
unsupported instead of silently connecting without credentials.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import PrerequisiteError

DEFAULT_PATH = Path("~/.kube/config")
LOCAL_STATE = "/var/lib/harness-k8s"  # scripts/k8s-local.sh's state folder (its default)


@dataclass(frozen=True)
class KubeConfig:
    server: str  # https://HOST:PORT
    source: str  # the file it came from (for messages)
    context: str = ""
    namespace: str = "default"
    token: str | None = None
    ca_data: bytes | None = None  # PEM
    client_cert_data: bytes | None = None  # PEM
    client_key_data: bytes | None = None  # PEM
    insecure: bool = False

    def describe(self) -> str:
        auth = ("token" if self.token else "client certificate" if self.client_cert_data
                else "no credentials")
        tls = "TLS not verified" if self.insecure else "TLS verified" \
            if self.ca_data else "TLS verified by the system's CAs"
        return f"{self.server} (context {self.context or '-'}, {auth}, {tls})"


def find_kubeconfig(explicit: str | Path | None = None,
                    env: Mapping[str, str] | None = None,
                    home: Path | None = None) -> Path | None:
    """The kubeconfig file to use, or None when there is none (no cluster configured)."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise PrerequisiteError(f"--kubeconfig {explicit}: no such file")
        return p
    env = os.environ if env is None else env
    for part in (env.get("KUBECONFIG") or "").split(os.pathsep):
        if part and Path(part).expanduser().is_file():
            return Path(part).expanduser()
    default = (home / ".kube" / "config") if home is not None else DEFAULT_PATH.expanduser()
    if default.is_file():
        return default
    local = Path(env.get("HARNESS_K8S_STATE") or LOCAL_STATE) / "kubeconfig"
    return local if local.is_file() else None


def _named(items: Any, name: str, what: str, source: str) -> dict[str, Any]:
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name:
            body = item.get(what)
            return body if isinstance(body, dict) else {}
    raise PrerequisiteError(f"{source}: no {what} named {name!r}")


def _pem(body: Mapping[str, Any], key: str, base: Path, source: str) -> bytes | None:
    """`<key>-data` (base64 PEM) or `<key>` (a file, relative to the kubeconfig's folder)."""
    data = body.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode("".join(str(data).split()), validate=True)
        except ValueError:
            raise PrerequisiteError(f"{source}: {key}-data is not base64") from None
    path = body.get(key)
    if path:
        p = Path(str(path)).expanduser()
        p = p if p.is_absolute() else base / p
        try:
            return p.read_bytes()
        except OSError as e:
            raise PrerequisiteError(f"{source}: {key} {p}: {e.strerror}") from None
    return None


def parse_kubeconfig(text: str, source: str = "kubeconfig", base: Path | None = None,
                     context: str | None = None) -> KubeConfig:
    """The current (or the named) context's cluster and user (pure but for named files)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PrerequisiteError(f"{source}: not YAML ({e.__class__.__name__})") from None
    if not isinstance(doc, dict):
        raise PrerequisiteError(f"{source}: not a kubeconfig (no mapping)")
    base = base or Path(".")
    ctx_name = context or doc.get("current-context") or ""
    if not ctx_name:
        contexts = doc.get("contexts") or []
        if len(contexts) != 1:
            raise PrerequisiteError(f"{source}: no current-context")
        ctx_name = contexts[0].get("name", "")
    ctx = _named(doc.get("contexts"), ctx_name, "context", source)
    cluster = _named(doc.get("clusters"), str(ctx.get("cluster", "")), "cluster", source)
    user_name = ctx.get("user")
    user = _named(doc.get("users"), str(user_name), "user", source) if user_name else {}
    server = str(cluster.get("server") or "")
    if not server.startswith(("https://", "http://")):
        raise PrerequisiteError(f"{source}: cluster {ctx.get('cluster')!r} has no "
                                "https:// server")
    if "exec" in user or "auth-provider" in user:
        raise PrerequisiteError(f"{source}: user {user_name!r} authenticates through an "
                                "exec/auth-provider plugin, which the harness does not run; "
                                "use a token or a client certificate")
    token = user.get("token")
    if not token and user.get("tokenFile"):
        tf = Path(str(user["tokenFile"])).expanduser()
        try:
            token = (tf if tf.is_absolute() else base / tf).read_text().strip()
        except OSError as e:
            raise PrerequisiteError(f"{source}: tokenFile {tf}: {e.strerror}") from None
    return KubeConfig(
        server=server.rstrip("/"), source=source, context=str(ctx_name),
        namespace=str(ctx.get("namespace") or "default"),
        token=str(token) if token else None,
        ca_data=_pem(cluster, "certificate-authority", base, source),
        client_cert_data=_pem(user, "client-certificate", base, source),
        client_key_data=_pem(user, "client-key", base, source),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)))


def load_kubeconfig(explicit: str | Path | None = None,
                    env: Mapping[str, str] | None = None) -> KubeConfig:
    """The kubeconfig the harness uses, or a PrerequisiteError saying none was found."""
    path = find_kubeconfig(explicit, env)
    if path is None:
        raise PrerequisiteError("the kubernetes platform needs a kubeconfig: --kubeconfig "
                                "PATH, KUBECONFIG or ~/.kube/config (for the local test "
                                "cluster: scripts/k8s-local.sh up)")
    try:
        text = path.read_text()
    except OSError as e:
        raise PrerequisiteError(f"{path}: {e.strerror}") from None
    return parse_kubeconfig(text, str(path), path.parent)
