"""The sim platform end to end: `harness run --platform sim` writes the same CSVs as a real
run (rows, events, decisions), the analysis and report work on them unchanged, and each
strategy kind behaves as on Docker (manual stays short, compose restarts, orchestrated
replaces and autoscales)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.rundata import load_run
from harness.analysis.summary import summarize_run
from harness.platforms.sim.params import SimParams
from harness.platforms.sim.trial import run_sim_trial
from harness.record.schema import EVENTS, TIMESERIES, names
from harness.run import RunOptions, run_scenario
from harness.scenario.loader import load_scenario
from harness.trial import Recorder
from tests.scenario_text import spike_yaml

ROOT = Path(__file__).resolve().parent.parent

SPIKE_CRASH = spike_yaml("sim-e2e", 5, [("base", 10, 100, None), ("spike", 15, 400, 1),
                                 ("after", 20, 100, 1)], """
faults:
  - {at_s: 30, action: crash, count: 1}
strategies:
  - {name: manual, kind: manual, replicas: 3}
  - {name: compose, kind: compose, replicas: 3}
  - name: autoscale
    kind: orchestrated
    replicas: 3
    autoscaler:
      policy: hpa
      metric: utilization
      target: 0.6
      min_replicas: 2
      max_replicas: 12
      interval_s: 2
      behavior: {scale_down: {stabilization_window_s: 10}}
""")


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def spike_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("simrun")
    lines: list[str] = []
    code = run_scenario(write(tmp, SPIKE_CRASH), RunOptions(platform="sim", out=tmp / "out",
                                                              run_id="r1", echo=lines.append))
    assert code == 0, "\n".join(lines)
    return tmp / "out" / "r1"


def test_run_writes_the_real_files_and_columns(spike_run: Path) -> None:
    for f in ("run.json", "timeseries.csv", "events.csv", "decisions.csv", "summary.csv",
              "report.html"):
        assert (spike_run / f).exists(), f
    ts = pd.read_csv(spike_run / "timeseries.csv")
    ev = pd.read_csv(spike_run / "events.csv")
    assert list(ts.columns) == names(TIMESERIES)
    assert list(ev.columns) == names(EVENTS)
    for strat in ("manual", "compose", "autoscale"):
        t = ts[ts["strategy"] == strat]
        assert t["t_s"].min() == -2 and t["t_s"].max() >= 44
        assert t["t_s"].is_monotonic_increasing and t["t_s"].is_unique
        measured = t[t["t_s"] >= 0]
        # Poisson arrivals: sent follows the profile's area within noise
        assert measured["sent_rps"].sum() == pytest.approx(measured["offered_rps"].sum(),
                                                           rel=0.03)
        assert (t["ok_rps"] + t["failed_rps"]).sum() == t["sent_rps"].sum()  # drained
        assert t["latency_hist"].fillna("").str.len().gt(0).all()


def test_events_follow_each_kinds_restart_semantics(spike_run: Path) -> None:
    ev = pd.read_csv(spike_run / "events.csv", keep_default_na=False)
    for strat in ("manual", "compose", "autoscale"):
        e = ev[ev["strategy"] == strat]
        stages = e[e["kind"] == "load_stage"]
        assert (stages.iloc[0]["stage"], float(stages.iloc[0]["rps"])) == ("warmup", 100)
        assert stages.iloc[0]["t_s"] == -2
        assert stages["t_s"].tolist() == [-2, 0, 10, 25]
        fault = e[e["kind"] == "fault"]
        assert fault[["action", "outcome", "detail"]].values.tolist() == [
            ["crash", "ok", "fault=0"]]
        # joins other data: the wall-clock column is the sim's (fake) epoch + t_s
        assert (e["time_unix_s"] - e["t_s"]).round(3).nunique() == 1
        assert fault["t_s"].tolist() == [30]
        victim = fault["replica"].iloc[0]
        exited = e[(e["kind"] == "replica_exited") & (e["replica"] == victim)]
        assert len(exited) == 1 and exited["detail"].iloc[0].startswith("exit_code=137")
        after = e[e["t_s"] > 30]
        if strat == "manual":
            assert not after["kind"].isin(["replica_restarted", "replica_started"]).any()
        elif strat == "compose":
            rs = after[(after["kind"] == "replica_restarted") & (after["replica"] == victim)]
            # Docker's first back-off (0.1 s) plus the engine's restart lag (0.1–0.5 s)
            assert len(rs) == 1 and 30.2 <= rs["t_s"].iloc[0] <= 30.65
            ready = after[(after["kind"] == "replica_ready") & (after["replica"] == victim)]
            # container start (0.3–0.5 s) + STARTUP_S (1 s)
            assert ready["t_s"].iloc[0] - rs["t_s"].iloc[0] == pytest.approx(1.4, abs=0.11)
        else:
            new = after[after["detail"].str.contains(f"replaces={victim}")]
            # restart_delay_s (1 s) plus Swarm's rescheduling (0.2–0.9 s)
            assert len(new) == 1 and 31.2 <= new["t_s"].iloc[0] <= 31.95
    ready0 = ev[(ev["kind"] == "replica_ready") & (ev["t_s"] < 0)]
    assert len(ready0) >= 9  # every first replica became ready before the load


def test_manual_stays_short_compose_recovers(spike_run: Path) -> None:
    ts = pd.read_csv(spike_run / "timeseries.csv")
    last = ts[ts["t_s"] == 44].set_index("strategy")
    assert last.loc["manual", "replicas_ready"] == 2
    assert last.loc["compose", "replicas_ready"] == 3
    crash = ts[(ts["t_s"] == 30)].set_index("strategy")
    # what was inside the crashed replica is re-sent by HAProxy (retry-on empty-response,
    # redispatch): nothing fails, as on Docker
    assert crash["failed_rps"].sum() == 0


def test_without_lb_retries_a_crash_fails_what_was_inside(tmp_path: Path) -> None:
    ts, _ = run_one(tmp_path, SPIKE_CRASH.replace("rps: 400", "rps: 200"), "manual",
                    SimParams(lb_retries=False))
    by_t = ts.set_index("t_s")
    assert by_t.loc[30, "failed_status_rps"] >= 1  # 502s: the requests in the dead replica
    # the dead server stays in the rotation until the health checks fail (fall 2 × 1 s);
    # leastconn even prefers it (no connections): refused connections meanwhile
    assert by_t.loc[30:31, "failed_conn_rps"].sum() > 50
    assert by_t.loc[33:, "failed_rps"].sum() == 0


def test_autoscaler_scales_and_logs_its_decisions(spike_run: Path) -> None:
    dec = pd.read_csv(spike_run / "decisions.csv")
    assert set(dec["strategy"]) == {"autoscale"}
    assert (dec["policy"] == "hpa").all()
    ups = dec[(dec["action"] == "scale") & (dec["desired"] > dec["current_replicas"])]
    # (before the load the idle replicas read 0: the HPA goes to min_replicas first)
    spike_ups = ups[(ups["t_s"] >= 10) & (ups["t_s"] < 25)]
    assert len(spike_ups) >= 1 and spike_ups["desired"].max() >= 6
    ts = pd.read_csv(spike_run / "timeseries.csv")
    a = ts[ts["strategy"] == "autoscale"]
    assert a["replicas_ready"].max() >= 6  # 400 req/s at 0.6 of 80 req/s needs ~9
    assert a["autoscaler_metric"].notna().any()
    ev = pd.read_csv(spike_run / "events.csv", keep_default_na=False)
    assert (ev[(ev["strategy"] == "autoscale")]["kind"] == "scale").any()


def test_analysis_and_summary_work_unchanged(spike_run: Path) -> None:
    s = summarize_run(load_run(spike_run))
    rows = {r["strategy"]: r for r in s.trials.to_dict("records")}
    assert set(rows) == {"manual", "compose", "autoscale"}
    assert "recovery_s_spike_t10" in s.trials.columns
    assert "recovery_s_crash_t30" in s.trials.columns
    # the spike overloads the fixed strategies; the autoscaler loses fewer requests
    assert rows["manual"]["failures"] > 1.2 * rows["autoscale"]["failures"]
    assert rows["autoscale"]["throughput_rps"] > rows["manual"]["throughput_rps"]


def run_one(tmp_path: Path, text: str, strategy: str | None = None,
            params: SimParams | None = None) -> tuple[pd.DataFrame, object]:
    loaded = load_scenario(write(tmp_path, text))
    d = tmp_path / "run"
    d.mkdir(exist_ok=True)
    rec = Recorder(d, "x")
    strat = loaded.scenario.strategy(strategy) if strategy else loaded.scenario.strategies[0]
    res = run_sim_trial(loaded, strat, 1, rec, echo=lambda _: None, params=params)
    rec.close()
    return pd.read_csv(d / "timeseries.csv"), res


def test_same_seed_same_rows(tmp_path: Path) -> None:
    frames = []
    for sub, text in (("a", SPIKE_CRASH), ("b", SPIKE_CRASH),
                      ("c", SPIKE_CRASH.replace("seed: 5", "seed: 6"))):
        (tmp_path / sub).mkdir()
        frames.append(run_one(tmp_path / sub, text, "autoscale")[0])
    a, b, c = frames
    pd.testing.assert_frame_equal(a, b)
    assert not a["ok_rps"].equals(c["ok_rps"])


CLOSED = """
name: closed
seed: 2
app:
  env: {WORKERS: 4, SERVICE_MS: 50, QUEUE_LIMIT: 50}
load:
  model: closed
  warmup_s: 0
  think_time_s: 1.0
  stages:
    - {duration_s: 20, users: 60}
strategies:
  - {name: fixed, kind: compose, replicas: 2}
"""


def test_closed_model_users_with_think_time(tmp_path: Path) -> None:
    ts, _ = run_one(tmp_path, CLOSED)
    steady = ts[(ts["t_s"] >= 3) & (ts["t_s"] < 20)]
    # each user: one request (~55 ms at this light load), then 1 s of thinking
    assert steady["ok_rps"].mean() == pytest.approx(60 / 1.055, rel=0.06)
    assert steady["offered_rps"].equals(steady["sent_rps"].astype(float))
    assert steady["in_flight"].max() <= 60


OVERLOAD = """
name: overload
seed: 3
app:
  env: {WORKERS: 2, SERVICE_MS: 100, QUEUE_LIMIT: 200}
load:
  warmup_s: 0
  timeout_s: 2
  max_in_flight: 50
  stages:
    - {duration_s: 10, rps: 200}
strategies:
  - {name: fixed, kind: manual, replicas: 1}
"""


def test_long_queue_times_out_and_drops_beyond_max_in_flight(tmp_path: Path) -> None:
    # 200 req/s into 20 req/s of capacity with room for 200 waiting: the queue grows past
    # the 2 s timeout, clients give up (the server still works through its queue), the
    # load generator's 50 users are all waiting, and further slots are dropped
    ts, _ = run_one(tmp_path, OVERLOAD)
    late = ts[ts["t_s"] >= 4]
    assert late["dropped_rps"].sum() > 0.5 * late["offered_rps"].sum()
    assert (late["in_flight"] <= 50).all()
    assert late["ok_rps"].sum() == 0
    assert late["failed_timeout_rps"].sum() == late["failed_rps"].sum() > 0
    assert late["max_ms"].max() == pytest.approx(2000, abs=2)


def test_short_queue_rejects_with_503(tmp_path: Path) -> None:
    ts, _ = run_one(tmp_path, OVERLOAD.replace("QUEUE_LIMIT: 200", "QUEUE_LIMIT: 10")
                    .replace("timeout_s: 2", "timeout_s: 5").replace("duration_s: 10",
                                                                     "duration_s: 40"))
    late = ts[(ts["t_s"] >= 2) & (ts["t_s"] < 40)]
    assert late["ok_rps"].mean() == pytest.approx(20, rel=0.1)  # capacity: 2 / 0.1 s
    assert late["failed_status_rps"].mean() == pytest.approx(180, rel=0.1)
    assert late["dropped_rps"].sum() == 0 and late["failed_timeout_rps"].sum() == 0
    # 9 in 10 requests are rejected at once: the median latency is the LB's overhead
    assert late["p50_ms"].max() < 1.5


def test_roundrobin_is_worse_than_leastconn_near_capacity(tmp_path: Path) -> None:
    text = SPIKE_CRASH.replace("rps: 400", "rps: 200")
    (tmp_path / "l").mkdir()
    (tmp_path / "r").mkdir()
    lc, _ = run_one(tmp_path / "l", text, "compose")
    rr, _ = run_one(tmp_path / "r", text, "compose", SimParams(lb_policy="roundrobin"))
    win = (lc["t_s"] >= 12) & (lc["t_s"] < 25)
    assert lc[win]["p95_ms"].mean() < rr[win]["p95_ms"].mean()


PAUSE = """
name: pause
seed: 8
app:
  env: {WORKERS: 4, SERVICE_MS: 50, QUEUE_LIMIT: 50}
load:
  warmup_s: 1
  timeout_s: 3
  stages:
    - {duration_s: 45, rps: 150}
faults:
  - {at_s: 30, action: pause, count: 1, duration_s: PAUSE_S}
strategies:
  - {name: fixed, kind: compose, replicas: 3}
"""


def test_long_pause_times_out_what_it_holds_then_resumes(tmp_path: Path) -> None:
    ts, res = run_one(tmp_path, PAUSE.replace("PAUSE_S", "6"))
    ev = pd.read_csv(tmp_path / "run" / "events.csv", keep_default_na=False)
    fault = ev[ev["kind"].isin(["fault", "fault_reverted"])]
    assert fault[["action", "outcome"]].values.tolist() == [["pause", "ok"], ["unpause", "ok"]]
    assert fault["t_s"].tolist() == [30, 36]
    assert {"replica_paused", "replica_resumed"} <= set(ev["kind"])
    by_t = ts.set_index("t_s")
    # requests inside the frozen replica and those the LB sent it before its health checks
    # failed (2 s) time out 3 s after they were sent; nothing else fails
    assert by_t.loc[32:35, "failed_timeout_rps"].sum() >= 3
    assert by_t["failed_rps"].sum() == by_t["failed_timeout_rps"].sum()
    assert by_t.loc[:31, "failed_rps"].sum() == 0 and by_t.loc[36:, "failed_rps"].sum() == 0
    assert by_t.loc[31:35, "replicas_ready"].max() == 2  # paused: running, not ready
    assert by_t.loc[31:35, "replicas_running"].min() == 3
    assert by_t.loc[40, "replicas_ready"] == 3
    assert ts["ok_rps"].sum() + ts["failed_rps"].sum() == ts["sent_rps"].sum()
    assert res.status == "complete"  # type: ignore[attr-defined]


def test_short_pause_only_delays(tmp_path: Path) -> None:
    ts, _ = run_one(tmp_path, PAUSE.replace("PAUSE_S", "1.5"))
    by_t = ts.set_index("t_s")
    assert ts["failed_rps"].sum() == 0
    assert by_t.loc[30:32, "max_ms"].max() >= 1400  # stuck for the pause, then served
    assert ts["ok_rps"].sum() == ts["sent_rps"].sum()


def test_examples_load(tmp_path: Path) -> None:
    for name in ("big.yaml", "validate.yaml"):
        sc = load_scenario(ROOT / "examples" / name).scenario
        assert sc.strategies
    big = load_scenario(ROOT / "examples" / "big.yaml").scenario
    assert max(s.rps or 0 for s in big.load.stages) >= 10_000
    assert max(s.max_replicas for s in big.strategies) >= 200


METRIC = """
name: metric
seed: 4
app:
  env: {WORKERS: 4, SERVICE_MS: 50, QUEUE_LIMIT: 50}
load:
  warmup_s: 0
  stages:
    - {duration_s: 40, rps: 200}
strategies:
  - name: watched
    kind: orchestrated
    replicas: 4
    autoscaler: {policy: hpa, metric: METRIC, target: TARGET, min_replicas: 4,
                 max_replicas: 4, interval_s: 5, window_s: 10}
"""


@pytest.mark.parametrize(
    ("metric", "target", "lo", "hi"),
    [
        ("utilization", 0.6, 0.55, 0.70),  # 50 req/s × 50 ms / 4 workers = 0.625
        ("rps", 50, 45, 55),  # 200 req/s over 4 replicas
        ("latency_p95_ms", 200, 140, 260),  # M/M/4 at 62.5 %: ~150 ms service tail + waits
        ("cpu", 0.1, 0.01, 0.02),  # 50 req/s × 0.3 ms of HTTP handling
    ],
    ids=["utilization", "rps", "latency_p95_ms", "cpu"],
)
def test_metric_presets_read_the_model_as_prometheus_would(
        tmp_path: Path, metric: str, target: float, lo: float, hi: float) -> None:
    run_one(tmp_path, METRIC.replace("METRIC", metric).replace("TARGET", str(target)))
    dec = pd.read_csv(tmp_path / "run" / "decisions.csv")
    steady = dec[dec["t_s"] >= 15]
    assert len(steady) >= 4 and (steady["missing"] == 0).all()
    assert lo <= steady["metric_mean"].mean() <= hi
    ts = pd.read_csv(tmp_path / "run" / "timeseries.csv")
    assert ts[ts["t_s"] >= 15]["autoscaler_target"].eq(target).all()


def test_a_new_replica_has_no_metric_until_prometheus_found_it(tmp_path: Path) -> None:
    params = SimParams(prom_discovery_s=(5.0, 5.0), container_start_s=(2.0, 2.0))
    text = METRIC.replace("METRIC", "utilization").replace("TARGET", "0.3") \
        .replace("max_replicas: 4", "max_replicas: 8").replace("interval_s: 5", "interval_s: 1")
    run_one(tmp_path, text, params=params)
    dec = pd.read_csv(tmp_path / "run" / "decisions.csv", keep_default_na=False)
    first_up = dec[dec["action"] == "scale"]["t_s"].min()
    after = dec[(dec["t_s"] > first_up) & (dec["t_s"] <= first_up + 10)]
    # the new ones are unready first, then ready but missing, then measured
    assert after["unready"].astype(float).max() >= 1
    assert after["missing"].astype(float).max() >= 1


def test_custom_promql_metric_fails_the_trial_clearly(tmp_path: Path) -> None:
    text = METRIC.replace("metric: METRIC", "metric: {promql: 'sum(up)'}") \
        .replace("TARGET", "1")
    _, res = run_one(tmp_path, text)
    assert res.status == "failed"  # type: ignore[attr-defined]
    assert "custom PromQL" in res.warnings[0]  # type: ignore[attr-defined]


def test_strategies_of_a_repetition_see_the_same_arrivals(spike_run: Path) -> None:
    ts = pd.read_csv(spike_run / "timeseries.csv")
    sent = {s: ts[ts["strategy"] == s]["sent_rps"].tolist()[:40] for s in
            ("manual", "compose", "autoscale")}
    assert sent["manual"] == sent["compose"] == sent["autoscale"]
