"""Prometheus for the kubernetes platform: a host process (as on the local platform,
harness/platforms/local/local_prometheus.py) that scrapes each of the trial's pods
THROUGH the API server's pod proxy.

Why the proxy: the host never sends traffic to pod or cluster addresses
(docs/architecture.md, "Network"), and the API server is the one address of a cluster
the harness is sure to reach — locally on 127.0.0.1:6443, and on a remote cluster too.
Every pod is a target

    https://<api server>/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy<metrics path>

with the kubeconfig's bearer token (a 0600 file in the trial's work folder) or client
certificate, and its CA (or no verification when the kubeconfig says so). The `instance`
label is the pod's "ip:port", so the autoscaler's PromQL presets
(harness/autoscale/metrics.py, `by (instance)`) and the watcher's first-scrape events read
it exactly as on Docker; a `pod` label names the pod.

Discovery is the deployer's pod watch writing a `file_sd` targets file (atomically, on
every change of the pod set), not `kubernetes_sd_configs`: Debian's Prometheus is built
without the Kubernetes discovery (promtool: "field kubernetes_sd_configs not found"), and
the harness watches the pods anyway. Prometheus re-reads the file within a second and
hands changes to its scrapers at most every 5 s, the same lag as its Kubernetes discovery.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from harness.deploy.prometheus import timing
from harness.fsutil import atomic_write
from harness.platforms.kubernetes.kubeconfig import KubeConfig

APP_JOB = "app"  # the job name of every platform (harness/deploy/prometheus.py)


def write_credentials(folder: Path, cfg: KubeConfig) -> dict[str, Any]:
    """Write the token / client certificate / CA Prometheus needs, mode 0600, into
    `folder`; returns the `authorization` and `tls_config` parts of a scrape config."""
    out: dict[str, Any] = {}
    tls: dict[str, Any] = {}
    if cfg.token:
        token = atomic_write(folder / "token", cfg.token, mode=0o600)
        out["authorization"] = {"type": "Bearer", "credentials_file": str(token)}
    if cfg.client_cert_data and cfg.client_key_data:
        tls["cert_file"] = str(atomic_write(folder / "client.crt", cfg.client_cert_data,
                                            mode=0o600))
        tls["key_file"] = str(atomic_write(folder / "client.key", cfg.client_key_data,
                                           mode=0o600))
    if cfg.insecure:
        tls["insecure_skip_verify"] = True
    elif cfg.ca_data:
        tls["ca_file"] = str(atomic_write(folder / "ca.crt", cfg.ca_data, mode=0o600))
    if tls:
        out["tls_config"] = tls
    return out


def targets_document(pods: Iterable[tuple[str, str]], *, namespace: str, app_port: int,
                     api_host_port: str, metrics_path: str = "/metrics"
                     ) -> list[dict[str, Any]]:
    """file_sd groups (pure): one per (pod name, pod IP), scraped at the API server with
    the pod proxy path as its `__metrics_path__`."""
    return [{"targets": [api_host_port],
             "labels": {"instance": f"{ip}:{app_port}", "pod": name,
                        "__metrics_path__": f"/api/v1/namespaces/{namespace}/pods/"
                                            f"{name}:{app_port}/proxy{metrics_path}"}}
            for name, ip in sorted(pods) if ip]


def write_targets(path: Path, groups: list[dict[str, Any]]) -> None:
    """Replace the targets file atomically (a half-written file would drop every target)."""
    atomic_write(path, json.dumps(groups, indent=1))


def render_config(*, targets_file: Path, auth: dict[str, Any], scheme: str = "https",
                  scrape_interval_s: float = 1.0) -> str:
    """prometheus.yml text (pure; tests run `promtool check config` on it)."""
    glob = timing(scrape_interval_s)
    cfg: dict[str, Any] = {
        "global": {**glob, "evaluation_interval": glob["scrape_interval"]},
        "scrape_configs": [{
            "job_name": APP_JOB, "scheme": scheme,
            "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
            **auth}],
    }
    return "# written by harness (kubernetes platform)\n" + yaml.safe_dump(cfg,
                                                                           sort_keys=False)
