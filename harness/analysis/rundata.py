"""The one adapter at the edge: a results folder → DataFrames and dicts (docs/architecture.md,
"Conventions", 13).

Everything else in harness.analysis takes these frames and dicts and does no I/O, so the
tests feed it small hand-made frames. A run folder may still be written while we read it
(`harness dashboard` polls live runs): a last line without its newline is dropped, since
it may be half a row.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from harness.fsutil import UnsafeFileError, read_regular_text
from harness.record.schema import DECISIONS, EVENTS, TIMESERIES, Column, names
from harness.record.upgrade import upgrade_events
from harness.scenario.models import Slo

# Text columns must stay text: an empty histogram cell is "", not NaN-as-float, and a
# replica id like "0012" must not become 12.
_TEXT = {"run_id", "strategy", "kind", "replica", "detail", "latency_hist", "policy",
         "metric_values", "reason", "action", "stage", "outcome"}


@dataclass(frozen=True)
class SloSpec:
    """The scenario's per-second SLO, rebuilt from the scenario model (its defaults and
    bounds are declared once, in harness/scenario/models.py: Slo)."""

    p95_ms: float
    error_rate: float
    stable_s: int

    @classmethod
    def of(cls, slo: Slo) -> SloSpec:
        return cls(p95_ms=slo.p95_ms, error_rate=slo.error_rate, stable_s=slo.stable_s)

    @classmethod
    def default(cls) -> SloSpec:
        return cls.of(Slo())

    @classmethod
    def from_scenario(cls, scenario: Mapping[str, Any] | None) -> SloSpec:
        """From run.json's resolved scenario; a value the model refuses (an old or edited
        file) falls back to the default rather than stopping the analysis."""
        raw = (scenario or {}).get("slo") or {}
        try:
            return cls.of(Slo.model_validate(raw))
        except ValidationError:
            return cls.default()


@dataclass
class RunData:
    """One run folder in memory. `run` is run.json as a dict (empty when missing)."""

    path: Path
    run: dict[str, Any]
    timeseries: pd.DataFrame
    events: pd.DataFrame
    decisions: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        rid = self.run.get("run_id")
        if rid:
            return str(rid)
        if not self.timeseries.empty:
            return str(self.timeseries["run_id"].iloc[0])
        return self.path.name

    @property
    def scenario(self) -> dict[str, Any]:
        return dict(self.run.get("scenario") or {})

    @property
    def status(self) -> str:
        return str(self.run.get("status", "unknown"))

    @property
    def slo(self) -> SloSpec:
        return SloSpec.from_scenario(self.scenario)

    @property
    def strategies(self) -> list[str]:
        """Strategy names in the scenario's order, then any others found in the data."""
        declared = [str(s.get("name")) for s in self.scenario.get("strategies") or []]
        seen = list(dict.fromkeys(self.timeseries["strategy"].astype(str))) \
            if not self.timeseries.empty else []
        return [s for s in declared if s in seen] + [s for s in seen if s not in declared]


def capacity_of(scenario: Mapping[str, Any]) -> tuple[float | None, str]:
    """Per-replica capacity for the demand curve and where it came from.

    `calibrated`: the scenario's `calibration.capacity_rps_per_replica` (`harness calibrate`,
    the max rate one replica sustains within the SLO). Without it we fall back on the
    sample app's *nominal* capacity WORKERS / SERVICE_MS, labelled `nominal`: it assumes
    100% busy workers, so it overstates what a replica serves within the SLO and the demand
    curve it gives is a lower bound. `none`: neither is known; elasticity metrics are NaN.
    """
    cal = scenario.get("calibration") or {}
    cap = cal.get("capacity_rps_per_replica") if isinstance(cal, Mapping) else None
    if cap is not None and _positive(cap):
        return float(cap), "calibrated"
    env = (scenario.get("app") or {}).get("env") or {}
    try:
        workers, service_ms = float(env["WORKERS"]), float(env["SERVICE_MS"])
    except (KeyError, TypeError, ValueError):
        return None, "none"
    if workers > 0 and service_ms > 0:
        return workers * 1000.0 / service_ms, "nominal"
    return None, "none"


def _positive(v: Any) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return math.isfinite(f) and f > 0


def read_csv_tolerant(path: Path, columns: tuple[Column, ...]) -> pd.DataFrame:
    """Read one of the harness's CSVs; missing file → empty frame with the schema's columns.

    Missing columns (an older or partial writer) are added empty so callers can rely on
    every schema column being there.
    """
    cols = names(columns)
    try:
        # regular files only, never blocking: a link or FIFO planted under a result
        # file's name reads as missing (harness.fsutil)
        text = read_regular_text(path)
    except (FileNotFoundError, UnsafeFileError):
        return _empty(cols)
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # drop a half-written last row
    if not text.strip():
        return _empty(cols)
    dtypes = {c: str for c in _TEXT}
    df = pd.read_csv(io.StringIO(text), dtype=dtypes, keep_default_na=False,
                     na_values={c: [""] for c in cols if c not in _TEXT},
                     on_bad_lines="skip")
    for c in cols:
        if c not in df.columns:
            df[c] = "" if c in _TEXT else float("nan")
    for c in df.columns:
        if c not in _TEXT:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    if "trial" in df.columns:
        df["trial"] = df["trial"].fillna(1).astype(int)
    return df


def _empty(cols: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object if c in _TEXT else float) for c in cols})


def load_run(path: str | Path) -> RunData:
    """Read results/<run-id>/ : run.json, timeseries.csv, events.csv, decisions.csv."""
    p = Path(path)
    warnings: list[str] = []
    run: dict[str, Any] = {}
    try:
        run = json.loads(read_regular_text(p / "run.json"))
        if not isinstance(run, dict):
            raise ValueError("not an object")
    except FileNotFoundError:
        run = {}
        warnings.append("run.json missing; SLO defaults assumed")
    except UnsafeFileError:
        run = {}
        warnings.append("run.json is not a regular file; ignored")
    except ValueError as e:  # JSONDecodeError is a ValueError
        run = {}
        warnings.append(f"run.json unreadable ({e}); analysing the CSVs alone")
    ts = read_csv_tolerant(p / "timeseries.csv", TIMESERIES)
    ev = upgrade_events(read_csv_tolerant(p / "events.csv", EVENTS))
    dec = read_csv_tolerant(p / "decisions.csv", DECISIONS)
    return RunData(path=p, run=run, timeseries=ts, events=ev, decisions=dec, warnings=warnings)


def trial_frames(data: RunData) -> list[tuple[str, int, pd.DataFrame, pd.DataFrame]]:
    """(strategy, trial, timeseries, events) for each trial, in scenario order."""
    out = []
    ts, ev = data.timeseries, data.events
    for strategy in data.strategies:
        ts_s = ts[ts["strategy"] == strategy]
        for trial in sorted(ts_s["trial"].unique()):
            t_ts = ts_s[ts_s["trial"] == trial].sort_values("t_s").reset_index(drop=True)
            t_ev = ev[(ev["strategy"] == strategy) & (ev["trial"] == trial)] \
                .sort_values("t_s", kind="stable").reset_index(drop=True)
            out.append((strategy, int(trial), t_ts, t_ev))
    return out
