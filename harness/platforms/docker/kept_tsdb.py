"""A trial's Prometheus TSDB kept on disk after the trial (`harness run --keep-metrics`).

The trial's Prometheus writes straight into `results/<run>/metrics/<trial>/` (a bind
mount; it runs as the harness's uid, so every file it writes is the user's). Before
tear-down the harness asks it for a snapshot (admin API,
`POST /api/v1/admin/tsdb/snapshot`, head included): that turns the in-memory head and
the WAL into ordinary blocks. After the container is gone the snapshot's blocks are
moved up and everything else (WAL, head chunks, lock, the snapshot folder) is removed,
so the folder holds only immutable blocks that any Prometheus ≥ 2.x opens read-only
(`harness metrics serve`, harness/report/metrics_serve.py).
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from harness.errors import DeployError

# A block is a folder named by a ULID: 26 characters of Crockford's base32.
BLOCK_NAME = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
SNAPSHOT_TIMEOUT_S = 60.0


def snapshot(base_url: str, timeout_s: float = SNAPSHOT_TIMEOUT_S) -> str:
    """Ask the Prometheus at `base_url` (127.0.0.1 only) for a snapshot; its name."""
    u = urlsplit(base_url)
    if u.hostname != "127.0.0.1" or u.port is None:
        raise DeployError(f"refusing a snapshot of a non-loopback Prometheus {base_url!r}")
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout_s)
    try:
        conn.request("POST", "/api/v1/admin/tsdb/snapshot")
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
    except OSError as e:
        raise DeployError(f"Prometheus snapshot failed: {e}") from None
    finally:
        conn.close()
    if resp.status != 200:
        raise DeployError(f"Prometheus snapshot failed: HTTP {resp.status} {body[:200]}")
    name = str(json.loads(body).get("data", {}).get("name", ""))
    if not name or "/" in name or name.startswith("."):
        raise DeployError(f"Prometheus snapshot gave no usable name: {body[:200]}")
    return name


def blocks(folder: Path) -> list[Path]:
    """The block folders directly in `folder` (each with a meta.json)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if BLOCK_NAME.match(p.name) and p.is_dir() and not p.is_symlink()
                  and (p / "meta.json").is_file())


def finalize(folder: Path, snapshot_name: str | None) -> list[str]:
    """Keep only blocks in `folder`: the snapshot's blocks moved up, the live TSDB's WAL,
    head chunks and lock removed. Returns the kept block names."""
    if snapshot_name:
        snap = folder / "snapshots" / snapshot_name
        for block in blocks(snap):
            target = folder / block.name
            if target.exists():  # the same block persisted before the snapshot
                shutil.rmtree(target)
            block.rename(target)
    for name in ("snapshots", "wal", "chunks_head"):
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
    for name in ("lock", "queries.active"):
        (folder / name).unlink(missing_ok=True)
    # Prometheus' half-written compactions (".tmp-for-creation" and friends)
    for p in folder.glob("*.tmp*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return [b.name for b in blocks(folder)]


def size_bytes(folder: Path) -> int:
    total = 0
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total
