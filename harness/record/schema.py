"""Every CSV the harness writes, declared once, with units in the column names.

Analysis reads only these files; any two runs with the same SCHEMA_VERSION can be compared.
The core columns (docs/architecture.md, "Results layout") come first, in that order; extra columns follow them.
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
    ("host_cpu_pct", "the whole machine's CPU busy share in that second, percent of all cores (/proc/stat); empty in the simulator"),
    ("host_cpu_pressure_pct", "share of that second in which some runnable task waited for a CPU (/proc/pressure/cpu, PSI 'some'); empty where the kernel has no PSI"),
    ("host_saturated", "1 when that measured second was saturated (host_cpu_pct ≥ 90 or host_cpu_pressure_pct ≥ 80); a trial is flagged host_saturated after 3 such seconds in a row"),
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
    "pod_created": "kubernetes: the API server created a replica's pod (its creationTimestamp)",
    "pod_scheduled": "kubernetes: the scheduler bound the pod to a node",
    "pod_backoff": "kubernetes: the kubelet holds a crashed container in CrashLoopBackOff "
                   "before restarting it",
    "pod_deleting": "kubernetes: the pod is terminating (deleted, scaled away)",
    "pod_deleted": "kubernetes: the pod is gone from the API",
    "replica_in_service": "kubernetes: the pod's address entered the Service's ready "
                          "endpoints (kube-proxy routes to it within its sync period)",
    "replica_out_of_service": "kubernetes: the pod's address left the Service's ready "
                              "endpoints",
    "worker_joined": "a remote load worker joined (`harness worker`), or any worker late",
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
    ("disturbances", "number of disturbances (load steps up, surges, marks and faults)"),
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
    ("host_cpu_mean_pct", "the machine's mean CPU busy share over the measured window, "
                          "% of all cores; empty where not measured"),
    ("host_saturated_s", "measured seconds in which the machine was saturated "
                         "(timeseries.csv host_saturated); empty where not measured"),
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
    ("disturbance", "name, e.g. spike_t30, surge_t15, or a mark's name"),
    ("kind", "spike | step | surge | mark | crash | kill | pause"),
    ("t0_s", "when it happened"), ("window_end_s", "next disturbance or trial end"),
    ("peak_s", "when the load peaked (surge, ramped step), else t0_s; recovery needs "
               "the SLO to hold for stable_s past it"),
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
           "Generated by `python -m harness.record.schema`; do not edit by hand.", "",
           "Text cells that start with `=`, `+`, `-`, `@`, a tab or a carriage return are "
           "written with a leading `'` (a number such as `-3` is left alone): a spreadsheet "
           "would otherwise run such a cell as a formula, and free text such as `detail` "
           "can carry what a replica or a user wrote. Strip the `'` when you need the "
           "original text. Every file is written through one atomic writer "
           "(`harness/fsutil.py`: a fresh temp file in the same folder, fsync, rename); a "
           "result file that is a link, a FIFO or anything but a regular file is never "
           "written through nor read.", ""]
    for fname, cols in FILES.items():
        out += [f"## {fname}", "", "| column | meaning |", "| --- | --- |"]
        out += [f"| `{c.name}` | {c.doc.replace('|', '/')} |" for c in cols]
        if fname == "summary.csv":
            out += ["| `<metric>_<disturbance>` | per disturbance, for each of: "
                    + ", ".join(f"`{c.name}`" for c in DISTURBANCE_METRICS) + " |"]
        out.append("")
        if fname == "events.csv":
            out += ["### Event kinds", "", "| kind | meaning |", "| --- | --- |"]
            out += [f"| `{k}` | {d.replace('|', '/')} |" for k, d in EVENT_KINDS.items()]
            out.append("")
    out += ["## Host saturation", "",
            "Every second the harness also measures the machine it runs on "
            "(harness/record/host.py): `host_cpu_pct` from /proc/stat and, where the "
            "kernel has PSI, `host_cpu_pressure_pct` from /proc/pressure/cpu. A trial "
            "with 3 saturated seconds in a row is flagged `host_saturated`: a warning "
            "naming the machine (hostname, cores) and the time, in the terminal summary "
            "(column `host sat s`), run.json (per trial `host_saturated`, "
            "`host_saturated_s`, `host_cpu_mean_pct`, and run-level `host_saturated`), "
            "report.html (a warning and the Host panel) and `harness compare`. summary.csv "
            "carries `host_cpu_mean_pct` and `host_saturated_s`. The load generator's own "
            "`loadgen_saturated` flag is separate: it is about its own process.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(), end="")
