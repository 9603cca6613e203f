"""Older result folders read as the current schema (docs/columns.md).

Schema version 1 wrote event details only as key=value text (`stage=1 rps=600 ramp_s=0`,
`action=crash fault=0`, `action=kill error=…`). Version 2 has a column per field that
analysis reads back. This is the one place that still parses that text, once, on load:
analysis itself reads only the columns.
"""

from __future__ import annotations

import re

import pandas as pd

from harness.record.schema import EVENT_FIELDS, names

_KV = re.compile(r"\b(stage|rps|users|ramp_s|action)=(\S+)")
_NUMERIC = ("rps", "users", "ramp_s")


def _legacy_fields(kind: str, detail: str) -> dict[str, str]:
    found = dict(_KV.findall(detail or ""))
    out: dict[str, str] = {}
    if kind == "load_stage":
        out.update({k: v for k, v in found.items() if k in ("stage", "rps", "users", "ramp_s")})
    elif kind in ("fault", "fault_reverted"):
        d = detail or ""
        action = found.get("action")
        if action is None:  # the oldest runs wrote the action first, bare
            first = d.split()[0] if d.split() else ""
            action = first if first.isidentifier() else "fault"
        out["action"] = action
        out["outcome"] = "error" if "error=" in d else "skipped" if "skipped" in d else "ok"
    return out


def upgrade_events(ev: pd.DataFrame) -> pd.DataFrame:
    """Fill the structured columns of rows written without them (version 1 runs).

    Rows that already have any structured value are left alone."""
    ev = ev.copy()
    fields = names(EVENT_FIELDS)
    for c in fields:
        ev[c] = ev[c].astype(object) if c in ev.columns else pd.Series(
            [pd.NA] * len(ev), index=ev.index, dtype=object)
    if ev.empty:
        return ev
    blank = ev[fields].apply(lambda col: col.isna() | (col.astype(str) == "")).all(axis=1)
    for i in ev.index[blank]:
        for k, v in _legacy_fields(str(ev.at[i, "kind"]), str(ev.at[i, "detail"] or "")).items():
            ev.at[i, k] = v
    for c in _NUMERIC:
        ev[c] = pd.to_numeric(ev[c], errors="coerce")
    for c in ("stage", "action", "outcome"):
        ev[c] = ev[c].map(lambda v: "" if v is None or pd.isna(v) else str(v))
    return ev
