"""The single-node swarm the orchestrated strategy runs on: initialised by the harness when
none exists (marked on the swarm's own spec), left again once nothing of anyone's uses it.
Used by swarm.py and by the clean-up sweep (cleanup.py) next to it; it
depends on nothing but the Docker client and the labels."""

from __future__ import annotations

import contextlib
from typing import Any

from harness.deploy.base import MANAGED_LABEL
from harness.errors import PrerequisiteError

SWARM_INIT_LABEL = "harness.swarm-initialised-by"  # run id; on the swarm's own spec
GWBRIDGE_LABEL = "harness.gwbridge-existed"  # "true"/"false" before the harness's init
GWBRIDGE = "docker_gwbridge"


def ensure_swarm(client: Any, run_id: str) -> bool:
    """Make this node a swarm manager; True when the harness initialised the swarm now."""
    import docker.errors

    info = client.info().get("Swarm") or {}
    state = info.get("LocalNodeState", "inactive")
    if state == "active":
        if not info.get("ControlAvailable"):
            raise PrerequisiteError("this Docker node is a swarm worker; the orchestrated "
                                    "strategy needs a manager node")
        return False
    if state != "inactive":
        raise PrerequisiteError(f"this node's swarm state is {state!r}; fix it first "
                                "(docker swarm leave --force, if it is yours)")
    gw_existed = bool(client.networks.list(names=[GWBRIDGE]))
    try:
        client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377",
                          labels={MANAGED_LABEL: "true", SWARM_INIT_LABEL: run_id,
                                  GWBRIDGE_LABEL: str(gw_existed).lower()})
    except docker.errors.APIError as e:
        if "already part of a swarm" in str(e):  # someone (another trial) was quicker
            return False
        raise PrerequisiteError(f"docker swarm init failed: {e}") from None
    return True


def leave_swarm_if_ours(client: Any) -> bool:
    """Leave the swarm if the harness initialised it and nobody uses it any more."""
    import docker.errors

    info = client.info().get("Swarm") or {}
    if info.get("LocalNodeState") != "active" or not info.get("ControlAvailable"):
        return False
    client.swarm.reload()
    labels = (client.swarm.attrs.get("Spec") or {}).get("Labels") or {}
    if labels.get(MANAGED_LABEL) != "true" or SWARM_INIT_LABEL not in labels:
        return False  # not ours: never leave someone else's swarm
    if client.services.list():
        return False
    others = [n for n in client.networks.list(filters={"driver": "overlay"})
              if n.name != "ingress"]
    if others:  # a trial of another run is between creating its network and its service
        return False
    try:
        client.swarm.leave(force=True)
    except docker.errors.APIError as e:
        if "not part of a swarm" in str(e):
            return False
        raise
    if labels.get(GWBRIDGE_LABEL) == "false":
        # swarm state the harness created: the bridge every swarm container used
        with contextlib.suppress(docker.errors.APIError):
            for n in client.networks.list(names=[GWBRIDGE]):
                n.reload()
                if not n.attrs.get("Containers"):
                    n.remove()
    return True
