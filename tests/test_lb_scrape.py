"""An autoscaler's ``scrape_interval_s``: the pace Prometheus scrapes what its metric reads.

Pure: the spec refuses a rate window that cannot hold two scrapes, the deployer options
it becomes (HAProxy's job for lb_*, the replicas' otherwise), the prometheus.yml of the
docker and local platforms (checked by the real promtool). Real: a Docker trial's
Prometheus scrapes HAProxy 4× a second while the replicas stay at 1 s; on the local
platform (real HAProxy and Prometheus processes) and on sim, an lb_rps autoscaler with a
1 s window gets a value at every sync.
"""

from __future__ import annotations

import shutil
import textwrap
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from harness.autoscale import metrics as m
from harness.autoscale.spec import RATE_PRESETS, AutoscalerSpec, CustomMetric
from harness.deploy import prometheus
from harness.platforms.local import local_prometheus
from harness.run import RunOptions, run_scenario
from tests.promtool import check_config
from tests.scenario_text import spike_yaml
from tests.waiting import wait_until


def auto(metric: Any, **kw: Any) -> AutoscalerSpec:
    return AutoscalerSpec(target=50, max_replicas=6, metric=metric, **kw)


@pytest.mark.parametrize(("metric", "window_s", "scrape_s", "ok"), [
    ("lb_rps", 1, None, False),  # one 1 s scrape in a 1 s window: never a rate
    ("lb_rps", 1, 0.25, True),
    ("lb_rps", 1, 0.5, True),
    ("lb_rps", 1, 0.6, False),
    ("lb_rps", 2, None, True),
    ("rps", 1.5, None, False),
    ("latency_p95_ms", 1, None, False),
    ("cpu", 3, 2, False),
    ("utilization", 1, None, True),  # a gauge: one sample is an average
    ("lb_queue", 1, None, True),
], ids=lambda v: str(v))
def test_a_rate_window_must_hold_two_scrapes(metric: str, window_s: float,
                                              scrape_s: float | None, ok: bool) -> None:
    kw: dict[str, Any] = {"window_s": window_s}
    if scrape_s is not None:
        kw["scrape_interval_s"] = scrape_s
    if ok:
        auto(metric, **kw)
        return
    with pytest.raises(ValidationError, match="fewer than two scrapes"):
        auto(metric, **kw)


@pytest.mark.parametrize("scrape_s", [0.05, 0, -1, 61])
def test_scrape_interval_bounds(scrape_s: float) -> None:
    with pytest.raises(ValidationError):
        auto("utilization", scrape_interval_s=scrape_s)


def test_the_rate_presets_are_the_ones_computed_with_rate() -> None:
    assert set(RATE_PRESETS) == {k for k, p in m.PRESETS.items() if "rate(" in p.promql}


@pytest.mark.parametrize(("metric", "scrape_s", "options"), [
    ("lb_rps", None, {}),
    ("lb_rps", 0.25, {"lb_scrape_interval_s": 0.25}),
    ("lb_queue", 0.5, {"lb_scrape_interval_s": 0.5}),
    ("utilization", 0.5, {"scrape_interval_s": 0.5}),
    ("rps", 0.5, {"scrape_interval_s": 0.5}),
    (CustomMetric(name="q", promql="sum by (instance) (app_in_flight)"), 0.5,
     {"scrape_interval_s": 0.5, "lb_scrape_interval_s": 0.5}),
], ids=["default", "lb_rps", "lb_queue", "utilization", "rps", "custom"])
def test_scrape_options_name_the_job_the_metric_reads(
        metric: Any, scrape_s: float | None, options: dict[str, float]) -> None:
    kw = {} if scrape_s is None else {"scrape_interval_s": scrape_s}
    assert m.scrape_options(auto(metric, window_s=2, **kw)) == options
    assert m.scrape_options(None) == {}


@pytest.mark.parametrize("platform", ["docker", "local"])
@pytest.mark.parametrize("lb_s", [None, 0.25])
def test_haproxys_job_gets_its_own_pace(tmp_path: Path, platform: str,
                                        lb_s: float | None) -> None:
    if platform == "docker":
        text = prometheus.render_config(app_dns_name="app", app_port=8000,
                                        lb_target="lb:8404", lb_scrape_interval_s=lb_s)
    else:
        text = local_prometheus.render_config(targets_file=tmp_path / "t.json",
                                              exporter_port=9, lb_scrape_interval_s=lb_s)
    doc = yaml.safe_load(text)
    assert doc["global"]["scrape_interval"] == "1000ms"
    app, lb = doc["scrape_configs"]
    assert "scrape_interval" not in app  # the replicas keep the global pace
    if lb_s is None:
        assert "scrape_interval" not in lb
    else:
        assert (lb["scrape_interval"], lb["scrape_timeout"]) == ("250ms", "200ms")
    check_config(tmp_path, text)


# ── real components ──────────────────────────────────────────────────────────────────

QUICK = """
strategies:
  - name: quick
    kind: orchestrated
    replicas: 2
    autoscaler:
      policy: hpa
      metric: lb_rps
      target: 56
      min_replicas: 2
      max_replicas: 4
      interval_s: 0.5
      window_s: 1
      scrape_interval_s: 0.25
"""


def _run(tmp: Path, platform: str, stages: list[Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    (tmp / "s.yaml").write_text(spike_yaml("quick", 3, stages, textwrap.dedent(QUICK)),
                                encoding="utf-8")
    lines: list[str] = []
    code = run_scenario(tmp / "s.yaml", RunOptions(platform=platform, out=tmp / "out",
                                                     run_id="r", echo=lines.append))
    assert code in (0, 1), "\n".join(lines)
    run = tmp / "out" / "r"
    return pd.read_csv(run / "decisions.csv"), pd.read_csv(run / "events.csv")


def _every_sync_has_a_value(dec: pd.DataFrame) -> None:
    """From 2 s into the load on: a 1 s window of 0.25 s scrapes always holds a rate."""
    rows = dec[dec["t_s"] >= 2]
    assert len(rows) >= 10, len(rows)
    assert rows["metric_mean"].notna().all(), rows[rows["metric_mean"].isna()]


def test_sim_scrapes_at_the_autoscalers_pace(tmp_path: Path) -> None:
    dec, ev = _run(tmp_path, "sim", [("base", 10, 100, None), ("spike", 10, 250, 1)])
    _every_sync_has_a_value(dec)
    notes = ev[ev["kind"] == "note"]["detail"].astype(str)
    assert notes.str.contains("scrape_interval_s=0.25").any(), notes.tolist()
    # 250 req/s ÷ 56 → 5, capped at 4: the autoscaler saw the spike
    assert dec["desired"].max() == 4


@pytest.mark.slow
def test_local_platform_reads_lb_rps_from_a_fast_haproxy_job(tmp_path: Path) -> None:
    if not (shutil.which("haproxy") and shutil.which("prometheus")):
        pytest.skip("haproxy and prometheus binaries are needed (scripts/setup.sh)")
    dec, _ = _run(tmp_path, "local", [("base", 12, 60, None)])
    _every_sync_has_a_value(dec)
    total = (dec["metric_mean"] * dec["ready"])[dec["t_s"] >= 4]
    assert total.between(40, 80).mean() > 0.8, total.describe()  # the 60 req/s sent


@pytest.mark.docker
@pytest.mark.slow
def test_a_docker_trials_prometheus_scrapes_haproxy_4x_a_second(
        docker_client: Any, new_run_id: Any) -> None:
    from harness.clock import RealClock
    from harness.deploy.base import AppSpec, DeploySpec
    from harness.deploy.registry import create
    from tests.test_deploy_docker import need_images

    need_images(docker_client)
    spec = DeploySpec(run_id=new_run_id("lbsc"), trial_id="quick-1",
                      app=AppSpec(env={"WORKERS": "4", "SERVICE_MS": "2", "STARTUP_S": "0"}),
                      replicas=1)
    d = create("docker", "manual", client=docker_client, spec=spec,
               on_event=lambda e: None, clock=RealClock(), lb_scrape_interval_s=0.25)
    try:
        d.deploy()
        d.wait_ready(1, 60)
        url = d.prometheus_url()
        assert url is not None

        def scrapes(job: str) -> float | None:
            got = prometheus.query(url, f'count_over_time(up{{job="{job}"}}[4s])')
            return float(got[0]["value"][1]) if got else None

        # let both jobs run ≥ 4 s first
        assert wait_until(lambda: (scrapes("app") or 0) >= 4, 30) is not None
        time.sleep(1)
        lb, app = scrapes(prometheus.LB_JOB), scrapes(prometheus.APP_JOB)
        assert lb is not None and 14 <= lb <= 17, lb  # 4 s ÷ 0.25 s
        assert app is not None and 3 <= app <= 5, app  # the replicas: 1 s
    finally:
        d.teardown()


def test_a_run_recorded_before_the_rule_still_replays(tmp_path: Path) -> None:
    """run.json of a run made before the two-scrape rule (a 1 s window, 1 s scrapes): the
    new-run check must not make its results unreadable."""
    import json

    from harness.replay import replay_run

    dec, _ = _run(tmp_path, "sim", [("base", 6, 100, None), ("spike", 6, 250, 1)])
    run = tmp_path / "out" / "r"
    meta = json.loads((run / "run.json").read_text(encoding="utf-8"))
    block = meta["scenario"]["strategies"][0]["autoscaler"]
    del block["scrape_interval_s"]
    with pytest.raises(ValidationError):
        AutoscalerSpec.model_validate(block)  # a new run is refused …
    (run / "run.json").write_text(json.dumps(meta), encoding="utf-8")
    (track,) = replay_run(run, out=tmp_path / "rep", echo=lambda _: None)  # … old ones read
    assert [int(d) for d in dec["desired"]] == [r["desired"] for r in track.replayed["hpa"]]
