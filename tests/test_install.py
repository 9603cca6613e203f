"""`pip install .` (not editable) into a fresh virtualenv: the installed package runs a
scenario from another folder, on sim and on Docker, with nothing read from the checkout.

The new virtualenv gets the harness from a wheel pip builds from a copy of the source; its
dependencies come from this virtualenv's site-packages through a .pth file (they are not
downloaded twice), which adds them after the venv's own site-packages, so `harness`
itself is the installed copy.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCENARIO = """\
name: installed
seed: 3
app:
  env: {WORKERS: 4, SERVICE_MS: 10, SERVICE_DIST: exponential, QUEUE_LIMIT: 20}
load:
  stages:
    - {name: base, duration_s: 6, rps: 40}
strategies:
  - {name: fixed, kind: manual, replicas: 1}
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("install")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True, check=True,
                             timeout=60).stdout.strip()
    # a copy of the source without its build leftovers: an sdist-like tree
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".cache", ".git", "results", "test-artifacts", "*.egg-info", "build",
        "__pycache__", ".pytest_cache", ".ruff_cache"))
    # a real build: setuptools from PyPI in an isolated build env, as `pip install .` does
    r = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(src)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    (Path(purelib) / "zz-harness-deps.pth").write_text("\n".join(deps) + "\n")
    shutil.rmtree(src)  # nothing of the checkout is left to read
    return env_dir


def _run(env_dir: Path, cwd: Path, *args: str, timeout: int = 600
         ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(env_dir / "bin" / "harness"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_installed_package_is_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    r = subprocess.run([str(installed / "bin" / "python"), "-c",
                        "import harness, sample_app; print(harness.__file__); "
                        "print(sample_app.__file__)"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60, env={"PATH": os.environ["PATH"]})
    assert r.returncode == 0, r.stderr
    for line in r.stdout.split():
        assert str(installed) in line and str(ROOT) not in line
    assets = installed.glob("lib/python*/site-packages/harness/assets")
    got = next(assets)
    assert (got / "docker-compose.yml").is_file()
    assert (got / "docker" / "app" / "Dockerfile").is_file()


def test_an_installed_harness_runs_a_scenario_on_sim(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SCENARIO)
    r = _run(installed, tmp_path, "run", "s.yaml", "--platform", "sim", "--run-id", "sim1")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (tmp_path / "results" / "sim1" / "report.html").is_file()


@pytest.mark.docker
@pytest.mark.slow
def test_an_installed_harness_runs_a_scenario_on_docker(installed: Path,
                                                         tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SCENARIO.replace("kind: manual", "kind: compose"))
    r = _run(installed, tmp_path, "run", "s.yaml", "--platform", "docker", "--run-id",
             "dock1", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "results" / "dock1" / "timeseries.csv").is_file()
    # the images it used are the ones the checkout built: same contexts, same hashes
    assert "images:" not in r.stderr or "built" not in r.stderr
