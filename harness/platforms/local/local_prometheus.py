"""Prometheus as a host process for the local platform: config, targets file, command.

Replicas are discovered through `file_sd_configs`: the deployer rewrites one JSON targets
file atomically (write + rename, which Prometheus' file watcher sees as one change) on
every replica change, and Prometheus also re-reads it every second. Each target carries a
`replica` label (the replica id), so a query can be mapped back to replicas either by
that label or by `instance` (`127.0.0.1:PORT`, see `LocalDeployer.instance_of`).

Prometheus' discovery manager hands target changes to the scrape manager at most every
5 s (a fixed `updatert` in Prometheus 2.x), so a new replica's first series appears
~4–6 s after it started — the same lag measured for DNS discovery on Docker.
The autoscaler treats a replica without a series as the HPA treats a pod without metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import yaml

from harness.deploy.prometheus import lb_job_timing, timing
from harness.fsutil import atomic_write

APP_JOB = "app"
LB_JOB = "haproxy"


def render_config(*, targets_file: Path, exporter_port: int, metrics_path: str = "/metrics",
                  scrape_interval_s: float = 1.0,
                  lb_scrape_interval_s: float | None = None) -> str:
    """prometheus.yml text (pure); the timing is the docker platform's (prometheus.py)."""
    glob = timing(scrape_interval_s)
    cfg = {
        "global": {**glob, "evaluation_interval": glob["scrape_interval"]},
        "scrape_configs": [
            {"job_name": APP_JOB, "metrics_path": metrics_path,
             "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}]},
            {"job_name": LB_JOB, "metrics_path": "/metrics",
             **lb_job_timing(lb_scrape_interval_s),
             "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]},
        ],
    }
    return "# written by harness (local platform)\n" + yaml.safe_dump(cfg, sort_keys=False)


def targets_document(ports_by_replica: Mapping[str, int]) -> list[dict[str, object]]:
    """The file_sd JSON: one group per replica so each gets its own `replica` label."""
    return [{"targets": [f"127.0.0.1:{port}"], "labels": {"replica": rid}}
            for rid, port in sorted(ports_by_replica.items())]


def write_targets(path: Path, ports_by_replica: Mapping[str, int]) -> None:
    """Replace the targets file atomically (a half-written file would drop every target)."""
    atomic_write(path, json.dumps(targets_document(ports_by_replica), indent=1))


def command(binary: str, *, config_file: Path, storage_dir: Path, port: int) -> list[str]:
    return [binary, f"--config.file={config_file}", f"--storage.tsdb.path={storage_dir}",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d",
            "--log.level=warn"]
