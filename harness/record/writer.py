"""Crash-safe result files: CSV rows flushed as they are measured, run.json atomic.

A `kill -9` of the harness loses at most the row being written; every complete line
before it loads with pandas.
"""

from __future__ import annotations

import csv
import json
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from harness.fsutil import atomic_write, open_append
from harness.record.schema import Column, names

if TYPE_CHECKING:
    import pandas as pd

# A spreadsheet runs a cell that starts with one of these as a formula; free text (an error
# message echoed from a replica, a fault's detail) gets a leading ' (docs/columns.md).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class CsvSink:
    """Appends rows with a fixed header (declared in schema.py) and flushes each one."""

    def __init__(self, path: Path, columns: tuple[Column, ...]) -> None:
        self.path = path
        self.columns = names(columns)
        self._lock = threading.Lock()
        # O_NOFOLLOW, regular files only: a link planted in the run folder is refused
        self._fh: TextIO | None = open_append(path)
        new = self._fh.tell() == 0
        self._writer = csv.DictWriter(self._fh, fieldnames=self.columns, extrasaction="raise")
        if new:
            self._writer.writeheader()
            self._fh.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        clean = {k: _cell(row.get(k)) for k in self.columns}
        unknown = set(row) - set(self.columns)
        if unknown:
            raise KeyError(f"{self.path.name}: columns not in the schema: {sorted(unknown)}")
        with self._lock:
            if self._fh is None:
                return
            self._writer.writerow(clean)
            # flush to the kernel each row: a killed harness keeps every finished second
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
                self._fh = None


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return round(value, 3)
    if isinstance(value, str):
        return neutralise_text(value)
    return value


def neutralise_text(value: str) -> str:
    """A text cell a spreadsheet will not run as a formula. Numbers written as text (a
    negative figure like "-3") are left alone: they are data, not formulas."""
    if value.startswith(_FORMULA_START) and not _is_number(value):
        return "'" + value
    return value


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return value.strip() == value


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """temp file + fsync + rename (harness.fsutil): readers see the old or the new file."""
    atomic_write(path, json.dumps(data, indent=2, default=str) + "\n")


def write_frame_csv(df: pd.DataFrame, path: Path) -> Path:
    """A table (summary, comparison) as CSV through the atomic writer, its text cells
    neutralised like the sinks' (docs/columns.md)."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object or str(out[c].dtype) in ("str", "string"):
            out[c] = out[c].map(lambda v: neutralise_text(v) if isinstance(v, str) else v)
    return atomic_write(path, out.to_csv(index=False, float_format="%.10g"))
