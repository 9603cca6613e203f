"""The trial runtime for the ``sim`` platform: the queueing model instead of replicas, a
simulated clock stepped tick by tick instead of threads. The trial loop is harness/trial.py,
the same as for real replicas; the scenario's load profile (``LoadSpec.from_scenario``),
fault schedule (``FaultTimeline``) and autoscaler (the real Controller and policy) are the
same objects, only stepped by this loop.

Order within a tick at time t: scheduled replica changes due by t, faults due by t, the
Prometheus scrape (on its grid), the controller (on its grid, seeing that scrape), then the
tick's arrivals. A second's row is written once the clock passed its end.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Any

from harness.autoscale.controller import Controller
from harness.autoscale.external import ControlLoop
from harness.autoscale.source import MetricSource
from harness.clock import FakeClock
from harness.deploy.base import Deployer, DeployEvent, DeploySpec
from harness.errors import DeployError
from harness.faults.timeline import FaultTimeline
from harness.platforms.sim.deployer import SimDeployer
from harness.platforms.sim.engine import SimWorld
from harness.platforms.sim.model import AppModel
from harness.platforms.sim.params import SimParams
from harness.record.trial_record import Counts, TrialRecord
from harness.scenario.loader import LoadedScenario
from harness.scenario.models import Strategy

WALL_OFFSET = 1_700_000_000.0  # the FakeClock's epoch: the sim's "wall" times are fake too
READY_SLACK_S = 2.0  # the deploy starts this long before everything could be ready


class SimClock(FakeClock):
    """The simulated clock: a FakeClock the loop sets to each tick's exact time (summing
    tick lengths drifts, and a fault due at 95 s must not wait for the tick after
    94.99999…)."""

    def set(self, t: float) -> None:
        with self._lock:
            self._t = t


def _compact(v: Any) -> str:
    if isinstance(v, tuple):
        return "..".join(f"{x:g}" for x in v)
    if isinstance(v, bool):
        return str(int(v))
    return f"{v:g}" if isinstance(v, float) else str(v)


class SimRuntime:
    """One simulated trial. Its clock reads trial seconds: the load's t = 0 is 0.0."""

    def __init__(self, loaded: LoadedScenario, strategy: Strategy, trial: int,
                 params: SimParams | None = None) -> None:
        from harness.load.runner import LoadSpec

        self.params = params or SimParams()
        auto = strategy.autoscaler
        if auto is not None and auto.scrape_interval_s is not None:
            # the model's one Prometheus feeds only the autoscaler's metric, so the pace the
            # autoscaler asks of that metric's job is the model's scrape pace
            self.params = dataclasses.replace(self.params,
                                              scrape_interval_s=auto.scrape_interval_s)
        self.loaded, self.strategy, self.trial = loaded, strategy, trial
        sc = loaded.scenario
        self.load = LoadSpec.from_scenario(loaded, base_url="http://127.0.0.1:0", workers=0,
                                           seed=sc.seed + trial)
        self.warmup_rate = self.load.warmup_rps
        self.duration_s = self.load.duration_s
        self.tps = self.params.ticks_per_s
        self.first_s = -math.ceil(self.load.warmup_s) if self.load.warmup_s > 0 else 0
        self.last_s = math.ceil(self.load.duration_s) - 1
        self.progress_every_s = max(5, math.ceil((self.last_s + 1) / 12))
        self.clock = SimClock(start=0.0, wall_offset=WALL_OFFSET)
        # one seed per trial and purpose, so changing one part does not reshuffle the others
        self.seed = (sc.seed * 1_000_003 + trial * 7919) % 2**32
        self.deployer: SimDeployer | None = None
        self.world: SimWorld | None = None
        self.k = 0
        self.next_scrape = 0.0
        self._on_second: Any = None

    def describe(self) -> str:
        p = self.params
        return f"; simulated, {p.lb_policy}, tick {p.tick_s * 1000:g} ms"

    def make_deployer(self, strategy: Strategy, spec: DeploySpec, rec: TrialRecord
                      ) -> Deployer:
        try:
            app = AppModel.from_env(self.loaded.scenario.app.env)
        except ValueError as e:
            raise DeployError(str(e)) from None
        p = self.params
        lead = app.startup_s + p.container_start_s[1] + p.lb_check_s[1] + READY_SLACK_S
        t_deploy = math.floor((self.first_s - lead) * self.tps) / self.tps
        self.clock.set(t_deploy)
        self.k = round(t_deploy * self.tps)
        self.next_scrape = t_deploy  # Prometheus runs from the deploy on: it sees idle ones
        rec.set_t0(0.0)  # the simulated clock already reads trial seconds
        self.world = SimWorld(app, self.load, p, seed=self.seed, first_s=self.first_s)

        def on_event(ev: DeployEvent) -> None:
            rec.deploy_event(ev)

        d = SimDeployer(spec, on_event, self.clock, kind=strategy.kind, world=self.world,
                        startup_s=app.startup_s, params=p,
                        restart_delay_s=strategy.restart_delay_s, seed=self.seed + 1,
                        max_replicas=max(strategy.max_replicas, 1))
        self.world.members = d.lb_members
        self.world.dead = d.lb_dead
        self.deployer = d
        if strategy.autoscaler is not None:
            # the controller's source scrapes from the deploy on, as Prometheus would
            d.metric_source(strategy.autoscaler)
        # results describe themselves: which model and platform lags made these rows
        rec.event(t_deploy, "note", "", "sim " + " ".join(
            f"{k}={_compact(v)}" for k, v in p.as_dict().items() if k != "extra"))
        return d

    def _tick_to(self, t: float) -> None:
        self.clock.set(t)

    def _scrape_due(self, t: float) -> None:
        d = self.deployer
        assert d is not None
        if d.source is not None and t >= self.next_scrape - 1e-9:
            d.source.scrape(t)
            self.next_scrape += self.params.scrape_interval_s

    def wait_ready(self, deployer: Deployer, n: int, stop: threading.Event) -> None:
        d = self.deployer
        assert d is not None
        k_first = self.first_s * self.tps
        while self.k < k_first:  # start-up: replicas come up before the load starts
            t = self.k / self.tps
            d.advance(t)
            self._scrape_due(t)
            self.k += 1
            self._tick_to(self.k / self.tps)
        d.advance(self.k / self.tps)
        _, ready = d.counts()
        if ready < n:
            raise DeployError(f"only {ready} of {n} replicas became ready")

    def start_load(self, deployer: Deployer, rec: TrialRecord, on_second: Any) -> float:
        self._on_second = on_second
        return 0.0

    def metric_source(self, deployer: Deployer) -> MetricSource | None:
        return self.deployer.source if self.deployer is not None else None

    def drive(self, timeline: FaultTimeline | None, controller: ControlLoop | None,
              stop: threading.Event) -> None:
        d, world, tps = self.deployer, self.world, self.tps
        assert d is not None and world is not None
        # stepped on simulated time; run.py refuses external policies on the sim
        assert controller is None or isinstance(controller, Controller)
        interval = self.strategy.autoscaler.interval_s if self.strategy.autoscaler \
            else math.inf
        next_ctrl = self.k / tps  # the controller starts with the load (warm-up included)
        drain_until = self.last_s + math.ceil(self.load.timeout_s) + 1
        while True:
            t = self.k / tps
            d.advance(t)
            if timeline is not None:
                due = timeline.due()
                if due is not None and due <= t + 1e-9:
                    timeline.step()
            self._scrape_due(t)
            if controller is not None and t >= next_ctrl - 1e-9:
                controller.step()
                next_ctrl += interval
                if next_ctrl < t:  # as Controller.run: skip missed ticks
                    next_ctrl += math.ceil((t - next_ctrl) / interval) * interval
            world.tick(self.k)
            self.k += 1
            self._tick_to(self.k / tps)
            if self.k % tps:
                continue
            s = world.close_second()
            running, ready = d.counts()
            self._on_second(s, Counts(desired=d.desired(), running=running, ready=ready))
            if s.t_s >= self.last_s and (world.in_flight == 0 or s.t_s >= drain_until):
                return
            if stop.is_set():
                return

    def finish(self, timeline: FaultTimeline | None, rec: TrialRecord) -> None:
        # nothing runs on its own here; faults end with the model's tear-down
        if self.deployer is not None:
            rec.result.start_to_ready_s = list(self.deployer.start_to_ready_s)
