"""Any image with an HTTP port runs: a 2 MB image without python, on all three kinds.

The image is made here from Debian's busybox-static (`docker import` of a tar holding one
static binary, a document root and a CGI script that answers with the replica's
hostname): no python, no shell of ours, no HEALTHCHECK. Per kind: the replicas become
ready as seen from outside (the prober), they serve through HAProxy, Docker keeps no
health state for them, and a crash has the kind's usual outcome — manual stays one
short, compose restarts the same container, Swarm replaces the task. A second test gives
the same image a ready path it does not have and checks the error says why: HTTP 404,
the container's state and its last log lines.
"""

from __future__ import annotations

import http.client
import io
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.clock import RealClock
from harness.deploy.base import AppSpec, DeploySpec, Replica, ReplicaState
from harness.deploy.registry import create
from harness.errors import DeployError
from harness.platforms.docker.cleanup import leftovers
from harness.platforms.docker.docker_common import DockerDeployerBase

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BUSYBOX = Path("/bin/busybox")
PORT = 9090
READY_S = 90.0
WORK_CGI = b"#!/bin/sh\necho 'Content-Type: text/plain'\necho\n/bin/busybox hostname\n"


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes | None = None, mode: int = 0o755,
                link: str | None = None) -> None:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "www", "www/cgi-bin", "tmp"):
            add(d)
        add("bin/busybox", BUSYBOX.read_bytes())
        add("bin/sh", link="busybox")
        add("www/readyz", b"ok\n", 0o644)
        add("www/cgi-bin/work", WORK_CGI)
    return buf.getvalue()


@pytest.fixture(scope="module")
def busybox_image(docker_client: Any) -> Iterator[str]:
    if not BUSYBOX.exists():
        pytest.skip("busybox-static is not installed (./scripts/setup.sh installs it)")
    ref = f"harness-test-busybox:{uuid.uuid4().hex[:8]}"
    repo, tag = ref.split(":")
    docker_client.api.import_image_from_data(
        _tar(), repository=repo, tag=tag,
        changes=[f'CMD ["/bin/busybox", "httpd", "-f", "-vv", "-p", "{PORT}", "-h", "/www"]',
                 f"EXPOSE {PORT}", "LABEL harness.managed=true harness.run=t-busybox-image"])
    image = docker_client.images.get(ref)
    assert image.attrs["Size"] < 5_000_000  # the point: a tiny image with nothing in it
    yield ref
    docker_client.images.remove(ref, force=True)


def _spec(run_id: str, image: str, ready_path: str = "/readyz", replicas: int = 2
          ) -> DeploySpec:
    app = AppSpec(image=image, port=PORT, ready_path=ready_path, health_path=ready_path,
                  metrics_path="/metrics", work_path="/cgi-bin/work")
    return DeploySpec(run_id=run_id, trial_id="busybox", app=app, replicas=replicas)


def _work(lb_url: str) -> str | None:
    port = int(lb_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/cgi-bin/work", headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read().decode().strip()
        return body if resp.status == 200 else None
    except OSError:
        return None
    finally:
        conn.close()


def _until(pred: Any, timeout_s: float = READY_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def _reps(d: DockerDeployerBase) -> list[Replica]:
    d._cache = None
    return d.replicas()


@pytest.mark.parametrize("kind", ["manual", "compose", "orchestrated"])
def test_an_image_without_python_runs_on_every_kind(kind: str, busybox_image: str,
                                                    docker_client: Any,
                                                    new_run_id: Any) -> None:
    run_id = new_run_id(f"bb-{kind}")
    d = create("docker", kind, client=docker_client, spec=_spec(run_id, busybox_image),
               on_event=lambda e: None, clock=RealClock())
    assert isinstance(d, DockerDeployerBase)
    try:
        d.deploy()
        ready = d.wait_ready(2, timeout_s=READY_S)
        assert all(r.ready_at is not None and r.started_at is not None
                   and r.ready_at >= r.started_at for r in ready)
        # served through the LB, by both replicas (the CGI answers with the hostname,
        # which is the replica id on every kind)
        ids = {r.id for r in ready}
        seen: set[str] = set()
        assert _until(lambda: (seen.add(_work(d.lb_url()) or "")) or ids <= seen), \
            (ids, seen)
        # no health state in Docker: readiness is observed from outside
        for c in d._app_containers():
            c.reload()
            assert "Health" not in c.attrs["State"], c.attrs["State"]
            assert (c.attrs["Config"].get("Healthcheck") or {}).get("Test") in (
                None, ["NONE"])
        assert not d.explain_unready()  # every replica is ready: nothing to explain

        victim = ready[0]
        d.crash(victim.id)
        if kind == "manual":  # stays dead: one short, for good
            assert _until(lambda: any(r.id == victim.id and r.state == ReplicaState.EXITED
                                      for r in _reps(d)))
            time.sleep(3)
            assert sum(r.state == ReplicaState.READY for r in _reps(d)) == 1
        elif kind == "compose":  # the same container restarted in place, ready again
            assert _until(lambda: any(r.id == victim.id and r.restarts >= 1
                                      and r.state == ReplicaState.READY
                                      and r.started_at != victim.started_at
                                      for r in _reps(d)))
        else:  # Swarm replaces the task with a new one
            assert _until(lambda: len({r.id for r in _reps(d)
                                       if r.state == ReplicaState.READY} - {victim.id}) == 2)
    finally:
        d.teardown()
    assert leftovers(docker_client, run_id) == []


def test_unready_replicas_explain_themselves(busybox_image: str, docker_client: Any,
                                            new_run_id: Any) -> None:
    run_id = new_run_id("bb-unready")
    d = create("docker", "manual", client=docker_client,
               spec=_spec(run_id, busybox_image, ready_path="/not-there", replicas=1),
               on_event=lambda e: None, clock=RealClock())
    assert isinstance(d, DockerDeployerBase)
    try:
        d.deploy()
        # wait until the prober has answers, so the explanation has something to say
        assert _until(lambda: any(d._probes_of(r.address) for r in _reps(d) if r.address))
        with pytest.raises(DeployError) as err:
            d.wait_ready(1, timeout_s=2)
    finally:
        d.teardown()
    text = str(err.value)
    assert "0 of 1 replicas ready" in text
    assert "container running" in text and "last probe: http 404" in text
    assert "last log lines:" in text and "/not-there" in text  # httpd -vv logs requests
    assert leftovers(docker_client, run_id) == []
