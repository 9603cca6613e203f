"""`harness clean` and the second Ctrl-C: remove everything labelled as the harness's.

Docker objects carry `harness.managed=true` / `harness.run=<id>` labels; host processes
(local platform, load generators) carry the same as environment variables.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

from harness.deploy.local_procs import sweep_processes


def sweep_everything(run_id: str | None = None, docker_timeout_s: float = 60.0) -> list[str]:
    lines = sweep_processes(run_id)
    result: list[str] = []

    def docker_part() -> None:
        try:
            from harness.deploy.cleanup import sweep_all
            result.extend(sweep_all(run_id))
        except Exception as e:  # no engine: the processes were all there was to sweep
            result.append(f"docker: not swept ({type(e).__name__}: {e})")

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
    from harness.deploy.local_registry import sweep as sweep_registries
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
