"""`harness calibrate` against a real replica (local platform): the capacity it finds is
bracketed by a passing and a failing probe, and lies below the nominal WORKERS/SERVICE_MS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import harness.calibrate as cal


@pytest.mark.slow
def test_calibrate_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cal, "PROBE_S", 6)
    monkeypatch.setattr(cal, "SETTLE_S", 2)
    sc = tmp_path / "cap.yaml"
    sc.write_text("""\
name: cap
app:
  env: {WORKERS: 2, SERVICE_MS: 40, SERVICE_DIST: constant, QUEUE_LIMIT: 10}
load:
  stages: [{duration_s: 10, rps: 10}]
slo: {p95_ms: 200, error_rate: 0.01}
strategies: [{name: m, kind: manual, replicas: 1}]
""")
    lines: list[str] = []
    cap = cal.calibrate(sc, platform="local", echo=lines.append)
    # nominal 2 / 0.040 s = 50 req/s; constant service times queue little below it
    assert cap is not None and 25 <= cap <= 50, lines
    data = json.loads(cal.calibration_path(sc).read_text())
    assert data["capacity_rps_per_replica"] == cap
    rates = [p["rate_rps"] for p in data["probes"]]
    assert any(r > cap for r in rates), "the capacity must be bracketed by a failing probe"
    assert cal.stored_capacity(sc) == {"capacity_rps_per_replica": cap,
                                       "source": "cap.calibration.json"}
