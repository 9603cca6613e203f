"""`harness clean` and the second Ctrl-C: remove everything labelled as the harness's.

Docker objects carry `harness.managed=true` / `harness.run=<id>` labels; host processes
(local platform, load generators) carry the same as environment variables.
"""

from __future__ import annotations

import threading

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
