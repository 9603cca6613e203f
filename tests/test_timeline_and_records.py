"""Fault timeline (fake clock, fake deployer) and crash-safe result files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from harness.clock import FakeClock
from harness.deploy.base import ReplicaState
from harness.faults.timeline import FaultTimeline, plan
from harness.record.schema import TIMESERIES, names
from harness.record.writer import CsvSink, write_json_atomic
from harness.run import trial_order
from harness.scenario.models import Fault
from tests.fakes import FakeDeployer


def test_plan_filters_and_orders() -> None:
    faults = [Fault(at_s=30, action="crash", count=1),
              Fault(at_s=10, action="pause", count=2, duration_s=5, strategies=["b"]),
              Fault(at_s=20, action="kill")]
    assert [(p.at_s, p.action) for p in plan(faults, "a")] == [(20, "kill"), (30, "crash")]
    assert [p.at_s for p in plan(faults, "b")] == [10, 20, 30]


def test_timeline_injects_at_time_and_reverts_pause() -> None:
    clock = FakeClock()
    dep = FakeDeployer(4)
    dep.deploy()
    got: list[tuple[float, str, str, str]] = []
    faults = [Fault(at_s=5, action="crash", count=2),
              Fault(at_s=8, action="pause", count=1, duration_s=3)]
    tl = FaultTimeline(plan(faults, "x"), dep, clock, t0=0.0, seed=1,
                       on_fault=lambda *a: got.append(a))
    clock.advance(4.9)
    tl.step()
    assert got == []
    clock.advance(0.1)
    tl.step()
    crashed = [c for c in dep.calls if c[0] == "crash"]
    assert len(crashed) == 2 and len({c[1] for c in crashed}) == 2
    clock.advance(3)
    tl.step()
    paused = [c[1] for c in dep.calls if c[0] == "pause"]
    assert len(paused) == 1
    # the pause hits a replica that was still ready, not a crashed one
    assert paused[0] not in {c[1] for c in crashed}
    assert tl.due() == pytest.approx(11)
    clock.advance(3)
    tl.step()
    assert ("unpause", paused[0]) in dep.calls
    assert tl.due() is None
    kinds = [g[1] for g in got]
    assert kinds == ["fault", "fault", "fault", "fault_reverted"]


def test_revert_all_unpauses_on_teardown() -> None:
    clock = FakeClock()
    dep = FakeDeployer(2)
    dep.deploy()
    tl = FaultTimeline(plan([Fault(at_s=0, action="pause", count=2, duration_s=60)], "x"),
                       dep, clock, 0.0, 1, lambda *a: None)
    tl.step()
    assert all(r.state == ReplicaState.PAUSED for r in dep.replicas())
    tl.revert_all()
    assert all(r.state == ReplicaState.READY for r in dep.replicas())


def test_same_seed_same_victims() -> None:
    def victims(seed: int) -> list[str]:
        dep = FakeDeployer(6)
        dep.deploy()
        tl = FaultTimeline(plan([Fault(at_s=0, count=3)], "x"), dep, FakeClock(), 0.0, seed,
                           lambda *a: None)
        tl.step()
        return [c[1] for c in dep.calls]
    assert victims(7) == victims(7)


@pytest.mark.parametrize(("rep", "expected"), [
    (1, ["a", "b", "c"]), (2, ["b", "c", "a"]), (3, ["c", "a", "b"]), (4, ["a", "b", "c"]),
], ids=["rep1", "rep2", "rep3", "wraps"])
def test_trial_order_rotates(rep: int, expected: list[str]) -> None:
    assert trial_order(["a", "b", "c"], rep) == expected


def test_csv_sink_rejects_unknown_columns(tmp_path: Path) -> None:
    sink = CsvSink(tmp_path / "t.csv", TIMESERIES)
    with pytest.raises(KeyError):
        sink.write({"nope": 1})
    sink.close()


def test_rows_survive_sigkill(tmp_path: Path) -> None:
    """A writer killed with SIGKILL mid-run leaves every finished row readable."""
    path = tmp_path / "ts.csv"
    code = textwrap.dedent(f"""
        import os, sys, time
        from harness.record.schema import TIMESERIES
        from harness.record.writer import CsvSink
        sink = CsvSink(__import__('pathlib').Path({str(path)!r}), TIMESERIES)
        for t in range(1000):
            sink.write({{"run_id": "r", "strategy": "s", "trial": 1, "t_s": t, "ok_rps": t}})
            if t == 41:
                print("ready", flush=True)
                time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    df = pd.read_csv(path)
    assert list(df.columns) == names(TIMESERIES)
    assert len(df) == 42 and df["t_s"].tolist() == list(range(42))


def test_json_atomic_replaces(tmp_path: Path) -> None:
    p = tmp_path / "run.json"
    write_json_atomic(p, {"status": "running"})
    write_json_atomic(p, {"status": "complete"})
    assert '"complete"' in p.read_text()
    assert [x.name for x in tmp_path.iterdir()] == ["run.json"]


def test_run_serves_loadgen_metrics_on_loopback() -> None:
    import urllib.request

    from harness.run import _serve_metrics

    on_row, on_event, url = _serve_metrics(0)
    assert on_row is not None and on_event is not None and url is not None
    assert url.startswith("http://127.0.0.1:")
    on_row({"strategy": "auto", "trial": 1, "t_s": 3, "offered_rps": 600, "ok_rps": 512,
            "p95_ms": 180.5, "replicas_ready": 4})
    on_event({"strategy": "auto", "trial": 1, "t_s": 3.2, "kind": "fault", "action": "crash",
              "outcome": "ok"})
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    assert 'harness_offered_requests_per_second{strategy="auto"} 600.0' in body
    assert 'harness_requests_total{outcome="ok",strategy="auto"} 512.0' in body
    assert 'harness_replicas{state="ready",strategy="auto"} 4.0' in body
    assert 'harness_faults_total{action="crash",strategy="auto"} 1.0' in body
    assert _serve_metrics(None) == (None, None, None)
