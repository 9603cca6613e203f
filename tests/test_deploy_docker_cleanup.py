"""Tear-down leaves nothing labelled behind — after an exception, after SIGINT and SIGTERM
to a running process (also in the middle of a deploy), and, after SIGKILL, once
`harness clean` ran. Real daemon, real processes, no mocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness.clock import RealClock
from harness.deploy.base import AppSpec, DeploySpec
from harness.deploy.registry import create
from harness.errors import DeployError
from harness.platforms.docker.cleanup import leftovers, sweep
from harness.platforms.docker.docker_common import WORKDIR_ROOT, DockerDeployerBase
from tests.test_deploy_docker import APP_ENV, need_images

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() \
    else sys.executable
GONE_WITHIN_S = 15.0  # the bound after SIGINT


def wait_gone(client: Any, run_id: str, timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = leftovers(client, run_id)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.25)


class Demo:
    """`python -m harness.platforms.docker.demo` in its own process, its stdout read by a thread."""

    def __init__(self, kind: str, run_id: str, replicas: int = 2) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
        args = [PYTHON, "-m", "harness.platforms.docker.demo", "--kind", kind, "--run-id", run_id,
                "--replicas", str(replicas), "--max-s", "300"]
        for k, v in APP_ENV.items():
            args += ["--env", f"{k}={v}"]
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("READY "):
                self._ready.set()

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        if not self._ready.wait(timeout_s):
            self.proc.kill()
            pytest.fail(f"demo never became ready: {self.lines[-20:]}")

    def wait_exit(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"demo did not exit within {timeout_s} s: {self.lines[-20:]}")


@pytest.mark.parametrize(("kind", "sig", "code"), [
    ("compose", signal.SIGINT, 130),
    ("manual", signal.SIGINT, 130),
    ("orchestrated", signal.SIGTERM, 143),
], ids=["compose-sigint", "manual-sigint", "orchestrated-sigterm"])
def test_signal_to_running_process_leaves_nothing(kind: str, sig: int, code: int,
                                                  docker_client: Any,
                                                  new_run_id: Any) -> None:
    need_images(docker_client)
    run_id = new_run_id(f"sig{kind[:4]}")
    demo = Demo(kind, run_id)
    try:
        demo.wait_ready()
        assert leftovers(docker_client, run_id), "the demo created nothing?"
        # a pause fault in progress: tear-down must not leave a frozen container
        app = docker_client.containers.list(filters={"label": [
            f"harness.run={run_id}", "harness.role=app"]})
        app[0].pause()
        t0 = time.monotonic()
        demo.proc.send_signal(sig)
        left = wait_gone(docker_client, run_id, GONE_WITHIN_S)
        assert left == [], f"left {GONE_WITHIN_S} s after {signal.Signals(sig).name}: {left}"
        print(f"[{kind}] {signal.Signals(sig).name} → nothing labelled left after "
              f"{time.monotonic() - t0:.1f} s")
        assert demo.wait_exit(30) == code
        assert "TORN_DOWN" in demo.lines
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
        sweep(docker_client, run_id)


def test_sigint_during_deploy_leaves_nothing(docker_client: Any, new_run_id: Any) -> None:
    """Ctrl-C while the deployer is still creating things: what exists is removed."""
    need_images(docker_client)
    run_id = new_run_id("sigdeploy")
    demo = Demo("manual", run_id, replicas=3)
    try:
        # interrupt as soon as the first object exists, i.e. in the middle of deploy()
        deadline = time.monotonic() + 60
        while not leftovers(docker_client, run_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        demo.proc.send_signal(signal.SIGINT)
        left = wait_gone(docker_client, run_id, GONE_WITHIN_S)
        assert left == [], left
        assert demo.wait_exit(30) == 130
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
        sweep(docker_client, run_id)


def test_sigkill_then_harness_clean(docker_client: Any, new_run_id: Any) -> None:
    """SIGKILL leaves everything behind; `harness clean --run` removes exactly that run."""
    need_images(docker_client)
    run_id = new_run_id("sigkill")
    other = new_run_id("bystander")
    # a labelled object of another run that must survive the clean
    bystander = docker_client.networks.create(f"harness-{other}", labels={
        "harness.managed": "true", "harness.run": other})
    demo = Demo("compose", run_id)
    try:
        demo.wait_ready()
        demo.proc.send_signal(signal.SIGKILL)
        demo.proc.wait(timeout=10)
        time.sleep(1)
        assert leftovers(docker_client, run_id), "SIGKILL should leave objects behind"
        harness = str(ROOT / ".venv" / "bin" / "harness")
        cmd = [harness, "clean", "--run", run_id] if os.path.exists(harness) else \
            [PYTHON, "-c", "from harness.platforms.docker.cleanup import sweep_all;"
                           f"[print(x) for x in sweep_all({run_id!r})]"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "removed container" in r.stdout
        assert leftovers(docker_client, run_id) == []
        assert leftovers(docker_client, other) == [f"network harness-{other}"]
        assert not any(run_id in p.read_text() for p in
                       WORKDIR_ROOT.glob("*/owner.json"))
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
        sweep(docker_client, run_id)
        bystander.remove()


@pytest.mark.parametrize("kind", ["manual", "compose", "orchestrated"])
def test_exception_during_deploy_leaves_nothing(kind: str, docker_client: Any,
                                                new_run_id: Any) -> None:
    """Prometheus' image is wrong (the app image cannot run Prometheus' arguments):
    deploy() fails after the network, the replicas and the LB exist; teardown (as the
    run loop's `finally` calls it) removes all of them."""
    need_images(docker_client)
    run_id = new_run_id(f"exc{kind[:4]}")
    spec = DeploySpec(run_id=run_id, trial_id=f"{kind}-1", app=AppSpec(env=APP_ENV),
                      replicas=2)
    d = create("docker", kind, client=docker_client, spec=spec, on_event=lambda e: None,
               clock=RealClock(), prometheus_image="harness-app:latest",
               deploy_timeout_s=30.0)
    assert isinstance(d, DockerDeployerBase)
    try:
        with pytest.raises(DeployError):
            d.deploy()
        assert leftovers(docker_client, run_id), "the failure should come mid-deploy"
    finally:
        d.teardown()
    assert leftovers(docker_client, run_id) == []
    d.teardown()  # idempotent


def test_exception_after_deploy_leaves_nothing(docker_client: Any, new_run_id: Any) -> None:
    need_images(docker_client)
    run_id = new_run_id("excafter")
    spec = DeploySpec(run_id=run_id, trial_id="manual-1", app=AppSpec(env=APP_ENV),
                      replicas=1)
    d = create("docker", "manual", client=docker_client, spec=spec,
               on_event=lambda e: None, clock=RealClock())
    assert isinstance(d, DockerDeployerBase)
    with pytest.raises(RuntimeError, match="boom"), d:
        d.deploy()
        raise RuntimeError("boom")
    assert leftovers(docker_client, run_id) == []
