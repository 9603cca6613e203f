"""`promtool check config` on a rendered prometheus.yml: the real parser judges it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def check_config(tmp_path: Path, text: str) -> None:
    """Fail with promtool's words when `text` is not a valid prometheus.yml (a skip without
    promtool, which conftest turns into a failure under HARNESS_CI: setup installs it)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt install prometheus; scripts/setup.sh)")
    f = tmp_path / "prometheus.yml"
    f.write_text(text)
    r = subprocess.run([promtool, "check", "config", str(f)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
