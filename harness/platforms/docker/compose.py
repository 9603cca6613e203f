"""`compose` on Docker: the repository's docker-compose.yml, driven by Compose itself.

`docker compose` (the v2 plugin) when it exists, `docker-compose` (v1) otherwise — the
command lines are the same for what we use. One project per trial
(`harness-<run>-<trial>`), `up -d --no-recreate --scale app=N`, restart policy `always`:
a crashed replica is restarted in place by Docker (same container, RestartCount + 1, with
Docker's 100 ms…1 min back-off). HAProxy finds replicas through Docker's embedded DNS
(`server-template` + `resolvers`), Prometheus through `dns_sd_configs` on the name `app`.

The generated configs (haproxy.cfg, prometheus.yml, app.env) live in a per-trial
directory under /tmp/harness-deploy-<uid> that the compose file bind-mounts (HARNESS_CONFIG_DIR);
everything else the file needs comes in as HARNESS_* environment variables.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from harness.clock import Clock
from harness.deploy import haproxy, prometheus
from harness.deploy.base import DeploySpec, EventSink
from harness.errors import DeployError, PrerequisiteError
from harness.platforms.docker.docker_common import DockerDeployerBase, remove_containers, safe_name
from harness.platforms.docker.docker_objects import (
    APP_IMAGE,
    LB_ALIAS,
    app_env,
    harness_user,
    write_text,
)

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "assets" / "docker-compose.yml"
DEFAULTS_DIR = Path(__file__).resolve().parent / "compose_defaults"
SERVICE = "app"
COMMAND_TIMEOUT_S = 180.0


@functools.cache
def compose_command() -> tuple[str, ...]:
    """`docker compose` if the v2 plugin answers, else `docker-compose` (v1)."""
    for cmd in (("docker", "compose"), ("docker-compose",)):
        if shutil.which(cmd[0]) is None:
            continue
        try:
            r = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        if r.returncode == 0:
            return cmd
    raise PrerequisiteError("neither `docker compose` (v2) nor `docker-compose` (v1) is "
                            "installed (apt-get install docker-compose)")


def project_name(run_id: str, trial_id: str) -> str:
    """Compose v1 keeps only [a-z0-9_-]; v2 also wants a letter or digit first."""
    return safe_name("harness", run_id, trial_id, max_len=60)


def write_configs(directory: Path, spec: DeploySpec,
                  settings: haproxy.HAProxySettings | None = None,
                  scrape_interval_s: float = 1.0,
                  lb_scrape_interval_s: float | None = None) -> None:
    """haproxy/haproxy.cfg, prometheus/prometheus.yml and app.env for one project."""
    (directory / "haproxy").mkdir(parents=True, exist_ok=True)
    (directory / "prometheus").mkdir(parents=True, exist_ok=True)
    settings = settings or haproxy.HAProxySettings(ready_path=spec.app.ready_path)
    write_text(directory / "haproxy" / "haproxy.cfg",
               haproxy.render_config(haproxy.DnsServers(SERVICE, spec.app.port), settings))
    write_text(directory / "prometheus" / "prometheus.yml",
               prometheus.render_config(app_dns_name=SERVICE, app_port=spec.app.port,
                                        lb_target=f"{LB_ALIAS}:{haproxy.STATS_PORT}",
                                        metrics_path=spec.app.metrics_path,
                                        scrape_interval_s=scrape_interval_s,
                                        lb_scrape_interval_s=lb_scrape_interval_s))
    write_text(directory / "app.env",
               "".join(f"{k}={v}\n" for k, v in sorted(app_env(spec).items())))


class ComposeDeployer(DockerDeployerBase):
    kind = "compose"

    def __init__(self, client: Any, spec: DeploySpec, on_event: EventSink, clock: Clock,
                 *, compose_file: Path = COMPOSE_FILE,
                 command: tuple[str, ...] | None = None, **options: Any) -> None:
        super().__init__(client, spec, on_event, clock, **options)
        self.compose_file = compose_file
        self._command = command
        self.project = project_name(spec.run_id, spec.trial_id)
        self.network_name = f"{self.project}_default"

    # ── compose command lines ──────────────────────────────────────────────────────
    def _env(self) -> dict[str, str]:
        assert self.workdir is not None
        app = self.spec.app
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
        env.update({
            "HARNESS_RUN_ID": self.spec.run_id, "HARNESS_TRIAL_ID": self.spec.trial_id,
            "HARNESS_APP_IMAGE": app.image or APP_IMAGE,
            "HARNESS_HAPROXY_IMAGE": self.lb_image,
            "HARNESS_PROMETHEUS_IMAGE": self.prometheus_image,
            "HARNESS_CONFIG_DIR": str(self.workdir),
            "HARNESS_PROMETHEUS_DATA": str(self._prometheus_data()),
            "HARNESS_PROMETHEUS_USER": harness_user(),
            "HARNESS_PROMETHEUS_RETENTION": self._prometheus_retention(),
            "HARNESS_LB_RUN_DIR": str(self.workdir / "haproxy-run"),
            # empty: Docker picks free ports (on 127.0.0.1, as the file says)
            "HARNESS_LB_PORT": "", "HARNESS_STATS_PORT": "", "HARNESS_PROMETHEUS_PORT": "",
            "COMPOSE_PROJECT_NAME": self.project,
        })
        return env

    def compose(self, *args: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
        cmd = [*(self._command or compose_command()), "-p", self.project,
               "-f", str(self.compose_file), *args]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                               env=self._env(), cwd=self.compose_file.parent,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeployError(f"`{' '.join(cmd[:2])} {' '.join(args)}` took more than "
                              f"{timeout_s:.0f} s") from None
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-8:]
            raise DeployError(f"`{' '.join(args)}` failed ({r.returncode}): "
                              + " | ".join(tail))
        return r.stdout

    # ── Deployer hooks ─────────────────────────────────────────────────────────────
    def _deploy(self) -> None:
        assert self.workdir is not None
        write_configs(self.workdir, self.spec, self.haproxy_settings, self.scrape_interval_s,
                      self.lb_scrape_interval_s)
        self._api = haproxy.RuntimeAPI(self.workdir / "haproxy-run" / haproxy.SOCKET_NAME)
        self.compose("up", "-d", "--no-recreate", "--scale",
                     f"{SERVICE}={self.spec.replicas}")
        self._read_aux_ports()

    def _scale(self, replicas: int) -> None:
        # --no-recreate: running replicas are left alone; a stopped one (a `kill` fault)
        # is started again, as `up` always does
        self.compose("up", "-d", "--no-recreate", "--scale", f"{SERVICE}={replicas}")

    def _teardown_app(self) -> None:
        if self.workdir is None or not self.workdir.exists():
            return
        try:
            self.compose("down", "--volumes", "--remove-orphans", "--timeout", "2",
                         timeout_s=60)
        except (DeployError, PrerequisiteError):
            # the label sweep after this removes whatever compose could not
            remove_containers(self._trial_containers("app"))
