"""A run written with schema version 1 (event details only as key=value text, no
time_unix_s) reads as version 2: the structured columns are filled on load and the
analysis finds the same disturbances."""

from __future__ import annotations

import json
from pathlib import Path

from harness.analysis.disturbances import find_disturbances
from harness.analysis.rundata import load_run
from harness.record.schema import EVENTS, SCHEMA_VERSION, TIMESERIES, names

V1_EVENTS = """\
run_id,strategy,trial,t_s,kind,replica,detail
old,s,1,-5.0,load_stage,,stage=warmup rps=100
old,s,1,0.0,load_stage,,stage=0 name=base rps=100 ramp_s=0
old,s,1,30.0,load_stage,,stage=1 name=spike rps=400 ramp_s=2
old,s,1,70.0,load_stage,,stage=2 name=after rps=100 ramp_s=0
old,s,1,95.0,fault,r1,action=crash fault=0
old,s,1,96.0,fault,,action=kill skipped=no live replica
old,s,1,97.0,fault,r2,action=pause error=boom
old,s,1,99.0,fault_reverted,r3,action=unpause
"""


def test_version_1_events_are_upgraded_on_load(tmp_path: Path) -> None:
    assert SCHEMA_VERSION == 2
    (tmp_path / "events.csv").write_text(V1_EVENTS)
    v1_ts = [c for c in names(TIMESERIES) if c != "time_unix_s"]
    (tmp_path / "timeseries.csv").write_text(",".join(v1_ts) + "\n")
    (tmp_path / "run.json").write_text(json.dumps({"schema_version": 1, "run_id": "old"}))
    ev = load_run(tmp_path).events
    assert list(ev.columns)[:len(names(EVENTS))] == names(EVENTS)
    rows = ev[["kind", "stage", "rps", "ramp_s", "action", "outcome"]].astype(object).fillna("")
    assert rows.values.tolist() == [
        ["load_stage", "warmup", 100.0, "", "", ""],
        ["load_stage", "0", 100.0, 0.0, "", ""],
        ["load_stage", "1", 400.0, 2.0, "", ""],
        ["load_stage", "2", 100.0, 0.0, "", ""],
        ["fault", "", "", "", "crash", "ok"],
        ["fault", "", "", "", "kill", "skipped"],
        ["fault", "", "", "", "pause", "error"],
        ["fault_reverted", "", "", "", "unpause", "ok"],
    ]
    ds = find_disturbances(ev, end_s=120)
    assert [(d.name, d.peak) for d in ds] == [("spike_t30", 32.0), ("crash_t95", 95.0)]
