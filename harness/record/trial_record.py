"""What one trial writes, the same on every platform: its events, its seconds, its
autoscaler decisions, and its account (TrialResult).

The trial engine (harness/trial.py) and the platform runtimes only call this; nobody else
builds a row. Times: the platform's clock reading of the load's t = 0 (``t0``) is known only
once the load started, so events that happen before it (deploy, replicas ready) are held
and written with negative ``t_s`` as soon as ``t0`` is known.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.clock import Clock
from harness.deploy.base import DeployEvent
from harness.record.histogram import Histogram
from harness.record.host import HostSecond, SaturationRun
from harness.record.host import warning as host_warning
from harness.record.kept_metrics import KeptMetrics
from harness.record.schema import DECISIONS, EVENTS, TIMESERIES
from harness.record.writer import CsvSink


class _TeeSink:
    """A CsvSink whose rows also go to a live view (the harness's /metrics)."""

    def __init__(self, sink: CsvSink, on_row: Callable[[dict[str, Any]], None]) -> None:
        self._sink, self._on_row = sink, on_row

    def write(self, row: Mapping[str, Any]) -> None:
        self._sink.write(row)
        self._on_row(dict(row))

    def close(self) -> None:
        self._sink.close()


class Recorder:
    """The run's three CSVs; every trial writes through it."""

    def __init__(self, run_dir: Path, run_id: str,
                 on_row: Callable[[dict[str, Any]], None] | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None,
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
        events = CsvSink(run_dir / "events.csv", EVENTS)
        self.events: CsvSink | _TeeSink = events if on_event is None \
            else _TeeSink(events, on_event)
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
    # the whole machine (record/host.py): flagged at 3 saturated seconds in a row
    host_saturated: bool = False
    host_saturated_s: int = 0
    host_cpu_mean_pct: float | None = None
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
                   metric: float | None, target: float | None,
                   host: HostSecond | None = None, host_saturated: bool | None = None,
                   replicas_cpu_pct: float | None = None,
                   t0_unix: float | None = None) -> dict[str, Any]:
    """One timeseries.csv row from one second of load (a real SecondStats or the
    simulator's), the same on every platform. `t0_unix`: wall-clock time of the load's
    t=0, for `time_unix_s`."""
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
        "autoscaler_target": target, "replicas_cpu_pct": replicas_cpu_pct,
        "loadgen_cpu_pct": getattr(s, "loadgen_cpu_pct", 0.0),
        "loadgen_saturated": getattr(s, "saturated", False),
        "latency_hist": h.encode(),
        "time_unix_s": None if t0_unix is None else round(t0_unix + s.t_s, 3),
        # empty where not measured (the simulator has no host of its own)
        "host_cpu_pct": host.cpu_pct if host is not None else None,
        "host_cpu_pressure_pct": host.pressure_pct if host is not None else None,
        "host_saturated": host_saturated,
    }


def stage_events(lp: Any, warmup_rate: float) -> list[tuple[float, str, dict[str, Any]]]:
    """(t_s, detail, structured fields) of the load_stage events of a scenario's `load`
    block, the same on every platform. A trace has no stages: surges in it are found
    from the offered rate (harness/analysis/surges.py)."""
    rate_key = "rps" if lp.model == "open" else "users"
    out: list[tuple[float, str, dict[str, Any]]] = []
    if lp.warmup_s > 0:
        out.append((-float(lp.warmup_s), "warm-up",
                    {"stage": "warmup", rate_key: warmup_rate, "ramp_s": 0.0}))
    start = 0.0
    for i, stage in enumerate(lp.stages):
        rate = stage.rps if stage.rps is not None else stage.users
        out.append((start, f"stage {stage.name or i}",
                    {"stage": str(i), rate_key: rate, "ramp_s": stage.ramp_s}))
        start += stage.duration_s
    return out


@dataclass(frozen=True)
class Counts:
    """What the platform saw in one second, besides the load: replica counts and, on real
    platforms, the machine (record/host.py) and the replicas' CPU."""

    desired: int
    running: int
    ready: int
    host: HostSecond | None = None
    replicas_cpu_pct: float | None = None


class TrialRecord:
    """One trial's writer and account. Thread-safe: deploy events, the load's seconds, the
    fault timeline and the autoscaler may call it from their own threads."""

    def __init__(self, recorder: Recorder, strategy: str, trial: int, clock: Clock,
                 echo: Callable[[str], None]) -> None:
        self.recorder = recorder
        self.key = {"run_id": recorder.run_id, "strategy": strategy, "trial": trial}
        self.result = TrialResult(strategy=strategy, trial=trial)
        self.hist_total = Histogram()
        self._clock = clock
        self._echo = echo
        self._lock = threading.Lock()
        self._t0: float | None = None
        self._t0_unix: float | None = None
        self._pending: list[tuple[float, str, str, str, Mapping[str, Any] | None]] = []
        # the autoscaler's latest view, shown in each second's row
        self.metric: float | None = None
        self.target: float | None = None
        self.host_run = SaturationRun()

    @property
    def label(self) -> str:
        return f"{self.key['strategy']} #{self.key['trial']}"

    # -- events ---------------------------------------------------------------------------

    def _wall_of(self, t_abs: float) -> float:
        """The wall-clock time of a clock reading: now's wall time minus the time since."""
        return self._clock.wall() - (self._clock.now() - t_abs)

    def set_t0(self, t0: float) -> None:
        """The clock reading of the load's t = 0; held events are written now."""
        with self._lock:
            self._t0 = t0
            self._t0_unix = self._wall_of(t0)
            for t_abs, kind, replica, detail, fields in self._pending:
                self._write_event(t_abs - t0, kind, replica, detail, fields)
            self._pending.clear()

    def deploy_event(self, ev: DeployEvent) -> None:
        # the platform's own timestamp when it has one (Docker's StartedAt, the first
        # successful probe): polling must not blur start-to-ready or discovery lag
        self.event_at(ev.at if ev.at is not None else self._clock.now(), ev.kind,
                      ev.replica, ev.detail)

    def event_at(self, t_abs: float, kind: str, replica: str = "", detail: str = "",
                 fields: Mapping[str, Any] | None = None) -> None:
        """An event at a clock reading (held until t0 is known)."""
        with self._lock:
            if self._t0 is None:
                self._pending.append((t_abs, kind, replica, detail, fields))
                return
            self._write_event(t_abs - self._t0, kind, replica, detail, fields)

    def event(self, t_s: float, kind: str, replica: str = "", detail: str = "",
              fields: Mapping[str, Any] | None = None) -> None:
        """An event at a trial time (seconds since the load's t = 0; t0 must be known)."""
        with self._lock:
            self._write_event(t_s, kind, replica, detail, fields)

    def _write_event(self, t_s: float, kind: str, replica: str, detail: str,
                     fields: Mapping[str, Any] | None) -> None:
        assert self._t0_unix is not None
        self.recorder.events.write({**self.key, "t_s": t_s, "kind": kind, "replica": replica,
                                    "detail": detail,
                                    "time_unix_s": round(self._t0_unix + t_s, 3),
                                    **(fields or {})})

    def stage_events(self, load: Any, warmup_rate: float) -> None:
        """One `load_stage` event per stage of the scenario's load (and the warm-up)."""
        for t_s, detail, fields in stage_events(load, warmup_rate):
            self.event(t_s, "load_stage", "", detail, fields)

    def note(self, text: str) -> None:
        """A line for the terminal only (e.g. the command remote load workers need)."""
        self._echo(f"  [{self.label}] {text}")

    def warn(self, text: str) -> None:
        self.result.warnings.append(f"{self.label}: {text}")
        self._echo(f"WARNING: {self.label}: {text}")

    def fail(self, error: Exception) -> None:
        self.result.status = "failed"
        self.result.warnings.append(f"{self.label}: {error}")
        self._echo(f"ERROR: {self.label}: {error}")

    # -- seconds and decisions --------------------------------------------------------------

    def second(self, s: Any, counts: Counts) -> dict[str, Any]:
        """One measured second: its row (written and shown live) and the account."""
        host, run = counts.host, self.host_run
        sat = run.feed(s.t_s, host) if host is not None and s.t_s >= 0 else None
        row = timeseries_row(self.key, s, desired=counts.desired, running=counts.running,
                             ready=counts.ready, metric=self.metric, target=self.target,
                             host=host, host_saturated=sat,
                             replicas_cpu_pct=counts.replicas_cpu_pct, t0_unix=self._t0_unix)
        self.recorder.timeseries.write(row)
        if self.recorder.on_row is not None:
            self.recorder.on_row(row)
        res = self.result
        res.account(s, counts.ready, self.hist_total)
        if s.t_s >= 0 and getattr(s, "saturated", False) and not res.loadgen_saturated:
            res.loadgen_saturated = True
            self.warn(f"load generator saturated at t={s.t_s}s; latencies from then on "
                      "are not trustworthy")
        if host is not None:
            if run.flagged and not res.host_saturated:
                res.host_saturated = True
                text = host_warning(self.label, run)
                res.warnings.append(text)
                self._echo(f"WARNING: {text}")
            res.host_saturated_s = run.saturated_s
            res.host_cpu_mean_pct = run.mean_cpu_pct
        return row

    def decision(self, row: dict[str, Any]) -> None:
        self.recorder.decisions.write({**self.key, **row})
        self.metric = row.get("metric_mean")
        self.target = row.get("target")
        if row.get("action") == "scale":
            self.event(row["t_s"], "scale", "",
                       f"{row.get('current_replicas')}→{row.get('desired')} "
                       f"reason={row.get('reason')}")

    def finish_kept(self, trial_id: str) -> None:
        """--keep-metrics: the trial's kept Prometheus data completed (after tear-down)."""
        kept = self.recorder.kept
        if kept is None:
            return
        try:
            self.result.kept_metrics_bytes = kept.finish_trial(trial_id)
            self._echo(f"  kept metrics: {kept.root / trial_id} "
                       f"({self.result.kept_metrics_bytes / 1e6:.1f} MB)")
        except Exception as e:  # the measured CSVs stay valid without the kept blocks
            self.warn(f"kept metrics incomplete: {e}")

    def finish(self) -> TrialResult:
        self.result.p95_ms = self.hist_total.percentile(95)
        return self.result
