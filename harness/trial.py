"""One trial: deploy → warm up → load + faults + autoscaler + recording → tear down.

Everything here speaks the harness's own types (Deployer, SecondStats, DecisionRow); the
adapters (Docker, Locust, Prometheus) live in deploy/, load/ and autoscale/.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.clock import Clock, RealClock
from harness.deploy.base import AppSpec, Deployer, DeployEvent, DeploySpec, ReplicaState
from harness.errors import DeployError
from harness.faults.timeline import FaultTimeline, plan
from harness.platform import Platform
from harness.record.histogram import Histogram
from harness.record.kept_metrics import KeptMetrics
from harness.record.schema import DECISIONS, EVENTS, TIMESERIES
from harness.record.writer import CsvSink
from harness.scenario.loader import LoadedScenario
from harness.scenario.models import Strategy

READY_TIMEOUT_S = 90.0
PROGRESS_EVERY_S = 5


class Recorder:
    """The run's three CSVs; every trial writes through it."""

    def __init__(self, run_dir: Path, run_id: str,
                 on_row: Callable[[dict[str, Any]], None] | None = None,
                 kept: KeptMetrics | None = None) -> None:
        self.run_id = run_id
        # each trial's Prometheus data kept under run_dir/metrics (--keep-metrics)
        self.kept = kept
        if kept is not None:
            live = on_row

            def both(row: dict[str, Any]) -> None:
                kept.observe_row(row)
                if live is not None:
                    live(row)

            on_row = both
        # live view of each row (the harness's own /metrics for Grafana), never blocking
        self.on_row = on_row
        self.timeseries = CsvSink(run_dir / "timeseries.csv", TIMESERIES)
        self.events = CsvSink(run_dir / "events.csv", EVENTS)
        self.decisions = CsvSink(run_dir / "decisions.csv", DECISIONS)

    def close(self) -> None:
        for sink in (self.timeseries, self.events, self.decisions):
            sink.close()


@dataclass
class TrialResult:
    strategy: str
    trial: int
    status: str = "complete"
    requests: int = 0
    failures: int = 0
    ok: int = 0
    seconds: int = 0
    p95_ms: float | None = None
    replicas_min: int = 0
    replicas_max: int = 0
    loadgen_saturated: bool = False
    kept_metrics_bytes: int | None = None  # --keep-metrics: size of metrics/<trial>/
    start_to_ready_s: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def throughput_rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(error_rate=self.error_rate, throughput_rps=self.throughput_rps)
        return d

    def account(self, s: Any, ready: int, hist_total: Histogram) -> None:
        """Add one measured second (t_s ≥ 0) to the trial's totals."""
        if s.t_s < 0:
            return
        self.requests += s.ok + s.failed
        self.ok += s.ok
        self.failures += s.failed
        self.seconds = max(self.seconds, s.t_s + 1)
        hist_total.merge(s.histogram)
        self.replicas_min = min(self.replicas_min or ready, ready)
        self.replicas_max = max(self.replicas_max, ready)


def timeseries_row(key: dict[str, Any], s: Any, *, desired: int, running: int, ready: int,
                   metric: float | None, target: float | None) -> dict[str, Any]:
    """One timeseries.csv row from one second of load (a real SecondStats or the
    simulator's), the same on every platform."""
    h = s.histogram
    return {
        **key, "t_s": s.t_s, "offered_rps": s.offered, "sent_rps": s.sent,
        "ok_rps": s.ok, "failed_rps": s.failed,
        "p50_ms": h.percentile(50), "p95_ms": h.percentile(95),
        "p99_ms": h.percentile(99), "max_ms": h.max_ms if h.total else None,
        "replicas_desired": desired, "replicas_running": running,
        "replicas_ready": ready, "dropped_rps": s.dropped,
        "failed_status_rps": s.failed_by_cause.get("status", 0),
        "failed_timeout_rps": s.failed_by_cause.get("timeout", 0),
        "failed_conn_rps": s.failed_by_cause.get("conn", 0),
        "failed_other_rps": s.failed_by_cause.get("other", 0),
        "in_flight": s.in_flight, "autoscaler_metric": metric,
        "autoscaler_target": target, "replicas_cpu_pct": None,
        "loadgen_cpu_pct": getattr(s, "loadgen_cpu_pct", 0.0),
        "loadgen_saturated": getattr(s, "saturated", False),
        "latency_hist": h.encode(),
    }


def app_spec(loaded: LoadedScenario) -> AppSpec:
    a = loaded.scenario.app
    return AppSpec(image=a.image, port=a.port, health_path=a.health_path,
                   ready_path=a.ready_path, metrics_path=a.metrics_path, work_path=a.path,
                   env=dict(a.env), command=tuple(a.command) if a.command else None)


def make_deployer(plat: Platform, strategy: Strategy, spec: DeploySpec,
                  on_event: Callable[[DeployEvent], None], clock: Clock,
                  keep_metrics_dir: Path | None = None) -> Deployer:
    from harness.deploy import registry

    if plat.name == "local" and ("local", strategy.kind) not in registry.DEPLOYERS:
        from harness.deploy import local
        for k in ("manual", "compose", "orchestrated"):
            registry.register("local", k, local.factory(k), local.OPTIONS)
    extra = {"emit_replica_events": False} if plat.name == "local" else {}
    return registry.create(plat.name, strategy.kind, spec=spec, on_event=on_event,
                           clock=clock, client=plat.docker,
                           restart_delay_s=strategy.restart_delay_s,
                           registry=plat.registry, keep_metrics_dir=keep_metrics_dir,
                           **extra)


def wait_ready(deployer: Deployer, n: int, clock: Clock, stop: threading.Event,
               timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = clock.now() + timeout_s
    while not stop.is_set():
        ready = sum(r.state == ReplicaState.READY for r in deployer.replicas())
        if ready >= n:
            return
        if clock.now() > deadline:
            raise DeployError(f"only {ready} of {n} replicas became ready within {timeout_s:.0f} s")
        stop.wait(0.25)


class _Snapshot:
    """Replica counts and the autoscaler's latest view, read by the per-second row."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.metric: float | None = None
        self.target: float | None = None


def run_trial(loaded: LoadedScenario, strategy: Strategy, trial: int, plat: Platform,
              recorder: Recorder, stopper: Any, *, workers: int | None,
              echo: Callable[[str], None], clock: Clock | None = None) -> TrialResult:
    from harness.load.runner import LoadError, LoadRun, LoadSpec, SecondStats

    clock = clock or RealClock()
    sc = loaded.scenario
    stop: threading.Event = stopper.event
    res = TrialResult(strategy=strategy.name, trial=trial)
    key = {"run_id": recorder.run_id, "strategy": strategy.name, "trial": trial}
    t0_box: list[float | None] = [None]
    pending: list[tuple[float, DeployEvent]] = []
    events_lock = threading.Lock()

    def write_event(t_abs: float, kind: str, replica: str, detail: str) -> None:
        t0 = t0_box[0]
        recorder.events.write({**key, "t_s": t_abs - t0, "kind": kind, "replica": replica,
                               "detail": detail})

    def on_event(ev: DeployEvent) -> None:
        # the platform's own timestamp when it has one (Docker's StartedAt, the first
        # successful probe): polling must not blur start-to-ready or discovery lag
        now = ev.at if ev.at is not None else clock.now()
        with events_lock:
            if t0_box[0] is None:
                pending.append((now, ev))  # written with negative t_s once t0 is known
                return
            write_event(now, ev.kind, ev.replica, ev.detail)

    spec = DeploySpec(run_id=recorder.run_id, trial_id=f"{strategy.name}-{trial}",
                      app=app_spec(loaded), replicas=strategy.replicas)
    echo(f"── trial {strategy.name} #{trial} ({strategy.kind}, {strategy.replicas} replicas"
         f"{', autoscaler ' + strategy.autoscaler.policy if strategy.autoscaler else ''})")
    kept_dir = recorder.kept.trial_dir(spec.trial_id) if recorder.kept else None
    deployer = make_deployer(plat, strategy, spec, on_event, clock, kept_dir)
    snap = _Snapshot()
    threads: list[threading.Thread] = []
    trial_stop = threading.Event()
    load: Any = None
    timeline: FaultTimeline | None = None
    watcher: Any = None
    hist_total = Histogram()
    try:
        deployer.deploy()
        wait_ready(deployer, strategy.replicas, clock, stop)
        if stop.is_set():
            res.status = "incomplete"
            return res
        from harness.deploy.watch import ReplicaWatcher
        watcher = ReplicaWatcher(deployer, on_event, clock)
        watcher.start()

        lp = sc.load
        load_spec = LoadSpec.from_scenario(loaded, base_url=deployer.lb_url(),
                                           workers=workers, seed=sc.seed + trial,
                                           run_id=recorder.run_id)
        progress = _Progress(echo, strategy.name, trial, lp.duration_s)

        def on_second(s: SecondStats) -> None:
            replicas = deployer.replicas()
            running = sum(r.state in (ReplicaState.READY, ReplicaState.STARTING,
                                      ReplicaState.PAUSED) for r in replicas)
            ready = sum(r.state == ReplicaState.READY for r in replicas)
            row = timeseries_row(key, s, desired=deployer.desired(), running=running,
                                 ready=ready, metric=snap.metric, target=snap.target)
            recorder.timeseries.write(row)
            if recorder.on_row is not None:
                recorder.on_row(row)
            res.account(s, ready, hist_total)
            if s.t_s >= 0 and s.saturated and not res.loadgen_saturated:
                res.loadgen_saturated = True
                warn = (f"{strategy.name} #{trial}: load generator saturated at "
                        f"t={s.t_s}s; latencies from then on are not trustworthy")
                res.warnings.append(warn)
                echo(f"WARNING: {warn}")
            progress.second(s, ready, deployer.desired())

        def on_load_event(kind: str, detail: str) -> None:
            t0 = t0_box[0]
            if t0 is not None:
                write_event(clock.now(), kind, "", detail)
            if kind == "worker_lost":
                res.warnings.append(f"{strategy.name} #{trial}: load worker lost ({detail})")
                echo(f"WARNING: load worker lost: {detail}")

        load = LoadRun(load_spec, on_second=on_second, on_event=on_load_event)
        load.start()
        # t0 is the load's t=0 on our monotonic clock (the child reports it after warm-up
        # was scheduled); events before it get negative t_s.
        t0 = load.t0_monotonic
        with events_lock:
            t0_box[0] = t0
            for t_abs, ev in pending:
                write_event(t_abs, ev.kind, ev.replica, ev.detail)
            pending.clear()
        if lp.warmup_s > 0:
            recorder.events.write({**key, "t_s": -lp.warmup_s, "kind": "load_stage",
                                   "replica": "", "detail": f"stage=warmup "
                                   f"{'rps' if lp.model == 'open' else 'users'}="
                                   f"{load_spec.warmup_rps:g}"})
        for i, stage in enumerate(lp.stages):
            start = sum(s.duration_s for s in lp.stages[:i])
            rate = stage.rps if stage.rps is not None else stage.users
            recorder.events.write({**key, "t_s": start, "kind": "load_stage", "replica": "",
                                   "detail": f"stage={i} name={stage.name or i} "
                                             f"{'rps' if stage.rps is not None else 'users'}"
                                             f"={rate:g} ramp_s={stage.ramp_s:g}"})

        planned = plan(sc.faults, strategy.name)
        if planned:
            timeline = FaultTimeline(planned, deployer, clock, t0, seed=sc.seed * 1000 + trial,
                                     on_fault=lambda t, k, r, d: write_event(t0 + t, k, r, d))
            threads.append(threading.Thread(target=timeline.run, args=(trial_stop,),
                                            name="faults", daemon=True))
        if strategy.autoscaler is not None:
            threads.append(_controller_thread(strategy, deployer, clock, t0, key, recorder,
                                              snap, trial_stop, plat))
        for t in threads:
            t.start()
        load.wait(stop=stop)
        if stop.is_set():
            res.status = "incomplete"
    except (DeployError, LoadError) as e:
        res.status = "failed"
        res.warnings.append(f"{strategy.name} #{trial}: {e}")
        echo(f"ERROR: {strategy.name} #{trial}: {e}")
    finally:
        trial_stop.set()
        if load is not None:
            load.stop()
        for t in threads:
            t.join(timeout=10)
        if timeline is not None:
            timeline.revert_all()
        if watcher is not None:
            watcher.stop()
            res.start_to_ready_s = list(getattr(watcher, "start_to_ready_s", []))
        deployer.teardown()
        if recorder.kept is not None:
            _finish_kept(recorder.kept, spec.trial_id, res, echo)
    res.p95_ms = hist_total.percentile(95)
    return res


def _finish_kept(kept: KeptMetrics, trial_id: str, res: TrialResult,
                 echo: Callable[[str], None]) -> None:
    try:
        res.kept_metrics_bytes = kept.finish_trial(trial_id)
        echo(f"  kept metrics: {kept.root / trial_id} "
             f"({res.kept_metrics_bytes / 1e6:.1f} MB)")
    except Exception as e:  # the measured CSVs stay valid without the kept blocks
        res.warnings.append(f"{trial_id}: kept metrics incomplete: {e}")
        echo(f"WARNING: {trial_id}: kept metrics incomplete: {e}")


def _controller_thread(strategy: Strategy, deployer: Deployer, clock: Clock, t0: float,
                       key: dict[str, Any], recorder: Recorder, snap: _Snapshot,
                       stop: threading.Event, plat: Platform) -> threading.Thread:
    from harness.autoscale.wiring import build_controller

    assert strategy.autoscaler is not None

    def on_decision(row: dict[str, Any]) -> None:
        recorder.decisions.write({**key, **row})
        snap.metric = row.get("metric_mean")
        snap.target = row.get("target")
        if row.get("action") == "scale":
            recorder.events.write({**key, "t_s": row["t_s"], "kind": "scale", "replica": "",
                                   "detail": f"{row.get('current_replicas')}→"
                                             f"{row.get('desired')} reason={row.get('reason')}"})

    controller = build_controller(strategy.autoscaler, deployer, clock, t0, on_decision,
                                  random.Random(0))
    return threading.Thread(target=controller.run, args=(stop,), name="autoscaler",
                            daemon=True)


class _Progress:
    """One line every few seconds: a user watching a 5-minute run sees it move."""

    def __init__(self, echo: Callable[[str], None], strategy: str, trial: int,
                 duration_s: float) -> None:
        self.echo, self.strategy, self.trial, self.duration_s = echo, strategy, trial, duration_s
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
        if (s.t_s + 1) % PROGRESS_EVERY_S:
            return
        p95 = self.acc.percentile(95)
        left = max(0.0, self.duration_s - s.t_s - 1)
        self.echo(f"  [{self.strategy} #{self.trial}] t={s.t_s + 1:>4}s left={left:>4.0f}s  "
                  f"offered {self.offered / PROGRESS_EVERY_S:6.0f}/s  "
                  f"ok {self.ok / PROGRESS_EVERY_S:6.0f}/s  "
                  f"failed {self.failed / PROGRESS_EVERY_S:5.0f}/s  "
                  f"p95 {'-' if p95 is None else f'{p95:.0f}'} ms  "
                  f"replicas {ready}/{desired}")
        self.acc = Histogram()
        self.ok = self.failed = 0
        self.offered = 0.0
