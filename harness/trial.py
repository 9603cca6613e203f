"""One trial, on every platform: deploy → ready → load + faults + autoscaler + recording →
tear down.

This is the only trial loop. What differs between platforms sits behind ``TrialRuntime``:
how replicas are made (Docker, local processes, the queueing model), how time passes (the
real clock with one thread per activity, or a simulated clock stepped tick by tick) and
what generates the load (the Locust child process, or the model's arrival process). The
rows are written by ``harness.record.trial_record.TrialRecord``, the same everywhere.
See docs/architecture.md ("One trial engine").
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any, Protocol

from harness.autoscale.controller import DecisionRow
from harness.autoscale.external import ControlLoop
from harness.autoscale.source import MetricSource
from harness.autoscale.spec import EXTERNAL_POLICIES
from harness.autoscale.wiring import build_controller
from harness.clock import Clock
from harness.deploy.base import AppSpec, Deployer, DeploySpec
from harness.errors import DeployError
from harness.faults.timeline import FaultTimeline, plan
from harness.load.runner import LoadError
from harness.record.histogram import Histogram
from harness.record.trial_record import Counts, Recorder, TrialRecord, TrialResult
from harness.scenario.loader import LoadedScenario
from harness.scenario.models import Strategy

__all__ = ["Counts", "Recorder", "TrialRecord", "TrialResult", "TrialRuntime", "app_spec",
           "run_trial"]

OnSecond = Callable[[Any, Counts], None]


class TrialRuntime(Protocol):
    """One trial's platform side. A new instance per trial (it may hold threads, a world)."""

    clock: Clock
    progress_every_s: int  # how often the progress line is printed
    warmup_rate: float  # the warm-up's rate (rps, or users in the closed model)
    duration_s: float  # the load profile's length (stages or a trace), once load started

    def describe(self) -> str:
        """Appended to the trial's header line (e.g. "; simulated, leastconn")."""
        ...

    def make_deployer(self, strategy: Strategy, spec: DeploySpec, rec: TrialRecord
                      ) -> Deployer:
        """The deployer for this trial (DeployError if this platform cannot)."""
        ...

    def wait_ready(self, deployer: Deployer, n: int, stop: threading.Event) -> None:
        """Until ``n`` replicas are ready (DeployError with the reason if they are not)."""
        ...

    def start_load(self, deployer: Deployer, rec: TrialRecord, on_second: OnSecond
                   ) -> float:
        """Start the load; returns the clock reading of the load's t = 0."""
        ...

    def metric_source(self, deployer: Deployer) -> MetricSource | None:
        """The autoscaler's metric source when the runtime made one; None: wiring decides."""
        ...

    def drive(self, timeline: FaultTimeline | None, controller: ControlLoop | None,
              stop: threading.Event) -> None:
        """Run load, faults and autoscaler together until the load is over (or stop)."""
        ...

    def finish(self, timeline: FaultTimeline | None, rec: TrialRecord) -> None:
        """Stop whatever still runs (load, threads), undo faults; before the tear-down."""
        ...


def app_spec(loaded: LoadedScenario) -> AppSpec:
    a = loaded.scenario.app
    return AppSpec(image=a.image, port=a.port, health_path=a.health_path,
                   ready_path=a.ready_path, metrics_path=a.metrics_path, work_path=a.path,
                   env=dict(a.env), command=tuple(a.command) if a.command else None)


def run_trial(loaded: LoadedScenario, strategy: Strategy, trial: int, runtime: TrialRuntime,
              recorder: Recorder, stop: threading.Event, *,
              echo: Callable[[str], None]) -> TrialResult:
    """Run one strategy × repetition; rows go to the recorder as they are measured."""
    sc = loaded.scenario
    rec = TrialRecord(recorder, strategy.name, trial, runtime.clock, echo)
    spec = DeploySpec(run_id=recorder.run_id, trial_id=f"{strategy.name}-{trial}",
                      app=app_spec(loaded), replicas=strategy.replicas)
    scaler = f", autoscaler {strategy.autoscaler.policy}" if strategy.autoscaler else ""
    echo(f"── trial {strategy.name} #{trial} ({strategy.kind}, {strategy.replicas} replicas"
         f"{scaler}{runtime.describe()})")
    try:
        deployer = runtime.make_deployer(strategy, spec, rec)
    except DeployError as e:
        rec.fail(e)
        return rec.finish()
    progress: list[Progress] = []  # made once the load's length is known (a trace's too)

    def on_second(s: Any, counts: Counts) -> None:
        rec.second(s, counts)
        if not progress:
            progress.append(Progress(echo, rec.label, runtime.duration_s,
                                     runtime.progress_every_s))
        progress[0].second(s, counts.ready, counts.desired)

    timeline: FaultTimeline | None = None
    try:
        deployer.deploy()
        runtime.wait_ready(deployer, strategy.replicas, stop)
        if stop.is_set():
            rec.result.status = "incomplete"
            return rec.finish()
        t0 = runtime.start_load(deployer, rec, on_second)
        rec.set_t0(t0)
        rec.stage_events(sc.load, runtime.warmup_rate)
        planned = plan(sc.faults, strategy.name)
        if planned:
            timeline = FaultTimeline(planned, deployer, runtime.clock, t0,
                                     seed=sc.seed * 1000 + trial,
                                     on_fault=lambda t, k, r, d, f: rec.event(t, k, r, d, f))
        controller = None
        rows: list[DecisionRow] = []

        def decided(row: DecisionRow) -> None:
            rows.append(row)
            rec.decision(dict(row))

        if strategy.autoscaler is not None:
            controller = build_controller(strategy.autoscaler, deployer, runtime.clock, t0,
                                          decided, random.Random(0),
                                          source=runtime.metric_source(deployer))
        runtime.drive(timeline, controller, stop)
        if stop.is_set():
            rec.result.status = "incomplete"
        if strategy.autoscaler is not None and strategy.autoscaler.policy in EXTERNAL_POLICIES:
            from harness.autoscale.agreement import check

            echo("  " + check(rows, strategy.autoscaler).text(rec.label))
    except (DeployError, LoadError) as e:
        rec.fail(e)
    finally:
        try:
            runtime.finish(timeline, rec)
        finally:
            deployer.teardown()
            rec.finish_kept(spec.trial_id)
    return rec.finish()


class Progress:
    """One line every few seconds: a user watching a 5-minute run sees it move."""

    def __init__(self, echo: Callable[[str], None], label: str, duration_s: float,
                 every_s: int) -> None:
        self.echo, self.label, self.duration_s = echo, label, duration_s
        self.every_s = max(1, every_s)
        self.acc = Histogram()
        self.ok = self.failed = 0
        self.offered = 0.0

    def second(self, s: Any, ready: int, desired: int) -> None:
        if s.t_s < 0:  # warm-up: not part of the measured window
            return
        self.acc.merge(s.histogram)
        self.ok += s.ok
        self.failed += s.failed
        self.offered += s.offered
        if (s.t_s + 1) % self.every_s:
            return
        n = self.every_s
        p95 = self.acc.percentile(95)
        left = max(0.0, self.duration_s - s.t_s - 1)
        self.echo(f"  [{self.label}] t={s.t_s + 1:>4}s left={left:>4.0f}s  "
                  f"offered {self.offered / n:6.0f}/s  ok {self.ok / n:6.0f}/s  "
                  f"failed {self.failed / n:5.0f}/s  "
                  f"p95 {'-' if p95 is None else f'{p95:.0f}'} ms  "
                  f"replicas {ready}/{desired}")
        self.acc = Histogram()
        self.ok = self.failed = 0
        self.offered = 0.0
