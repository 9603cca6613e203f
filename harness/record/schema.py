"""Every CSV the harness writes, declared once, with units in the column names.

Analysis reads only these files; any two runs with the same SCHEMA_VERSION can be compared.
The core columns of DESIGN.md come first, in that order; extra columns follow them.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1


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
)

EVENTS = KEY + _cols(
    ("t_s", "seconds since the trial's load started (fractional)"),
    ("kind", "load_stage | fault | fault_reverted | scale | replica_started | replica_ready | replica_exited | replica_restarted | worker_lost | note"),
    ("replica", "replica id, when the event concerns one"),
    ("detail", "free text / key=value pairs"),
)

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
    ("forecast", "predictive policy: forecast total demand (metric × replicas) over its "
                 "lead time, that it scaled for; empty for other policies"),
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


SUMMARY_EXTRA = _cols(
    ("duration_s", "measured seconds (t_s ≥ 0)"),
    ("ok_requests", "successful requests"),
    ("offered_requests", "requests the load profile asked for (open model)"),
    ("sent_requests", "requests actually sent (offered − sent: load-generator lag)"),
    ("dropped_requests", "open-model send slots no free user could take"),
    ("goodput_rps", "successful requests within the latency SLO (slo.p95_ms) per second"),
    ("p50_ms", "median latency over the trial (merged histograms)"),
    ("max_ms", "maximum latency over the trial"),
    ("latency_source", "histogram (exact merge) | approx (no histograms recorded) | none"),
    ("requests_per_replica_s", "successful requests per replica-second (efficiency)"),
    ("replicas_max", "most replicas running in any second"),
    ("disturbances", "number of disturbances (load steps up and faults)"),
    ("not_recovered", "disturbances the SLO did not recover from before the trial ended"),
    ("recovered", "1 when every disturbance recovered, 0 when one did not, empty without any"),
    ("recovery_s", "worst recovery time over the disturbances; empty when one did not recover"),
    ("failed_in_disturbances", "failed requests inside disturbance windows"),
    ("scale_up_reaction_s", "mean over disturbances of: t0 → first new replica ready"),
    ("capacity_rps_per_replica", "per-replica capacity behind the demand curve"),
    ("capacity_source", "calibrated (harness calibrate) | nominal (WORKERS/SERVICE_MS) | none"),
    ("elasticity_accuracy_u_pct", "SPEC RG under-provisioning accuracy θ_U, %"),
    ("elasticity_accuracy_o_pct", "SPEC RG over-provisioning accuracy θ_O, %"),
    ("elasticity_timeshare_u_pct", "SPEC RG under-provisioning timeshare τ_U, %"),
    ("elasticity_timeshare_o_pct", "SPEC RG over-provisioning timeshare τ_O, %"),
    ("elasticity_jitter_per_min", "SPEC RG jitter: (supply − demand adaptations) per minute"),
    ("elasticity_under_replicas", "mean missing replicas (demand − ready, when positive)"),
    ("elasticity_over_replicas", "mean surplus replicas (ready − demand, when positive)"),
)

DISTURBANCE_METRICS = _cols(
    ("recovery_s", "seconds until the SLO held again for stable_s; empty = not recovered"),
    ("recovered", "1 recovered, 0 not recovered"),
    ("slo_violation_s", "SLO-violation seconds in the disturbance's window"),
    ("failed", "failed requests in the disturbance's window"),
    ("scale_up_reaction_s", "t0 → first new replica ready within the window; empty = none"),
)

DISTURBANCES_CSV = _cols(
    ("run_id", ""), ("strategy", ""), ("trial", ""),
    ("disturbance", "name, e.g. spike_t30"), ("kind", "spike | step | crash | kill | pause"),
    ("t0_s", "when it happened"), ("window_end_s", "next disturbance or trial end"),
    ("recovered", "1 / 0"), ("recovery_s", "empty = not recovered"),
    ("slo_violation_s", "in the window"), ("requests", "completed in the window"),
    ("failed", "failed in the window"), ("scale_up_reaction_s", "empty = no new replica"),
    ("replicas_hit", "fault victims, ';'-separated"),
)

# Non-numeric summary columns (not aggregated, not usable in thresholds).
TEXT_COLUMNS = frozenset({"run_id", "strategy", "latency_source", "capacity_source"})


def names(columns: tuple[Column, ...]) -> list[str]:
    return [c.name for c in columns]


def summary_columns() -> list[str]:
    """summary.csv's fixed columns; per-disturbance ones follow them."""
    return names(SUMMARY_CORE) + names(SUMMARY_EXTRA)


FILES: dict[str, tuple[Column, ...]] = {
    "timeseries.csv": TIMESERIES,
    "events.csv": EVENTS,
    "decisions.csv": DECISIONS,
    "summary.csv": SUMMARY_CORE + SUMMARY_EXTRA,
    "disturbances.csv": DISTURBANCES_CSV,
}


def markdown() -> str:
    """docs/columns.md, generated from the declarations above (a test keeps it in sync)."""
    out = [f"# Result columns (schema version {SCHEMA_VERSION})", "",
           "Generated by `python -m harness.record.schema`; do not edit by hand.", ""]
    for fname, cols in FILES.items():
        out += [f"## {fname}", "", "| column | meaning |", "| --- | --- |"]
        out += [f"| `{c.name}` | {c.doc.replace('|', '/')} |" for c in cols]
        if fname == "summary.csv":
            out += ["| `<metric>_<disturbance>` | per disturbance, for each of: "
                    + ", ".join(f"`{c.name}`" for c in DISTURBANCE_METRICS) + " |"]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(), end="")
