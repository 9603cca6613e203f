"""Prometheus in a container for the Docker deployers: its config and a tiny API client.

Replicas are found through Docker's embedded DNS (`dns_sd_configs`, type A): the name is
`app` (the compose service, or the network alias every manual replica carries) or
`tasks.<service>` (Swarm). `refresh_interval: 1s` instead of dns_sd's 30 s default, and a
1 s scrape interval, so a new replica is scraped within ~2 s. The `instance` label is the
replica's "ip:port" on the trial's network; the deployers map it back to replica ids
(`instance_of`). HAProxy's own exporter is scraped as job `haproxy`.

The harness queries the HTTP API on the port published on 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import yaml

APP_JOB = "app"  # the same job names as the local platform (local_prometheus.py)
LB_JOB = "haproxy"
PORT = 9090  # inside the container
CONFIG_DIR = "/etc/prometheus"  # the image reads prometheus.yml from here


def timing(scrape_interval_s: float) -> dict[str, str]:
    """scrape_interval and scrape_timeout of a job (or of `global`)."""
    return {"scrape_interval": f"{max(1, round(scrape_interval_s * 1000))}ms",
            # a scrape must end before the next one starts; 80 % of the interval leaves room
            "scrape_timeout": f"{max(1, round(scrape_interval_s * 800))}ms"}


def lb_job_timing(lb_scrape_interval_s: float | None) -> dict[str, str]:
    """The HAProxy job's own timing when it is scraped at another pace than the replicas
    (an autoscaler's scrape_interval_s on an lb_* metric, docs/scenario.md); {}: global."""
    return {} if lb_scrape_interval_s is None else timing(lb_scrape_interval_s)


def render_config(*, app_dns_name: str, app_port: int, lb_target: str,
                  metrics_path: str = "/metrics", scrape_interval_s: float = 1.0,
                  lb_scrape_interval_s: float | None = None,
                  sd_refresh_s: float = 1.0) -> str:
    """prometheus.yml text (pure; tests run `promtool check config` on it)."""
    glob = timing(scrape_interval_s)
    refresh = f"{max(1, round(sd_refresh_s * 1000))}ms"
    cfg: dict[str, Any] = {
        "global": {**glob, "evaluation_interval": glob["scrape_interval"]},
        "scrape_configs": [
            {"job_name": APP_JOB, "metrics_path": metrics_path,
             "dns_sd_configs": [{"names": [app_dns_name], "type": "A", "port": app_port,
                                 "refresh_interval": refresh}]},
            {"job_name": LB_JOB, "metrics_path": "/metrics",
             **lb_job_timing(lb_scrape_interval_s),
             "static_configs": [{"targets": [lb_target]}]},
        ],
    }
    return "# written by harness (docker platform)\n" + yaml.safe_dump(cfg, sort_keys=False)


DATA_DIR = "/prometheus"  # the TSDB inside the container (a bind mount when kept)
# Kept data must outlive the trial: no retention cut while the trial runs.
KEPT_RETENTION = "100y"


def command(retention: str = "1h") -> list[str]:
    """Arguments for the image's prometheus entry point. The admin API is on for the
    snapshot a kept trial takes before tear-down (kept_tsdb.py); the port is published
    on 127.0.0.1 only and lives as long as the trial."""
    return [f"--config.file={CONFIG_DIR}/prometheus.yml", f"--storage.tsdb.path={DATA_DIR}",
            f"--web.listen-address=:{PORT}", f"--storage.tsdb.retention.time={retention}",
            "--web.enable-admin-api", "--log.level=warn"]


class PrometheusError(RuntimeError):
    pass


def _get(url: str, timeout_s: float) -> tuple[int, str]:
    u = urlsplit(url)
    # docs/architecture.md, "Network": the host talks to 127.0.0.1 only
    if u.hostname != "127.0.0.1":
        raise PrometheusError(f"refusing a non-loopback URL {url!r}")
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout_s)
    try:
        conn.request("GET", (u.path or "/") + (f"?{u.query}" if u.query else ""))
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def is_ready(base_url: str, timeout_s: float = 2.0) -> bool:
    try:
        return _get(f"{base_url}/-/ready", timeout_s)[0] == 200
    except OSError:
        return False


def query(base_url: str, promql: str, timeout_s: float = 3.0) -> list[dict[str, Any]]:
    """An instant query's result vector: [{"metric": {...}, "value": [ts, "v"]}, …]."""
    try:
        status, body = _get(f"{base_url}/api/v1/query?{urlencode({'query': promql})}",
                            timeout_s)
    except OSError as e:
        raise PrometheusError(f"{base_url}: {e}") from None
    if status != 200:
        raise PrometheusError(f"HTTP {status}: {body[:200]}")
    doc = json.loads(body)
    if doc.get("status") != "success":
        raise PrometheusError(str(doc.get("error")))
    return list(doc["data"]["result"])


def up_instances(base_url: str, job: str = APP_JOB, timeout_s: float = 3.0) -> dict[str, float]:
    """instance → (wall-clock) time of its latest successful scrape, for targets up now."""
    return {r["metric"].get("instance", ""): float(r["value"][0])
            for r in query(base_url, f'timestamp(up{{job="{job}"}}) and on(instance) '
                                     f'(up{{job="{job}"}} == 1)', timeout_s)}


def wait_ready(base_url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_ready(base_url):
            return True
        time.sleep(0.2)
    return False
