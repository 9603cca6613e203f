"""The trial runtime for platforms with real replicas (docker, local): the real clock, one
thread per activity (fault timeline, autoscaler, replica watcher) and the Locust child
process as the load. The trial loop itself is harness/trial.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.autoscale.external import ControlLoop
from harness.autoscale.metrics import scrape_options
from harness.autoscale.source import MetricSource
from harness.clock import Clock, RealClock
from harness.deploy.base import (
    ContainerReplicas,
    Deployer,
    DeployEvent,
    DeploySpec,
    ReadinessDiagnostics,
    ReplicaState,
)
from harness.errors import DeployError
from harness.faults.timeline import FaultTimeline
from harness.platform import Platform
from harness.record.host import HostSampler
from harness.record.trial_record import Counts, TrialRecord
from harness.scenario.loader import LoadedScenario
from harness.scenario.models import Strategy

READY_TIMEOUT_S = 90.0
PROGRESS_EVERY_S = 5
JOIN_TIMEOUT_S = 10.0


def make_deployer(plat: Platform, strategy: Strategy, spec: DeploySpec,
                  on_event: Any, clock: Clock, keep_metrics_dir: Path | None = None
                  ) -> Deployer:
    from harness.deploy import registry

    extra: dict[str, Any] = {"emit_replica_events": False} if plat.name == "local" else {}
    extra.update(scrape_options(strategy.autoscaler))
    extra.update(plat.deploy_options)
    return registry.create(plat.name, strategy.kind, spec=spec, on_event=on_event,
                           clock=clock,
                           client=plat.kube if plat.name == "kubernetes" else plat.docker,
                           restart_delay_s=strategy.restart_delay_s,
                           registry=plat.registry, keep_metrics_dir=keep_metrics_dir,
                           autoscaler=strategy.autoscaler, **extra)


def ready_count(deployer: Deployer) -> int:
    return sum(r.state == ReplicaState.READY for r in deployer.replicas())


def wait_ready(deployer: Deployer, n: int, clock: Clock, stop: threading.Event,
               timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = clock.now() + timeout_s
    while not stop.is_set():
        ready = ready_count(deployer)
        if ready >= n:
            return
        if clock.now() > deadline:
            why = ""
            if isinstance(deployer, ReadinessDiagnostics):  # say why, not only how many
                why = " " + " ".join(deployer.explain_unready())
            raise DeployError(f"only {ready} of {n} replicas became ready within "
                              f"{timeout_s:.0f} s.{why}")
        stop.wait(0.25)


def counts_of(deployer: Deployer, **measured: Any) -> Counts:
    replicas = deployer.replicas()
    running = sum(r.state in (ReplicaState.READY, ReplicaState.STARTING,
                              ReplicaState.PAUSED) for r in replicas)
    ready = sum(r.state == ReplicaState.READY for r in replicas)
    return Counts(desired=deployer.desired(), running=running, ready=ready, **measured)


def replica_cpu_meter(deployer: Deployer, clock: Clock) -> Callable[[], float | None]:
    """replicas_cpu_pct per second, where the deployer names its containers (Docker)."""
    if not isinstance(deployer, ContainerReplicas):
        return lambda: None
    ids = deployer.container_ids
    from harness.platforms.docker.cgroups import ContainerCpu

    meter = ContainerCpu(clock)

    def sample() -> float | None:
        try:
            return meter.sample(ids())
        except Exception:  # a measurement never breaks a trial
            return None

    return sample


class RealRuntime:
    """A trial on real replicas, on the real clock."""

    progress_every_s = PROGRESS_EVERY_S

    def __init__(self, plat: Platform, loaded: LoadedScenario, trial: int, *,
                 workers: int | None, clock: Clock | None = None) -> None:
        self.plat, self.loaded, self.trial, self.workers = plat, loaded, trial, workers
        self.clock: Clock = clock or RealClock()
        self.warmup_rate = 0.0
        self.duration_s = 0.0
        self._stop_threads = threading.Event()
        self._threads: list[threading.Thread] = []
        self._load: Any = None
        self._watcher: Any = None
        self._rec: TrialRecord | None = None

    def describe(self) -> str:
        return ""

    def make_deployer(self, strategy: Strategy, spec: DeploySpec, rec: TrialRecord
                      ) -> Deployer:
        self._rec = rec
        kept = rec.recorder.kept
        return make_deployer(self.plat, strategy, spec, self._on_event, self.clock,
                             kept.trial_dir(spec.trial_id) if kept is not None else None)

    def _on_event(self, ev: DeployEvent) -> None:
        if self._rec is not None:
            self._rec.deploy_event(ev)

    def wait_ready(self, deployer: Deployer, n: int, stop: threading.Event) -> None:
        wait_ready(deployer, n, self.clock, stop)
        if stop.is_set():
            return
        from harness.deploy.watch import ReplicaWatcher

        self._watcher = ReplicaWatcher(deployer, self._on_event, self.clock)
        self._watcher.start()

    def start_load(self, deployer: Deployer, rec: TrialRecord,
                   on_second: Any) -> float:
        from harness.load.runner import LoadRun, LoadSpec, requests_per_connection

        sc = self.loaded.scenario
        spec = LoadSpec.from_scenario(
            self.loaded, base_url=deployer.lb_url(), workers=self.workers,
            seed=sc.seed + self.trial, run_id=rec.key["run_id"],
            requests_per_connection=requests_per_connection(
                sc.load.requests_per_connection, self.plat.name))
        self.warmup_rate = spec.warmup_rps
        self.duration_s = spec.duration_s
        host = HostSampler(self.clock)
        replicas_cpu = replica_cpu_meter(deployer, self.clock)

        def second(s: Any) -> None:
            # sampled as each second is delivered: the interval since the previous one
            on_second(s, counts_of(deployer, host=host.sample(),
                                   replicas_cpu_pct=replicas_cpu()))

        def load_event(kind: str, detail: str) -> None:
            rec.event_at(self.clock.now(), kind, "", detail)
            if kind == "worker_lost":
                rec.warn(f"load worker lost ({detail})")

        self._load = LoadRun(spec, on_second=second, on_event=load_event, on_waiting=rec.note)
        self._load.start()
        # the load's t=0 on our monotonic clock (the child reports it after the warm-up
        # was scheduled); events before it get negative t_s
        return float(self._load.t0_monotonic)

    def metric_source(self, deployer: Deployer) -> MetricSource | None:
        return None  # harness/autoscale/wiring.py picks Prometheus or scraping

    def drive(self, timeline: FaultTimeline | None, controller: ControlLoop | None,
              stop: threading.Event) -> None:
        if timeline is not None:
            self._threads.append(threading.Thread(
                target=timeline.run, args=(self._stop_threads,), name="faults", daemon=True))
        if controller is not None:
            self._threads.append(threading.Thread(
                target=controller.run, args=(self._stop_threads,), name="autoscaler",
                daemon=True))
        for t in self._threads:
            t.start()
        self._load.wait(stop=stop)

    def finish(self, timeline: FaultTimeline | None, rec: TrialRecord) -> None:
        self._stop_threads.set()
        if self._load is not None:
            self._load.stop()
        for t in self._threads:
            t.join(timeout=JOIN_TIMEOUT_S)
        if timeline is not None:
            timeline.revert_all()
        if self._watcher is not None:
            self._watcher.stop()
            rec.result.start_to_ready_s = list(getattr(self._watcher, "start_to_ready_s", []))
