"""`harness calibrate`: the rate one replica sustains within the SLO, measured.

One replica of the scenario's app (manual strategy: nothing restarts or scales it behind
our back) gets constant-rate probes from the real load path; each probe is judged by the
scenario's SLO (harness.analysis.calibrate: doubling, then bisection). The result is
stored beside the scenario as `<name>.calibration.json`; `harness run` puts it into
run.json so demand d(t) = ceil(offered / capacity) and the elasticity metrics use it.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from harness.analysis.calibrate import (
    RateMeasurement,
    max_rate_within_slo,
    measurement_from_seconds,
    next_probe,
)
from harness.analysis.rundata import SloSpec
from harness.clock import RealClock
from harness.errors import DeployError, PrerequisiteError
from harness.platform import resolve
from harness.record.writer import write_json_atomic
from harness.scenario.loader import LoadedScenario, load_scenario
from harness.scenario.models import Strategy

PROBE_S = 10
SETTLE_S = 3  # seconds of each probe not judged: queues settle after the rate change
MAX_PROBES = 12


def calibration_path(scenario_path: Path) -> Path:
    return scenario_path.with_name(f"{scenario_path.stem}.calibration.json")


def stored_capacity(scenario_path: Path) -> dict[str, Any] | None:
    p = calibration_path(scenario_path)
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
        cap = float(data["capacity_rps_per_replica"])
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None
    return {"capacity_rps_per_replica": cap, "source": p.name}


def nominal_capacity(loaded: LoadedScenario) -> float | None:
    """WORKERS / SERVICE_MS of the sample app's env, when the scenario sets them."""
    env = loaded.scenario.app.env
    try:
        return float(env.get("WORKERS", "4")) * 1000.0 / float(env.get("SERVICE_MS", "50"))
    except ValueError:
        return None


def probe(loaded: LoadedScenario, base_url: str, rate: float, seed: int) -> RateMeasurement:
    from harness.load.profile import Profile, StageSpec
    from harness.load.runner import LoadRun, LoadSpec

    rows: list[dict[str, Any]] = []
    lp = loaded.scenario.load
    spec = LoadSpec(base_url=base_url, path=loaded.scenario.app.path,
                    profile=Profile.from_stages([StageSpec(PROBE_S, rate, 0)], start_value=rate),
                    timeout_s=lp.timeout_s, max_in_flight=lp.max_in_flight, seed=seed)

    def on_second(s: Any) -> None:
        # the last second is cut short when the load stops: it would under-count
        if 0 <= s.t_s < PROBE_S - 1:
            rows.append({"t_s": s.t_s, "ok_rps": s.ok, "failed_rps": s.failed,
                         "latency_hist": s.histogram.encode()})

    run = LoadRun(spec, on_second=on_second)
    try:
        run.start()
        run.wait(stop=threading.Event())
    finally:
        run.stop()
    return measurement_from_seconds(pd.DataFrame(rows), rate, skip_s=SETTLE_S)


def calibrate(scenario: Path, platform: str | None = None,
              echo: Callable[[str], None] = print) -> float | None:
    from harness.deploy.base import DeploySpec
    from harness.realtime import make_deployer, wait_ready
    from harness.trial import app_spec

    loaded = load_scenario(scenario)
    sc = loaded.scenario
    plat = resolve(platform or sc.platform)
    if plat.name == "sim":
        raise PrerequisiteError("calibrate measures real replicas: use docker or local")
    if plat.name == "docker":
        from harness.platforms.docker.images import ensure_images
        ensure_images(plat.docker)
    slo = SloSpec.of(sc.slo)
    nominal = nominal_capacity(loaded) or 50.0
    echo(f"calibrating {sc.name} on {plat.name}: one replica, {PROBE_S} s probes, SLO p95 ≤ "
         f"{slo.p95_ms:g} ms, errors ≤ {slo.error_rate:.1%} (nominal {nominal:g} req/s)")
    run_id = f"calibrate-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    clock = RealClock()
    strategy = Strategy(name="calibrate", kind="manual", replicas=1)
    spec = DeploySpec(run_id=run_id, trial_id="calibrate-1", app=app_spec(loaded), replicas=1)
    deployer = make_deployer(plat, strategy, spec, lambda ev: None, clock)
    measurements: list[RateMeasurement] = []
    try:
        deployer.deploy()
        wait_ready(deployer, 1, clock, threading.Event())
        rate = next_probe([], slo, start_rps=nominal / 2, max_rps=nominal * 4,
                          resolution_rps=max(1.0, nominal * 0.05))
        while rate is not None and len(measurements) < MAX_PROBES:
            m = probe(loaded, deployer.lb_url(), rate, seed=sc.seed + len(measurements))
            measurements.append(m)
            echo(f"  {rate:8.1f} req/s → served {m.served_rps:7.1f}/s  p95 {m.p95_ms:7.1f} ms"
                 f"  errors {m.error_rate:.2%}")
            rate = next_probe(measurements, slo, start_rps=nominal / 2, max_rps=nominal * 4,
                              resolution_rps=max(1.0, nominal * 0.05))
    except DeployError:
        raise
    finally:
        deployer.teardown()
    result = max_rate_within_slo(measurements, slo)
    cap = result.capacity_rps_per_replica
    out = calibration_path(loaded.path)
    write_json_atomic(out, {
        "capacity_rps_per_replica": cap, "reason": result.reason, "platform": plat.name,
        "slo": {"p95_ms": slo.p95_ms, "error_rate": slo.error_rate},
        "probes": [{"rate_rps": m.rate_rps, "served_rps": m.served_rps, "p95_ms": m.p95_ms,
                    "error_rate": m.error_rate, "seconds": m.seconds} for m in measurements],
        "measured_at": dt.datetime.now(dt.UTC).isoformat(),
    })
    echo(f"capacity: {cap if cap is not None else 'none'} req/s per replica ({result.reason})"
         f" → {out}")
    return cap
