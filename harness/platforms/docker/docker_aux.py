"""The per-trial services next to the replicas on Docker: the HAProxy and Prometheus
containers, the prober's diagnostics and the kept-metrics steps of the tear-down. A mixin
of harness/platforms/docker/docker_common.py's DockerDeployerBase, split out so each file reads in
one sitting; it uses the base's state (client, spec, workdir, names and labels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.deploy import haproxy, prometheus
from harness.deploy.base import (
    Replica,
    ReplicaState,
)
from harness.errors import DeployError
from harness.platforms.docker.docker_objects import (
    LB_ALIAS,
    PROMETHEUS_ALIAS,
    harness_user,
    http_answers,
    label_filters,
    list_containers,
    published_port,
    write_text,
)
from harness.platforms.docker.readiness import (
    container_logs,
    describe_replica,
)


class AuxServices:
    """LB, Prometheus and prober containers of one trial (mixin; see the module doc)."""

    def _render_lb(self, servers: haproxy.StaticServers | haproxy.DnsServers) -> None:
        assert self.workdir is not None
        write_text(self.workdir / "haproxy" / "haproxy.cfg",
                   haproxy.render_config(servers, self.haproxy_settings))
        self._api = haproxy.RuntimeAPI(self.workdir / "haproxy-run" / haproxy.SOCKET_NAME)

    def _render_prometheus(self, app_dns_name: str, lb_target: str) -> None:
        assert self.workdir is not None
        write_text(self.workdir / "prometheus" / "prometheus.yml",
                   prometheus.render_config(app_dns_name=app_dns_name,
                                            app_port=self.spec.app.port,
                                            lb_target=lb_target,
                                            metrics_path=self.spec.app.metrics_path,
                                            scrape_interval_s=self.scrape_interval_s,
                                            lb_scrape_interval_s=self.lb_scrape_interval_s))

    def _lb_mounts(self) -> dict[str, dict[str, str]]:
        assert self.workdir is not None
        return {str(self.workdir / "haproxy"): {"bind": haproxy.CONFIG_DIR, "mode": "ro"},
                str(self.workdir / "haproxy-run"): {"bind": haproxy.RUN_DIR, "mode": "rw"}}

    def _prometheus_mounts(self) -> dict[str, dict[str, str]]:
        assert self.workdir is not None
        return {str(self.workdir / "prometheus"): {"bind": prometheus.CONFIG_DIR,
                                                   "mode": "ro"},
                str(self._prometheus_data()): {"bind": prometheus.DATA_DIR, "mode": "rw"}}

    def _start_aux(self, network: str, app_dns_name: str) -> None:
        """LB and Prometheus as plain containers (manual, orchestrated)."""
        self._render_prometheus(app_dns_name, f"{LB_ALIAS}:{haproxy.STATS_PORT}")
        for role, image, alias, ports, volumes, command, user in (
                ("lb", self.lb_image, LB_ALIAS, (haproxy.LB_PORT, haproxy.STATS_PORT),
                 self._lb_mounts(), None, None),
                ("prometheus", self.prometheus_image, PROMETHEUS_ALIAS, (prometheus.PORT,),
                 self._prometheus_mounts(), prometheus.command(self._prometheus_retention()),
                 harness_user())):
            c = self.client.api.create_container(
                image, name=self.name(role), labels=self.labels(role), detach=True,
                command=command, ports=list(ports), user=user,
                host_config=self.client.api.create_host_config(
                    port_bindings={p: ("127.0.0.1", None) for p in ports},
                    binds=volumes,
                    restart_policy={"Name": "no"}),
                networking_config=self.client.api.create_networking_config(
                    {network: self.client.api.create_endpoint_config(aliases=[alias])}))
            self.client.api.start(c["Id"])
        self._read_aux_ports()

    def _aux_container(self, role: str) -> Any:
        found = list_containers(
            self.client, label_filters(self.spec.run_id, self.spec.trial_id, role))
        if not found:
            raise DeployError(f"the {role} container of {self.spec.trial_id} is missing")
        return found[0]

    def _read_aux_ports(self) -> None:
        lb = self._aux_container("lb").attrs
        prom = self._aux_container("prometheus").attrs
        lb_port = published_port(lb, haproxy.LB_PORT)
        stats_port = published_port(lb, haproxy.STATS_PORT)
        prom_port = published_port(prom, prometheus.PORT)
        if not (lb_port and stats_port and prom_port):
            raise DeployError("the LB / Prometheus containers published no port on "
                              "127.0.0.1 (did they start?)")
        self._lb_port, self._stats_port, self._prom_port = lb_port, stats_port, prom_port

    def _wait_frontends(self, deadline: float) -> None:
        """Return when the LB answers HTTP, its admin socket answers, and Prometheus is
        ready; fail fast when one of their containers exited (a config error)."""
        pending = {"lb", "admin", "prometheus"}
        while pending:
            if "lb" in pending and http_answers(self.lb_url() + "/", timeout_s=1.0):
                pending.discard("lb")
            if "admin" in pending and self._api is not None and self._api.answers():
                pending.discard("admin")
            url = self.prometheus_url()
            if "prometheus" in pending and url and prometheus.is_ready(url, timeout_s=1.0):
                pending.discard("prometheus")
            if not pending:
                return
            for role in ("lb", "prometheus"):
                c = self._aux_container(role)
                if c.status in ("exited", "dead"):
                    logs = c.logs(tail=15).decode(errors="replace").strip()
                    raise DeployError(f"the {role} container exited at start: {logs}")
            if self._clock.now() > deadline:
                raise DeployError(f"{', '.join(sorted(pending))} did not answer within "
                                  f"{self.deploy_timeout_s:.0f} s")
            self._clock.sleep(0.2)

    def wait_ready(self, n: int, timeout_s: float = 60.0) -> list[Replica]:
        """Block until n replicas are READY (tests, tools); DeployError on timeout."""
        deadline = self._clock.now() + timeout_s
        while True:
            self._cache = None
            reps = self.replicas()
            ready = [r for r in reps if r.state == ReplicaState.READY]
            if len(ready) >= n:
                return ready
            if self._clock.now() > deadline:
                raise DeployError(f"{len(ready)} of {n} replicas ready after {timeout_s} s; "
                                  + " ".join(self.explain_unready()))
            self._clock.sleep(0.2)

    # ── ReadinessDiagnostics ──────────────────────────────────────────────────────
    def explain_unready(self, log_lines: int = 5) -> list[str]:
        """Why replicas are not ready: per unready replica its container state, exit
        code, OOM flag, the prober's last outcomes and its last log lines; and whether
        the prober itself is alive. Best effort: a failing inspect is said, not raised."""
        out: list[str] = []
        self._cache = None
        try:
            reps, by_id = self._snapshot()
        except Exception as e:
            return [f"replicas could not be listed ({type(e).__name__}: {e})"]
        status = self._status.read() if self._status is not None else None
        for r in reps:
            if r.state == ReplicaState.READY:
                continue
            c = by_id.get(r.id)
            st = ((c.attrs.get("State") if c is not None else None) or {})
            probes = self._probes_of(r.address) if r.address else ()
            out.append(describe_replica(r, st, probes, container_logs(c, log_lines)))
        if not reps:
            out.append("no replica container exists")
        if status is not None and status.resolve_error and not status.probes:
            out.append(f"the prober cannot resolve {status.resolve_error}")
        out.extend(self._prober_problem(log_lines))
        return out

    def _prober_problem(self, log_lines: int) -> list[str]:
        try:
            found = self._trial_containers("prober")
        except Exception as e:
            return [f"the prober could not be inspected ({type(e).__name__})"]
        if not found:
            return ["the readiness prober container is missing"]
        c = found[0]
        st = c.attrs.get("State") or {}
        if st.get("Status") == "running":
            return []
        return [f"the readiness prober died (state={st.get('Status')} "
                f"exit_code={st.get('ExitCode')}): {container_logs(c, log_lines)}"]

    # ── tear-down steps ────────────────────────────────────────────────────────────
    def _snapshot_metrics(self) -> None:
        """A kept trial: the head and WAL as blocks before Prometheus goes (kept_tsdb.py)."""
        self._metrics_snapshot: str | None = None
        url = self.prometheus_url()
        if self.keep_metrics_dir is not None and url:
            from harness.platforms.docker.kept_tsdb import snapshot

            self._metrics_snapshot = snapshot(url)

    def _finalize_metrics(self) -> None:
        if self.keep_metrics_dir is not None:
            from harness.platforms.docker.kept_tsdb import finalize

            finalize(self.keep_metrics_dir, getattr(self, "_metrics_snapshot", None))

    def _prometheus_data(self) -> Path:
        """The host folder Prometheus writes its TSDB into (it runs as our uid)."""
        assert self.workdir is not None
        if self.keep_metrics_dir is not None:
            self.keep_metrics_dir.mkdir(parents=True, exist_ok=True)
            return self.keep_metrics_dir.resolve()
        data = self.workdir / "prometheus-data"
        data.mkdir(exist_ok=True)
        return data

    def _prometheus_retention(self) -> str:
        return prometheus.KEPT_RETENTION if self.keep_metrics_dir is not None else "1h"
