"""One trial on the ``sim`` platform: the same rows as ``harness.trial.run_trial`` writes.

The same pieces drive it as drive a real trial — the scenario's load profile
(``LoadSpec.from_scenario``), its fault schedule (``FaultTimeline``), the autoscaler
(``build_controller``: the real Controller and policy, on a simulated ``FakeClock``) — only
the replicas, the load balancer and the load generator are the model (``SimWorld``,
``SimDeployer``). Time advances tick by tick as fast as the model runs.

Order within a tick at time t: scheduled replica changes due by t, faults due by t, the
Prometheus scrape (on its grid), the controller (on its grid, seeing that scrape), then the
tick's arrivals. A second's row is written once the clock passed its end.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

from harness.clock import FakeClock
from harness.deploy.base import DeployEvent, DeploySpec
from harness.errors import DeployError
from harness.faults.timeline import FaultTimeline, plan
from harness.record.histogram import Histogram
from harness.scenario.loader import LoadedScenario
from harness.scenario.models import Strategy
from harness.sim.deployer import SimDeployer
from harness.sim.engine import SimSecond, SimWorld
from harness.sim.model import AppModel
from harness.sim.params import SimParams
from harness.trial import Recorder, TrialResult, app_spec, stage_events, timeseries_row

WALL_OFFSET = 1_700_000_000.0  # the FakeClock's epoch: the sim's "wall" times are fake too
READY_SLACK_S = 2.0  # the deploy starts this long before everything could be ready


def run_sim_trial(loaded: LoadedScenario, strategy: Strategy, trial: int,
                  recorder: Recorder, *, echo: Callable[[str], None],
                  stop: threading.Event | None = None, params: SimParams | None = None,
                  ) -> TrialResult:
    """Simulate one strategy × repetition; rows go to the recorder as they are made."""
    from harness.load.runner import LoadSpec

    params = params or SimParams()
    sc = loaded.scenario
    lp = sc.load
    res = TrialResult(strategy=strategy.name, trial=trial)
    key = {"run_id": recorder.run_id, "strategy": strategy.name, "trial": trial}
    try:
        app = AppModel.from_env(sc.app.env)
    except ValueError as e:
        res.status = "failed"
        res.warnings.append(f"{strategy.name} #{trial}: {e}")
        echo(f"ERROR: {strategy.name} #{trial}: {e}")
        return res
    load = LoadSpec.from_scenario(loaded, base_url="http://127.0.0.1:0", workers=0,
                                  seed=sc.seed + trial)
    tps = params.ticks_per_s
    first_s = -math.ceil(load.warmup_s) if load.warmup_s > 0 else 0
    last_s = math.ceil(load.duration_s) - 1
    deploy_lead = (app.startup_s + params.container_start_s[1] + params.lb_check_s[1]
                   + READY_SLACK_S)
    t_deploy = math.floor((first_s - deploy_lead) * tps) / tps
    clock = SimClock(start=t_deploy, wall_offset=WALL_OFFSET)
    # one seed per trial and purpose, so changing one part does not reshuffle the others
    seed = (sc.seed * 1_000_003 + trial * 7919) % 2**32
    world = SimWorld(app, load, params, seed=seed, first_s=first_s)

    def write_event(t: float, kind: str, replica: str, detail: str,
                    fields: Mapping[str, Any] | None = None) -> None:
        # the sim's clock runs on trial time, so its (fake) wall time is offset + t
        recorder.events.write({**key, "t_s": t, "kind": kind, "replica": replica,
                               "detail": detail, "time_unix_s": round(WALL_OFFSET + t, 3),
                               **(fields or {})})

    def on_event(ev: DeployEvent) -> None:
        write_event(ev.at if ev.at is not None else clock.now(), ev.kind, ev.replica,
                    ev.detail)

    spec = DeploySpec(run_id=recorder.run_id, trial_id=f"{strategy.name}-{trial}",
                      app=app_spec(loaded), replicas=strategy.replicas)
    echo(f"── trial {strategy.name} #{trial} ({strategy.kind}, {strategy.replicas} replicas"
         f"{', autoscaler ' + strategy.autoscaler.policy if strategy.autoscaler else ''}"
         f"; simulated, {params.lb_policy}, tick {params.tick_s * 1000:g} ms)")
    deployer = SimDeployer(spec, on_event, clock, kind=strategy.kind, world=world,
                           startup_s=app.startup_s, params=params,
                           restart_delay_s=strategy.restart_delay_s, seed=seed + 1,
                           max_replicas=max(strategy.max_replicas, 1))
    world.members = deployer.lb_members
    world.dead = deployer.lb_dead
    snap: dict[str, float | None] = {"metric": None, "target": None}
    hist_total = Histogram()
    progress_every = max(5, math.ceil((last_s + 1) / 12))
    acc = {"ok": 0, "failed": 0, "offered": 0.0}
    try:
        # results describe themselves: which model and platform lags made these rows
        write_event(t_deploy, "note", "", "sim " + " ".join(
            f"{k}={_compact(v)}" for k, v in params.as_dict().items() if k != "extra"))
        deployer.deploy()
        controller: Any = None
        source: Any = None
        if strategy.autoscaler is not None:
            controller = _controller(strategy, deployer, clock, key, recorder, snap)
            source = deployer.source
        k = round(t_deploy * tps)
        k_first = first_s * tps
        next_scrape = k / tps  # Prometheus runs from the deploy on: it sees idle replicas
        while k < k_first:  # start-up: replicas come up before the load starts
            deployer.advance(k / tps)
            if source is not None and k / tps >= next_scrape - 1e-9:
                source.scrape(k / tps)
                next_scrape += params.scrape_interval_s
            k += 1
            _set(clock, k / tps)
        deployer.advance(k / tps)
        _, ready = deployer.counts()
        if ready < strategy.replicas:
            raise DeployError(f"only {ready} of {strategy.replicas} replicas became ready")

        for t_s, detail, fields in stage_events(lp, load.warmup_rps):
            write_event(t_s, "load_stage", "", detail, fields)

        timeline: FaultTimeline | None = None
        planned = plan(sc.faults, strategy.name)
        if planned:
            timeline = FaultTimeline(planned, deployer, clock, 0.0,
                                     seed=sc.seed * 1000 + trial,
                                     on_fault=lambda t, kd, r, d, f: write_event(t, kd, r, d, f))
        interval = strategy.autoscaler.interval_s if strategy.autoscaler else math.inf
        next_ctrl = k / tps  # the controller starts with the load (warm-up included)
        drain_until = last_s + math.ceil(load.timeout_s) + 1
        while True:
            t = k / tps
            deployer.advance(t)
            if timeline is not None:
                due = timeline.due()
                if due is not None and due <= t + 1e-9:
                    timeline.step()
            if source is not None and t >= next_scrape - 1e-9:
                source.scrape(t)
                next_scrape += params.scrape_interval_s
            if controller is not None and t >= next_ctrl - 1e-9:
                controller.step()
                next_ctrl += interval
                if next_ctrl < t:  # as Controller.run: skip missed ticks
                    next_ctrl += math.ceil((t - next_ctrl) / interval) * interval
            world.tick(k)
            k += 1
            _set(clock, k / tps)
            if k % tps:
                continue
            s = world.close_second()
            _row(s, deployer, recorder, key, snap, res, hist_total)
            if s.t_s >= 0:
                acc["ok"] += s.ok
                acc["failed"] += s.failed
                acc["offered"] += s.offered
                if (s.t_s + 1) % progress_every == 0:
                    _running, ready = deployer.counts()
                    n = progress_every
                    echo(f"  [{strategy.name} #{trial}] t={s.t_s + 1:>5}s  offered "
                         f"{acc['offered'] / n:7.0f}/s  ok {acc['ok'] / n:7.0f}/s  failed "
                         f"{acc['failed'] / n:6.0f}/s  replicas {ready}/{deployer.desired()}")
                    acc = {"ok": 0, "failed": 0, "offered": 0.0}
            if s.t_s >= last_s and (world.in_flight == 0 or s.t_s >= drain_until):
                break
            if stop is not None and stop.is_set():
                res.status = "incomplete"
                break
    except DeployError as e:
        res.status = "failed"
        res.warnings.append(f"{strategy.name} #{trial}: {e}")
        echo(f"ERROR: {strategy.name} #{trial}: {e}")
    finally:
        deployer.teardown()
    res.start_to_ready_s = list(deployer.start_to_ready_s)
    res.p95_ms = hist_total.percentile(95)
    return res


def _compact(v: Any) -> str:
    if isinstance(v, tuple):
        return "..".join(f"{x:g}" for x in v)
    if isinstance(v, bool):
        return str(int(v))
    return f"{v:g}" if isinstance(v, float) else str(v)


class SimClock(FakeClock):
    """The simulated clock: a FakeClock the loop sets to each tick's exact time (summing
    tick lengths drifts, and a fault due at 95 s must not wait for the tick after
    94.99999…)."""

    def set(self, t: float) -> None:
        with self._lock:
            self._t = t


def _set(clock: SimClock, t: float) -> None:
    clock.set(t)


def _row(s: SimSecond, deployer: SimDeployer, recorder: Recorder, key: dict[str, Any],
         snap: dict[str, float | None], res: TrialResult, hist_total: Histogram) -> None:
    running, ready = deployer.counts()
    recorder.timeseries.write(timeseries_row(key, s, desired=deployer.desired(),
                                             running=running, ready=ready,
                                             metric=snap["metric"], target=snap["target"],
                                             t0_unix=WALL_OFFSET))
    res.account(s, ready, hist_total)


def _controller(strategy: Strategy, deployer: SimDeployer, clock: SimClock,
                key: dict[str, Any], recorder: Recorder,
                snap: dict[str, float | None]) -> Any:
    """The real Controller (policy from the registry, our metric source via the
    deployer's metric_source), stepped by the loop instead of its own thread."""
    from harness.autoscale.wiring import build_controller

    assert strategy.autoscaler is not None

    def on_decision(row: dict[str, Any]) -> None:
        # as harness.trial._controller_thread
        recorder.decisions.write({**key, **row})
        snap["metric"] = row.get("metric_mean")
        snap["target"] = row.get("target")
        if row.get("action") == "scale":
            recorder.events.write({**key, "t_s": row["t_s"], "kind": "scale", "replica": "",
                                   "detail": f"{row.get('current_replicas')}→"
                                             f"{row.get('desired')} reason={row.get('reason')}",
                                   "time_unix_s": round(WALL_OFFSET + row["t_s"], 3)})

    return build_controller(strategy.autoscaler, deployer, clock, 0.0,
                            on_decision)  # type: ignore[arg-type]


def run_trial_on_sim(loaded: LoadedScenario, strategy: Strategy, trial: int, plat: Any,
                     recorder: Recorder, stopper: Any, *, workers: int | None,
                     echo: Callable[[str], None], clock: Any = None) -> TrialResult:
    """``harness.trial.run_trial``'s signature, for harness/run.py's dispatch: the platform,
    load workers and clock of a real trial have no meaning here."""
    del plat, workers, clock
    return run_sim_trial(loaded, strategy, trial, recorder, echo=echo,
                         stop=getattr(stopper, "event", None))


def run_sim_scenario(loaded: LoadedScenario, run_dir: Any, *, run_id: str,
                     params: SimParams | None = None, repetitions: int | None = None,
                     strategies: list[str] | None = None,
                     echo: Callable[[str], None] = print, report: bool = True
                     ) -> list[TrialResult]:
    """All trials of a scenario on the sim with explicit ``SimParams`` (what
    ``harness run --platform sim`` does with the defaults), into ``run_dir``: the same
    run.json keys the analysis reads, the CSVs, summary.csv and report.html."""
    import datetime as dt
    from pathlib import Path

    from harness.record.schema import SCHEMA_VERSION
    from harness.record.writer import write_json_atomic

    params = params or SimParams()
    sc = loaded.scenario
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=False)
    names = strategies or [s.name for s in sc.strategies]
    reps = repetitions or sc.repetitions
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "status": "running",
        "scenario_file": str(loaded.path), "scenario": sc.model_dump(mode="json"),
        "platform": "sim", "strategies": names, "repetitions": reps, "seed": sc.seed,
        "sim_params": params.as_dict(), "started": dt.datetime.now(dt.UTC).isoformat(),
        "trials": [], "warnings": [],
    }
    write_json_atomic(run_dir / "run.json", meta)
    recorder = Recorder(run_dir, run_id)
    results: list[TrialResult] = []
    try:
        for rep in range(1, reps + 1):
            for name in names:
                res = run_sim_trial(loaded, sc.strategy(name), rep, recorder, echo=echo,
                                    params=params)
                results.append(res)
                meta["trials"].append(res.as_dict())
                meta["warnings"].extend(res.warnings)
    finally:
        recorder.close()
        meta.update(status="complete", ended=dt.datetime.now(dt.UTC).isoformat())
        write_json_atomic(run_dir / "run.json", meta)
    if report:
        from harness.report.html import write_report

        write_report(run_dir)
    return results
