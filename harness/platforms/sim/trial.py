"""Trials on the ``sim`` platform: ``run_sim_trial`` is harness/trial.py's ``run_trial``
with the simulator's runtime (runtime.py next to it); ``run_sim_scenario`` runs every trial
of a scenario with explicit ``SimParams`` (validation and benchmarks).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from harness.platforms.sim.params import SimParams
from harness.platforms.sim.runtime import SimRuntime
from harness.record.trial_record import Recorder, TrialResult
from harness.scenario.loader import LoadedScenario
from harness.scenario.models import Strategy
from harness.trial import run_trial


def run_sim_trial(loaded: LoadedScenario, strategy: Strategy, trial: int,
                  recorder: Recorder, *, echo: Callable[[str], None],
                  stop: threading.Event | None = None, params: SimParams | None = None,
                  ) -> TrialResult:
    """Simulate one strategy × repetition; rows go to the recorder as they are made."""
    runtime = SimRuntime(loaded, strategy, trial, params)
    return run_trial(loaded, strategy, trial, runtime, recorder, stop or threading.Event(),
                     echo=echo)


def run_sim_scenario(loaded: LoadedScenario, run_dir: Any, *, run_id: str,
                     params: SimParams | None = None, repetitions: int | None = None,
                     strategies: list[str] | None = None,
                     echo: Callable[[str], None] = print, report: bool = True
                     ) -> list[TrialResult]:
    """All trials of a scenario on the sim with explicit ``SimParams`` (what
    ``harness run --platform sim`` does with the defaults), into ``run_dir``: the same
    run.json keys the analysis reads, the CSVs, summary.csv and report.html."""
    import datetime as dt
    from pathlib import Path

    from harness.record.schema import SCHEMA_VERSION
    from harness.record.writer import write_json_atomic

    params = params or SimParams()
    sc = loaded.scenario
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=False)
    names = strategies or [s.name for s in sc.strategies]
    reps = repetitions or sc.repetitions
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "status": "running",
        "scenario_file": str(loaded.path), "scenario": sc.model_dump(mode="json"),
        "platform": "sim", "strategies": names, "repetitions": reps, "seed": sc.seed,
        "sim_params": params.as_dict(), "started": dt.datetime.now(dt.UTC).isoformat(),
        "trials": [], "warnings": [],
    }
    write_json_atomic(run_dir / "run.json", meta)
    recorder = Recorder(run_dir, run_id)
    results: list[TrialResult] = []
    try:
        for rep in range(1, reps + 1):
            for name in names:
                res = run_sim_trial(loaded, sc.strategy(name), rep, recorder, echo=echo,
                                    params=params)
                results.append(res)
                meta["trials"].append(res.as_dict())
                meta["warnings"].extend(res.warnings)
    finally:
        recorder.close()
        meta.update(status="complete", ended=dt.datetime.now(dt.UTC).isoformat())
        write_json_atomic(run_dir / "run.json", meta)
    if report:
        from harness.report.html import write_report

        write_report(run_dir)
    return results
