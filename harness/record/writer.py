"""Crash-safe result files: CSV rows flushed as they are measured, run.json atomic.

A `kill -9` of the harness loses at most the row being written; every complete line
before it loads with pandas.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from harness.record.schema import Column, names


class CsvSink:
    """Appends rows with a fixed header (declared in schema.py) and flushes each one."""

    def __init__(self, path: Path, columns: tuple[Column, ...]) -> None:
        self.path = path
        self.columns = names(columns)
        self._lock = threading.Lock()
        new = not path.exists() or path.stat().st_size == 0
        self._fh: TextIO | None = path.open("a", newline="", encoding="utf-8")
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
    return value


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """temp file + fsync + rename: readers see the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it private; results are for everyone to read
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
