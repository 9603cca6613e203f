"""`harness metrics serve RUN_DIR`: a finished run's kept metrics behind a Prometheus.

A run made with `--keep-metrics` holds each trial's TSDB blocks in RUN_DIR/metrics/<trial>/
(harness/record/kept_metrics.py). This starts Debian's `prometheus` as a host process on
127.0.0.1:PORT (default 9090, the URL the provisioned Grafana datasource uses;
dashboards/README.md) over a copy of every trial's blocks in one temporary TSDB, so the
run folder is never written to; trials do not overlap in time, and Prometheus merges
overlapping blocks anyway. Nothing is scraped (an empty scrape config), retention is
100 years (the data is old by definition), and the lookback is 10 s instead of 5 min
(the trials were scraped every second). Ctrl-C stops it and removes the copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.deploy import prometheus as prom_api
from harness.errors import PrerequisiteError, UsageError
from harness.platforms.docker.kept_tsdb import blocks
from harness.platforms.local.local_procs import free_port, spawn, stop_groups, tail
from harness.record.kept_metrics import METRICS_DIR

DEFAULT_PORT = 9090
READY_TIMEOUT_S = 60.0
GRAFANA_DASHBOARD = "http://127.0.0.1:3000/d/harness-run"
_CONFIG = "# written by harness metrics serve: nothing to scrape, kept blocks only\n" \
          "global: {scrape_interval: 15s}\nscrape_configs: []\n"


def kept_blocks(run_dir: Path) -> dict[str, list[Path]]:
    """trial → its block folders, for every trial folder under RUN_DIR/metrics."""
    root = run_dir / METRICS_DIR
    if not root.is_dir() or root.is_symlink():
        return {}
    out = {d.name: blocks(d) for d in sorted(root.iterdir())
           if d.is_dir() and not d.is_symlink()}
    return {k: v for k, v in out.items() if v}


def time_range_ms(block_dirs: list[Path]) -> tuple[int, int]:
    """(min, max) sample time of the blocks, from their meta.json (ms since the epoch)."""
    lo, hi = None, None
    for b in block_dirs:
        meta = json.loads((b / "meta.json").read_text())
        lo = meta["minTime"] if lo is None else min(lo, meta["minTime"])
        hi = meta["maxTime"] if hi is None else max(hi, meta["maxTime"])
    if lo is None or hi is None:
        raise ValueError("no blocks")
    return int(lo), int(hi)


@dataclass
class KeptServer:
    """A running Prometheus over a run's kept blocks (stop() removes everything)."""

    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    trials: list[str]
    from_ms: int
    to_ms: int

    def grafana_url(self) -> str:
        return f"{GRAFANA_DASHBOARD}?from={self.from_ms}&to={self.to_ms}"

    def stop(self) -> None:
        stop_groups([self.proc])
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> KeptServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(run_dir: Path, port: int = DEFAULT_PORT) -> KeptServer:
    """Copy the run's blocks into a temporary TSDB and serve it on 127.0.0.1:port
    (0: any free port). UsageError (exit 2) when the run kept nothing or the port is busy."""
    found = kept_blocks(run_dir)
    if not found:
        raise UsageError(f"{run_dir}: no kept metrics (run it with `harness run "
                         f"--keep-metrics`)")
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not os.access(binary, os.X_OK):
        raise PrerequisiteError("prometheus is missing (scripts/setup.sh installs Debian's "
                                "prometheus package)")
    port = port or free_port()
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise UsageError(f"--port {port}: 127.0.0.1:{port} is in use") from None
    all_blocks = [b for bs in found.values() for b in bs]
    lo, hi = time_range_ms(all_blocks)
    data = Path(tempfile.mkdtemp(prefix="harness-metrics-serve-"))
    try:
        tsdb = data / "tsdb"
        tsdb.mkdir()
        for b in all_blocks:
            shutil.copytree(b, tsdb / b.name, symlinks=False)
        (data / "prometheus.yml").write_text(_CONFIG)
        cmd = [binary, f"--config.file={data / 'prometheus.yml'}",
               f"--storage.tsdb.path={tsdb}", "--storage.tsdb.retention.time=100y",
               f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
               # scraped every second: a series 10 s without samples has ended (the
               # default 5 min would draw one trial's last value into the next trial)
               "--query.lookback-delta=10s"]
        run_label = f"metrics-serve-{run_dir.resolve().name}"[:100]
        proc = spawn(cmd, env=os.environ, log_path=data / "prometheus.log",
                     run_id=run_label)
    except BaseException:
        shutil.rmtree(data, ignore_errors=True)
        raise
    server = KeptServer(f"http://127.0.0.1:{port}", data, proc, sorted(found), lo, hi)
    if not prom_api.wait_ready(server.url, READY_TIMEOUT_S) or proc.poll() is not None:
        log = tail(data / "prometheus.log")
        server.stop()
        raise PrerequisiteError(f"prometheus over the kept blocks did not become ready: "
                                f"{log.strip().splitlines()[-1] if log.strip() else 'no log'}")
    return server


def serve(run_dir: Path, port: int, echo: Callable[[str], None],
          wait: Callable[[KeptServer], None] | None = None) -> None:
    """Serve until interrupted (or until `wait` returns: tests)."""
    with start(run_dir, port) as server:
        import datetime as dt

        span = [dt.datetime.fromtimestamp(t / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
                for t in (server.from_ms, server.to_ms)]
        echo(f"serving {len(server.trials)} trial(s) of {run_dir} ({', '.join(server.trials)})"
             f" on {server.url}")
        echo(f"data from {span[0]} to {span[1]} UTC; Grafana (dashboards/README.md): "
             f"{server.grafana_url()}")
        echo("Ctrl-C to stop")
        if wait is not None:
            wait(server)
            return
        try:
            server.proc.wait()
        except KeyboardInterrupt:
            echo("stopped")
