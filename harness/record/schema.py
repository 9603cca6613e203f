"""Every CSV the harness writes, declared once, with units in the column names.

Analysis reads only these files; any two runs with the same SCHEMA_VERSION can be compared.
The core columns of DESIGN.md come first, in that order; extra columns follow them.
"""

from __future__ import annotations

from dataclasses import dataclass

# 2: time_unix_s in timeseries.csv and events.csv; structured event columns (stage, rps,
# users, ramp_s, action, outcome). Version-1 runs are upgraded on load
# (harness.record.upgrade).
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Column:
    name: str
    doc: str


def _cols(*pairs: tuple[str, str]) -> tuple[Column, ...]:
    return tuple(Column(n, d) for n, d in pairs)


KEY = _cols(
    ("run_id", "the run's id (folder name under results/)"),
    ("strategy", "strategy name from the scenario"),
    ("trial", "repetition number, 1-based"),
)

TIMESERIES = KEY + _cols(
    ("t_s", "second since the trial's load started (warm-up rows are negative); the row covers [t_s, t_s+1)"),
    ("offered_rps", "target request rate of the load profile in that second (open model) / requests due (closed)"),
    ("sent_rps", "requests actually sent in that second"),
    ("ok_rps", "requests completed successfully in that second"),
    ("failed_rps", "requests that failed in that second (any cause)"),
    ("p50_ms", "median latency of requests completed in that second, from intended send time"),
    ("p95_ms", "95th percentile latency, same requests"),
    ("p99_ms", "99th percentile latency, same requests"),
    ("max_ms", "maximum latency, same requests"),
    ("replicas_desired", "replicas the deployer/autoscaler wants"),
    ("replicas_running", "replica containers/processes running"),
    ("replicas_ready", "replicas whose readiness endpoint answered"),
    ("dropped_rps", "open model: send slots no free user could take (k6 dropped_iterations)"),
    ("failed_status_rps", "failures with an HTTP error status (e.g. 503)"),
    ("failed_timeout_rps", "failures by request timeout"),
    ("failed_conn_rps", "failures by connection refused/reset"),
    ("failed_other_rps", "other failures"),
    ("in_flight", "requests in flight at the end of the second"),
    ("autoscaler_metric", "the autoscaler's observed per-replica metric (mean over ready replicas)"),
    ("autoscaler_target", "the autoscaler's target for that metric"),
    ("replicas_cpu_pct", "CPU of all app replicas, percent of one core"),
    ("loadgen_cpu_pct", "CPU of the load generator processes, percent of one core"),
    ("loadgen_saturated", "1 when the load generator was saturated in that second"),
    ("latency_hist", "that second's latency histogram (harness.record.histogram encoding), for exact window percentiles"),
    ("time_unix_s", "wall-clock start of the row's second, seconds since the Unix epoch (UTC), to join other data (e.g. Prometheus)"),
)

# Every `kind` the code writes to events.csv (tests/test_event_kinds.py checks both ways).
EVENT_KINDS: dict[str, str] = {
    "load_stage": "a load stage began (stage, rps or users, ramp_s); stage=warmup at t<0",
    "fault": "a fault was injected into a replica (action; outcome ok / error / skipped)",
    "fault_reverted": "a fault was undone (action=unpause; outcome)",
    "scale": "the autoscaler changed the desired replicas (detail: from→to reason=…)",
    "deployed": "the deployer brought the strategy's replicas up",
    "scale_applied": "the deployer applied a new replica count",
    "torn_down": "the deployer removed the trial's replicas",
    "swarm_init": "the harness initialised a single-node Docker swarm",
    "replica_started": "a replica container/process started",
    "replica_ready": "a replica's readiness endpoint answered",
    "replica_exited": "a replica exited (detail: exit code)",
    "replica_restarted": "a replica was restarted in place",
    "replica_removed": "a replica disappeared (scaled away or rescheduled)",
    "replica_paused": "a replica was paused",
    "replica_resumed": "a paused replica runs again",
    "replica_lb_traffic": "the load balancer sent a replica its first request",
    "replica_first_scrape": "the metrics source first scraped a replica",
    "worker_joined": "a load worker joined late",
    "worker_lost": "a load worker was lost",
    "loadgen_saturated": "the load generator was saturated",
    "error": "an error of the load generator",
    "note": "free text describing the run (e.g. the simulator's parameters)",
}

# Structured event fields: a column each, so analysis never parses `detail`.
EVENT_FIELDS = _cols(
    ("stage", "load_stage: stage index, or 'warmup'"),
    ("rps", "load_stage: target rate of the stage (open model), req/s"),
    ("users", "load_stage: users of the stage (closed model)"),
    ("ramp_s", "load_stage: seconds the stage ramps to its target"),
    ("action", "fault / fault_reverted: crash | kill | pause | unpause"),
    ("outcome", "fault / fault_reverted: ok | error | skipped"),
)

EVENTS = KEY + _cols(
    ("t_s", "seconds since the trial's load started (fractional)"),
    ("kind", " | ".join(EVENT_KINDS) + " (see the kinds below)"),
    ("replica", "replica id, when the event concerns one"),
    ("detail", "free text for people; analysis reads the structured columns"),
    ("time_unix_s", "wall-clock time of the event, seconds since the Unix epoch (UTC)"),
) + EVENT_FIELDS

DECISIONS = KEY + _cols(
    ("t_s", "seconds since the trial's load started"),
    ("policy", "policy name"),
    ("current_replicas", "replicas before the decision"),
    ("ready", "ready replicas"),
    ("unready", "replicas not ready yet"),
    ("missing", "ready replicas with no metric sample"),
    ("metric_values", "per-replica metric values, ';'-separated"),
    ("metric_mean", "mean of the ready replicas' values"),
    ("target", "target value per replica"),
    ("recommended", "raw recommendation of the replica calculation"),
    ("stabilized", "after the stabilization window"),
    ("rate_limited", "after the scaling policies (rate limits)"),
    ("desired", "final desired replicas after min/max"),
    ("reason", "why, in the HPA's vocabulary (e.g. ScaleUpLimit, ScaleDownStabilized)"),
    ("action", "what the controller did: scale | none | error"),
)

SUMMARY_CORE = KEY + _cols(
    ("requests", "requests completed (ok + failed) during the measured window"),
    ("failures", "failed requests"),
    ("error_rate", "failures / requests"),
    ("throughput_rps", "ok requests per second over the measured window"),
    ("p95_ms", "p95 latency over the whole trial from the merged histograms"),
    ("p99_ms", "p99 latency, same"),
    ("replica_seconds", "sum over seconds of running replicas (cost)"),
    ("slo_violation_s", "seconds in which the per-second SLO did not hold"),
)


def names(columns: tuple[Column, ...]) -> list[str]:
    return [c.name for c in columns]


FILES: dict[str, tuple[Column, ...]] = {
    "timeseries.csv": TIMESERIES,
    "events.csv": EVENTS,
    "decisions.csv": DECISIONS,
    "summary.csv": SUMMARY_CORE,
}


def markdown() -> str:
    """docs/columns.md, generated from the declarations above (a test keeps it in sync)."""
    out = [f"# Result columns (schema version {SCHEMA_VERSION})", "",
           "Generated by `python -m harness.record.schema`; do not edit by hand.", ""]
    for fname, cols in FILES.items():
        out += [f"## {fname}", "", "| column | meaning |", "| --- | --- |"]
        out += [f"| `{c.name}` | {c.doc.replace('|', '/')} |" for c in cols]
        if fname == "summary.csv":
            out += ["| … | further columns follow (see harness/analysis/summary.py) |"]
        out.append("")
        if fname == "events.csv":
            out += ["### Event kinds", "", "| kind | meaning |", "| --- | --- |"]
            out += [f"| `{k}` | {d.replace('|', '/')} |" for k, d in EVENT_KINDS.items()]
            out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(), end="")
