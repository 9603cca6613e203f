"""Prometheus for the kubernetes platform: a host process (as on the local platform,
harness/platforms/local/local_prometheus.py) that finds the trial's pods with
`kubernetes_sd_configs` and scrapes each one THROUGH the API server's pod proxy.

Why the proxy: the host never sends traffic to pod or cluster addresses
(docs/architecture.md, "Network"), and the API server is the one address of a cluster
the harness is sure to reach — locally on 127.0.0.1:6443, and on a remote cluster too.
Relabelling turns every discovered pod target into

    https://<api server>/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy<metrics path>

with the kubeconfig's bearer token (a 0600 file in the trial's work folder) or client
certificate, and its CA (or no verification when the kubeconfig says so). The `instance`
label stays the pod's "ip:port" (copied before `__address__` is replaced), so the
autoscaler's PromQL presets (harness/autoscale/metrics.py, `by (instance)`) and the
watcher's first-scrape events read it exactly as on Docker; a `pod` label names the pod.

Discovery is limited to the run's namespace and this trial's app pods (a label
selector), and only the app port's container-port target is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

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


def render_config(*, api_server: str, api_host_port: str, namespace: str,
                  pod_selector: str, app_port: int, auth: dict[str, Any],
                  metrics_path: str = "/metrics", scrape_interval_s: float = 1.0,
                  scheme: str = "https") -> str:
    """prometheus.yml text (pure; tests run `promtool check config` on it)."""
    interval = f"{max(1, round(scrape_interval_s * 1000))}ms"
    # a scrape must end before the next one starts; 80 % of the interval leaves room
    timeout = f"{max(1, round(scrape_interval_s * 800))}ms"
    sd: dict[str, Any] = {"role": "pod", "api_server": api_server,
                          "namespaces": {"names": [namespace]},
                          "selectors": [{"role": "pod", "label": pod_selector}], **auth}
    relabel = [
        # one target per container port: keep the app's
        {"source_labels": ["__meta_kubernetes_pod_container_port_number"],
         "regex": str(app_port), "action": "keep"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        # instance = the pod's ip:port, as the docker platform's (before __address__ moves)
        {"source_labels": ["__address__"], "target_label": "instance"},
        {"source_labels": ["__meta_kubernetes_namespace", "__meta_kubernetes_pod_name",
                           "__meta_kubernetes_pod_container_port_number"],
         "separator": ";", "regex": "(.+);(.+);(.+)",
         "target_label": "__metrics_path__",
         "replacement": f"/api/v1/namespaces/${{1}}/pods/${{2}}:${{3}}/proxy{metrics_path}"},
        {"target_label": "__address__", "replacement": api_host_port},
    ]
    cfg: dict[str, Any] = {
        "global": {"scrape_interval": interval, "scrape_timeout": timeout,
                   "evaluation_interval": interval},
        "scrape_configs": [{
            "job_name": APP_JOB, "scheme": scheme, "metrics_path": metrics_path,
            "kubernetes_sd_configs": [sd], "relabel_configs": relabel, **auth}],
    }
    return "# written by harness (kubernetes platform)\n" + yaml.safe_dump(cfg,
                                                                           sort_keys=False)
