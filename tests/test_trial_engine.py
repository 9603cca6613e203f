"""The one trial loop (harness/trial.py) with fakes of the deployer, the load and the clock:
what it writes, in which order, and that it always tears down."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness.autoscale.controller import Controller
from harness.clock import FakeClock
from harness.deploy.base import Deployer, DeployEvent, DeploySpec, Replica
from harness.errors import DeployError
from harness.faults.timeline import FaultTimeline
from harness.load.runner import LoadError
from harness.load.stats import SecondStats
from harness.record.histogram import Histogram
from harness.record.trial_record import Counts, Recorder, TrialRecord
from harness.scenario.loader import load_scenario
from harness.scenario.models import Strategy
from harness.trial import run_trial
from tests.fakes import FakeDeployer

SCENARIO = """\
name: engine
load:
  warmup_s: 2
  warmup_rps: 10
  stages:
    - {name: base, duration_s: 4, rps: 10}
    - {name: peak, duration_s: 4, rps: 40}
faults:
  - {at_s: 3, action: crash, count: 1}
strategies:
  - {name: fixed, kind: manual, replicas: 2}
  - name: scaled
    kind: orchestrated
    replicas: 2
    autoscaler: {policy: hpa, metric: utilization, target: 0.5, min_replicas: 1,
                 max_replicas: 6, interval_s: 1}
"""


class FixedSource:
    """Every ready replica reports the same utilization."""

    last_error: str | None = None

    def __init__(self, value: float) -> None:
        self.value = value

    def sample(self, replicas: list[Replica]) -> dict[str, float | None]:
        return {r.id: self.value for r in replicas}


def second(t: int, ok: int, latency_ms: float = 20.0) -> SecondStats:
    h = Histogram()
    for _ in range(ok):
        h.record(latency_ms)
    return SecondStats(t_s=t, offered=float(ok), sent=ok, dropped=0, ok=ok, failed=0,
                       failed_by_cause={}, in_flight=0, histogram=h, loadgen_cpu_pct=1.0,
                       saturated=False, workers_alive=1)


class FakeRuntime:
    """Steps a FakeClock one second per load second; faults and the autoscaler are
    stepped in between, as the simulator's runtime does."""

    progress_every_s = 5
    warmup_rate = 10.0
    duration_s = 8.0

    def __init__(self, *, ready_error: str | None = None, load_error: str | None = None,
                 stop_at_ready: bool = False, source: FixedSource | None = None,
                 seconds: range = range(-2, 8)) -> None:
        self.clock = FakeClock(start=100.0)
        self.ready_error, self.load_error = ready_error, load_error
        self.stop_at_ready, self.source, self.seconds = stop_at_ready, source, seconds
        self.calls: list[str] = []
        self.deployer: FakeDeployer | None = None
        self._on_second: Any = None
        self.t0 = 0.0

    def describe(self) -> str:
        return "; fake"

    def make_deployer(self, strategy: Strategy, spec: DeploySpec, rec: TrialRecord
                      ) -> Deployer:
        self.calls.append("make_deployer")
        self.deployer = FakeDeployer(spec.replicas, on_event=rec.deploy_event)
        # an event before the load's t = 0: written with a negative t_s later
        rec.deploy_event(DeployEvent("replica_ready", "r0", "", at=self.clock.now()))
        return self.deployer

    def wait_ready(self, deployer: Deployer, n: int, stop: threading.Event) -> None:
        self.calls.append("wait_ready")
        self.clock.sleep(3.0)
        if self.ready_error:
            raise DeployError(self.ready_error)
        if self.stop_at_ready:
            stop.set()

    def start_load(self, deployer: Deployer, rec: TrialRecord, on_second: Any) -> float:
        self.calls.append("start_load")
        self._on_second = on_second
        self.t0 = self.clock.now() + 2.0  # t = 0 after the 2 s warm-up
        return self.t0

    def metric_source(self, deployer: Deployer) -> FixedSource | None:
        return self.source

    def drive(self, timeline: FaultTimeline | None, controller: Controller | None,
              stop: threading.Event) -> None:
        self.calls.append("drive")
        assert self.deployer is not None
        for t in self.seconds:
            now_rel = self.clock.now() - self.t0
            if now_rel < t:
                self.clock.sleep(t - now_rel)
            if timeline is not None and (due := timeline.due()) is not None \
                    and due <= t + 1e-9:
                timeline.step()
            if controller is not None:
                controller.step()
            if self.load_error and t == 1:
                raise LoadError(self.load_error)
            d = self.deployer
            ready = sum(r.state.value == "ready" for r in d.replicas())
            self._on_second(second(t, 10 * (t + 3)),
                            Counts(desired=d.desired(), running=ready, ready=ready))

    def finish(self, timeline: FaultTimeline | None, rec: TrialRecord) -> None:
        self.calls.append("finish")
        if timeline is not None:
            timeline.revert_all()


def trial(tmp_path: Path, runtime: FakeRuntime, strategy: str = "fixed",
          stop: threading.Event | None = None) -> tuple[Any, dict[str, pd.DataFrame],
                                                         list[str]]:
    (tmp_path / "s.yaml").write_text(SCENARIO)
    loaded = load_scenario(tmp_path / "s.yaml")
    rec = Recorder(tmp_path, "run1")
    lines: list[str] = []
    res = run_trial(loaded, loaded.scenario.strategy(strategy), 1, runtime, rec,
                    stop or threading.Event(), echo=lines.append)
    rec.close()
    frames = {n: pd.read_csv(tmp_path / f"{n}.csv", keep_default_na=False)
              for n in ("timeseries", "events", "decisions")}
    return res, frames, lines


def test_a_trial_writes_rows_events_and_its_account(tmp_path: Path) -> None:
    rt = FakeRuntime()
    res, f, lines = trial(tmp_path, rt)
    assert rt.calls == ["make_deployer", "wait_ready", "start_load", "drive", "finish"]
    assert rt.deployer is not None and rt.deployer.torn_down
    ts = f["timeseries"]
    assert list(ts["t_s"]) == list(range(-2, 8))
    ev = f["events"]
    # the ready event happened 5 s before t = 0 (3 s waiting for ready + 2 s warm-up)
    ready = ev[ev["kind"] == "replica_ready"]
    assert list(ready["t_s"]) == [-5.0]
    stages = ev[ev["kind"] == "load_stage"]
    assert list(stages["t_s"]) == [-2.0, 0.0, 4.0]
    assert list(stages["stage"]) == ["warmup", "0", "1"]
    assert [float(x) for x in stages["rps"]] == [10.0, 10.0, 40.0]
    # every event carries its wall-clock time: FakeClock's wall = its reading + offset
    t0_wall = rt.clock.wall() - (rt.clock.now() - rt.t0)
    assert [float(x) for x in ev["time_unix_s"]] == pytest.approx(
        [t0_wall + float(t) for t in ev["t_s"]], abs=1e-3)
    crash = ev[(ev["kind"] == "fault") & (ev["action"] == "crash")]
    assert len(crash) == 1 and float(crash["t_s"].iloc[0]) == pytest.approx(3.0)
    assert ("crash", crash["replica"].iloc[0]) in rt.deployer.calls
    # the account counts measured seconds only (t ≥ 0): 30 + 40 + … + 100
    assert res.status == "complete"
    assert res.requests == sum(10 * (t + 3) for t in range(0, 8))
    assert res.seconds == 8 and res.p95_ms == pytest.approx(20.0, rel=0.05)
    assert any("trial fixed #1 (manual, 2 replicas; fake)" in x for x in lines)
    assert any(x.startswith("  [fixed #1] t=   5s") for x in lines)


def test_the_autoscaler_decides_on_the_runtime_source(tmp_path: Path) -> None:
    rt = FakeRuntime(source=FixedSource(1.0))
    res, f, _ = trial(tmp_path, rt, "scaled")
    dec = f["decisions"]
    assert len(dec) == 10 and set(dec["policy"]) == {"hpa"}
    # utilization 1.0 against a target of 0.5: the HPA doubles, within its bounds
    assert int(dec["desired"].iloc[0]) == 4
    scale = f["events"][f["events"]["kind"] == "scale"]
    assert len(scale) >= 1 and "reason=" in scale["detail"].iloc[0]
    ts = f["timeseries"]
    assert ts["autoscaler_target"].astype(float).eq(0.5).all()
    assert res.replicas_max >= 4


def test_not_ready_fails_the_trial_and_still_tears_down(tmp_path: Path) -> None:
    rt = FakeRuntime(ready_error="only 1 of 2 replicas became ready within 90 s")
    res, f, lines = trial(tmp_path, rt)
    assert res.status == "failed"
    assert rt.calls == ["make_deployer", "wait_ready", "finish"]
    assert rt.deployer is not None and rt.deployer.torn_down
    assert f["timeseries"].empty
    assert any("only 1 of 2" in w for w in res.warnings)
    assert any(x.startswith("ERROR: fixed #1: only 1 of 2") for x in lines)


def test_a_load_failure_keeps_what_was_measured(tmp_path: Path) -> None:
    rt = FakeRuntime(load_error="the load child died")
    res, f, _ = trial(tmp_path, rt)
    assert res.status == "failed" and rt.calls[-1] == "finish"
    assert rt.deployer is not None and rt.deployer.torn_down
    assert list(f["timeseries"]["t_s"]) == [-2, -1, 0]


def test_a_stop_while_deploying_is_incomplete(tmp_path: Path) -> None:
    rt = FakeRuntime(stop_at_ready=True)
    res, _, _ = trial(tmp_path, rt)
    assert res.status == "incomplete"
    assert "start_load" not in rt.calls
    assert rt.deployer is not None and rt.deployer.torn_down


def test_an_unexpected_error_propagates_after_the_tear_down(tmp_path: Path) -> None:
    class Broken(FakeRuntime):
        def drive(self, *args: Any) -> None:
            raise RuntimeError("bug")

    rt = Broken()
    with pytest.raises(RuntimeError, match="bug"):
        trial(tmp_path, rt)
    assert rt.calls[-1] == "finish"
    assert rt.deployer is not None and rt.deployer.torn_down


def test_a_platform_that_cannot_deploy_fails_before_anything_runs(tmp_path: Path) -> None:
    class NoDeployer(FakeRuntime):
        def make_deployer(self, *args: Any) -> Deployer:
            raise DeployError("the sim models presets only")

    rt = NoDeployer()
    res, f, _ = trial(tmp_path, rt)
    assert res.status == "failed" and rt.calls == []
    assert f["timeseries"].empty
