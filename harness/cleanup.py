"""`harness clean` and the second Ctrl-C: remove everything labelled as the harness's.

Docker objects carry `harness.managed=true` / `harness.run=<id>` labels; host processes
(local platform, load generators) carry the same as environment variables; on the
configured Kubernetes cluster (if any) a run's namespace carries them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from harness import runlock
from harness.platforms.local.local_procs import labelled_processes, sweep_processes


def sweep_everything(run_id: str | None = None, docker_timeout_s: float = 60.0, *,
                     include_live: bool = True) -> list[str]:
    """Kill and remove everything labelled (of `run_id` when given). Without a run id and
    with `include_live` False (`harness clean` without `--all`), runs still in progress
    (their `harness run` holds its lock, harness.runlock) are left alone."""
    if run_id is None and not include_live:
        live = runlock.live_run_ids()
        if live:
            return _sweep_dead_runs(live, docker_timeout_s)
    return _sweep(run_id, docker_timeout_s)


def _sweep_dead_runs(live: set[str], docker_timeout_s: float) -> list[str]:
    lines = [f"skipped run {rid}: still in progress (harness clean --all removes it too)"
             for rid in sorted(live)]
    rids = {rid for _pid, rid in labelled_processes(None)}
    try:
        rids |= _docker_run_ids()
    except Exception as e:
        lines.append(f"docker: not listed ({type(e).__name__}: {e})")
    try:
        rids |= _kubernetes_run_ids()
    except Exception as e:
        lines.append(f"kubernetes: not listed ({type(e).__name__}: {e})")
    # a process or object without a run id cannot be told apart from a live run's: kept
    for rid in sorted(rids - live - {""}):
        lines += _sweep(rid, docker_timeout_s, leave_swarm=False)
    return lines


def _docker_run_ids() -> set[str]:
    import contextlib

    import docker.errors

    from harness.deploy.base import RUN_LABEL
    from harness.platform import docker_client
    from harness.platforms.docker.docker_objects import label_filters, list_containers

    client = docker_client()
    f = label_filters(None, managed=True)
    labels: list[dict[str, Any]] = [c.labels for c in list_containers(client, f)]
    with contextlib.suppress(docker.errors.APIError):  # not a swarm manager: no services
        labels += [(s.attrs.get("Spec") or {}).get("Labels") or {}
                   for s in client.services.list(filters=f)]
    labels += [o.attrs.get("Labels") or {}
               for o in client.networks.list(filters=f) + client.volumes.list(filters=f)]
    return {str(lab[RUN_LABEL]) for lab in labels if RUN_LABEL in lab}


def _kubernetes_run_ids() -> set[str]:
    from harness.platforms.kubernetes.cleanup import configured_client, run_ids

    client = configured_client()
    return run_ids(client) if client is not None else set()


def _sweep(run_id: str | None, docker_timeout_s: float, leave_swarm: bool = True
           ) -> list[str]:
    lines = sweep_processes(run_id)
    result: list[str] = []

    def docker_part() -> None:
        try:
            from harness.platforms.docker.cleanup import sweep_all
            result.extend(sweep_all(run_id, leave_swarm=leave_swarm))
        except Exception as e:  # no engine: the processes were all there was to sweep
            result.append(f"docker: not swept ({type(e).__name__}: {e})")
        try:
            from harness.platforms.kubernetes.cleanup import sweep_all as sweep_kubernetes
            result.extend(sweep_kubernetes(run_id))
        except Exception as e:
            result.append(f"kubernetes: not swept ({type(e).__name__}: {e})")

    # bounded: the second Ctrl-C promises an exit within seconds even if dockerd hangs
    t = threading.Thread(target=docker_part, daemon=True)
    t.start()
    t.join(docker_timeout_s)
    if t.is_alive():
        result.append(f"docker: sweep still running after {docker_timeout_s:g} s; "
                      "run `harness clean` again")
    return lines + result


def sweep_volumes(results_dir: Path, run_id: str | None = None,
                  registry_root: Path | None = None) -> list[str]:
    """`harness clean --volumes`: kept metrics (RUN/metrics/ under results_dir, or only
    that run's), the local registries with their storage (all runs only), and copies a
    killed `harness metrics serve` left in the temporary folder."""
    from harness.platforms.docker.local_registry import sweep as sweep_registries
    from harness.record.kept_metrics import METRICS_DIR

    lines: list[str] = []
    runs = ([results_dir / run_id] if run_id else
            sorted(results_dir.iterdir()) if results_dir.is_dir() else [])
    for run in runs:
        kept = run / METRICS_DIR
        if kept.is_dir() and not kept.is_symlink() and (run / "run.json").is_file():
            shutil.rmtree(kept)
            lines.append(f"removed kept metrics {kept}")
    if run_id is None:
        lines.extend(sweep_registries() if registry_root is None
                     else sweep_registries(registry_root))
        for d in Path(tempfile.gettempdir()).glob("harness-metrics-serve-*"):
            if d.is_dir() and not d.is_symlink() and d.stat().st_uid == os.getuid():
                shutil.rmtree(d, ignore_errors=True)
                lines.append(f"removed {d}")
    return lines
