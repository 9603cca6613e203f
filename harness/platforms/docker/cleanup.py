"""Remove what the harness left in Docker: every object labelled `harness.managed=true`
(and, when given, `harness.run=<run-id>`), and nothing else.

Used by every deployer's tear-down (for its own trial's labels, as a safety net after the
orderly steps), by `harness clean` (leftovers of a run killed with SIGKILL), and by the
run loop's second Ctrl-C. Order matters: services first (Swarm would otherwise replace
the task containers we remove), then containers (thawed first: a paused container must
never outlive its trial), networks, volumes, the per-trial config directories, and last
the swarm — left only if the harness initialised it (`swarm.py` keeps the marker) and no
service of anyone remains.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from harness.platforms.docker.docker_objects import (
    WORKDIR_ROOT,
    label_filters,
    list_containers,
    remove_containers,
    remove_networks,
    remove_workdirs,
)


def leftovers(client: Any, run_id: str | None = None) -> list[str]:
    """Every labelled object still there, as "kind name" lines (tests, `harness clean`)."""
    import docker.errors

    f = label_filters(run_id, managed=True)
    found = [f"container {c.name}" for c in list_containers(client, f)]
    with contextlib.suppress(docker.errors.APIError):  # not a swarm manager: no services
        found += [f"service {s.name}" for s in client.services.list(filters=f)]
    found += [f"network {n.name}" for n in client.networks.list(filters=f)]
    found += [f"volume {v.name}" for v in client.volumes.list(filters=f)]
    return found


def sweep(client: Any, run_id: str | None, *, trial_id: str | None = None,
          leave_swarm: bool = True, log: Callable[[str], None] | None = None,
          timeout_s: float = 30.0) -> list[str]:
    """Remove the labelled objects; returns what was removed (one line each)."""
    import docker.errors

    done: list[str] = []

    def note(line: str) -> None:
        done.append(line)
        if log:
            log(line)

    f = label_filters(run_id, trial_id, managed=True)
    services: list[Any] = []
    with contextlib.suppress(docker.errors.APIError):
        services = list(client.services.list(filters=f))
    for s in services:
        with contextlib.suppress(docker.errors.NotFound):
            s.remove()
            note(f"removed service {s.name}")
    deadline = time.monotonic() + timeout_s
    while True:
        containers = list(list_containers(client, f))
        for c in containers:
            with contextlib.suppress(docker.errors.NotFound):
                if c.status == "paused":
                    c.unpause()
                    note(f"unpaused container {c.name}")
        remove_containers(containers, log=note)
        # Swarm may still be starting a task of a service removed above: look again
        if not list(list_containers(client, f)) or \
                time.monotonic() > deadline:
            break
        time.sleep(0.3)
    nets = [n.name for n in client.networks.list(filters=f)]
    remove_networks(client, nets, timeout_s=max(1.0, deadline - time.monotonic()), log=note)
    for v in client.volumes.list(filters=f):
        with contextlib.suppress(docker.errors.NotFound):
            v.remove(force=True)
            note(f"removed volume {v.name}")
    if trial_id is None:
        for d in remove_workdirs(run_id, WORKDIR_ROOT):
            note(f"removed directory {d}")
    if leave_swarm:
        from harness.platforms.docker.swarm_state import leave_swarm_if_ours

        if leave_swarm_if_ours(client):
            note("left the swarm the harness had initialised")
    return done


def sweep_all(run_id: str | None = None, leave_swarm: bool = True) -> Iterator[str]:
    """`harness clean`: sweep with a client from the environment, one line per object."""
    from harness.platform import docker_client

    client = docker_client()
    lines = sweep(client, run_id, leave_swarm=leave_swarm)
    yield from lines
    left = leftovers(client, run_id)
    if left:
        yield f"could not remove: {', '.join(left)}"
    elif not lines:
        yield "nothing to clean"
