"""Hostile and careless command-line input (issue #13): every case exits 2 with one line
on stderr — naming the file, line and key where there is one — no traceback, and leaves
nothing behind (no run folder, no report, no run lock).

Each scenario case is the base scenario below with one hostile piece in it; the expected
line is found in the text written, by the marker comment `# <-` on it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.runlock import DEFAULT_ROOT

BASE = """\
name: hostile
platform: {platform}
output: results
app:
  path: /work
  ready_path: {ready_path}
  env:
    WORKERS: 2
{env}load:
  {load}
{calibration}slo:
  p95_ms: {p95}
strategies:
  - name: fixed
    kind: compose
    replicas: 1
{strategy_extra}thresholds:
  - {threshold}
"""

DEFAULTS = {"platform": "sim", "ready_path": "/readyz", "env": "",
            "load": "stages: [{duration_s: 5, rps: 5}]", "calibration": "",
            "p95": "300", "strategy_extra": "", "threshold": "fixed.p95_ms < 300"}

CUSTOM = ("  - name: custom\n    kind: compose\n    replicas: 1\n    autoscaler:\n"
          "      min_replicas: 1\n      max_replicas: 2\n      target: 10\n"
          "      metric: {promql: 'sum(x)', scrape: {kind: gauge, metric: x, scale: %s}}"
          "  # <-\n")


@dataclass
class Case:
    id: str
    args: list[str]  # {scenario}, {tmp} and {port} are filled in
    fields: dict[str, str] = field(default_factory=dict)
    key: str | None = None  # the key the message must name
    line: bool = True  # the message names the marked line
    words: str = ""  # also in the message
    setup: Callable[[Path], None] | None = None


def _deep_block() -> str:
    # load (depth 2) > deep (3) > k0 (4) …: the mapping under k29 is level 33, first line k30
    lines = "".join("  " * (i + 2) + f"k{i}:" + ("  # <-" if i == 30 else "") + "\n"
                    for i in range(40))
    return "stages: [{duration_s: 5, rps: 5}]\n  deep:\n" + lines + "  " * 42 + "v: 1\n"


def _fifo(name: str) -> Callable[[Path], None]:
    return lambda tmp: os.mkfifo(tmp / name)


def _secret_trace(tmp: Path) -> None:
    (tmp / "trace.csv").write_text("root:SECRET-HASH:19000:0:99999:7:::\nx,y\n")


VALIDATE = ["validate", "{scenario}"]
RUN = ["run", "{scenario}", "--out", "{tmp}/results"]

CASES = [
    Case("nesting-490", VALIDATE, {"p95": "[" * 490 + "  # <-"}, key="slo.p95_ms",
         words="nested more than 32"),
    Case("nesting-block", VALIDATE, {"load": _deep_block()},
         key=".".join(["load.deep", *(f"k{i}" for i in range(30))]),
         words="nested more than 32"),
    Case("calibration-nan", VALIDATE,
         {"calibration": "calibration:\n  capacity_rps_per_replica: .nan  # <-\n"},
         key="calibration.capacity_rps_per_replica", words="finite"),
    Case("slo-inf", VALIDATE, {"p95": ".inf  # <-"}, key="slo.p95_ms", words="finite"),
    Case("scale-inf", VALIDATE, {"platform": "local", "strategy_extra": CUSTOM % ".inf"},
         key="strategies[1].autoscaler.metric.scrape.scale", words="finite"),
    Case("threshold-1e999", VALIDATE, {"threshold": "fixed.p95_ms < 1e999  # <-"},
         key="thresholds[0]", words="finite"),
    Case("sim-promql-validate", VALIDATE, {"strategy_extra": CUSTOM % "1"},
         key="strategies[1].autoscaler.metric", words="PromQL"),
    Case("sim-promql-run", [*RUN, "--platform", "sim"],
         {"platform": "auto", "strategy_extra": CUSTOM % "1"}, line=False, words="PromQL"),
    Case("ready-path-quote", VALIDATE, {"ready_path": "\"/r');import os#\"  # <-"},
         key="app.ready_path", words="URL path"),
    Case("ready-path-newline", VALIDATE, {"ready_path": "\"/r\\nX-Evil: 1\"  # <-"},
         key="app.ready_path", words="URL path"),
    Case("env-newline", VALIDATE, {"env": "    A: \"x\\nB=1\"  # <-\n"}, key="app.env.A",
         words="LF"),
    Case("env-key-equals", VALIDATE, {"env": "    \"A=B\": 1  # <-\n"}, key="app.env.A=B",
         words="variable name"),
    Case("env-key-empty", VALIDATE, {"env": "    \"\": 1  # <-\n"}, key='app.env.""',
         words="variable name"),
    Case("env-port", VALIDATE, {"env": "    PORT: 9999  # <-\n"}, key="app.env.PORT",
         words="PORT"),
    Case("env-long", VALIDATE, {"env": f"    A: {'x' * 4097}  # <-\n"}, key="app.env.A",
         words="4096"),
    Case("env-too-many", VALIDATE,
         {"env": "".join(f"    V{i}: 1\n" for i in range(100))}, key="app.env", line=False,
         words="at most 100"),
    Case("trace-secret", VALIDATE, {"load": "trace: trace.csv  # <-"}, key="load.trace",
         setup=_secret_trace),
    Case("trace-fifo", VALIDATE, {"load": "trace: t.fifo  # <-"}, key="load.trace",
         words="not a regular file", setup=_fifo("t.fifo")),
    Case("trace-dir", VALIDATE, {"load": "trace: sub  # <-"}, key="load.trace",
         words="not a regular file", setup=lambda tmp: (tmp / "sub").mkdir()),
    Case("locustfile-fifo", VALIDATE,
         {"load": "stages: [{duration_s: 5, rps: 5}]\n  locustfile: l.fifo  # <-"},
         key="load.locustfile", words="not a regular file", setup=_fifo("l.fifo")),
    Case("run-id-300", [*RUN, "--run-id", "a" * 300], line=False, words="--run-id"),
    Case("run-id-unicode", [*RUN, "--run-id", "ünï²"], line=False, words="--run-id"),
    Case("out-under-file", ["run", "{scenario}", "--out", "{tmp}/afile/results"],
         line=False, words="not a folder",
         setup=lambda tmp: (tmp / "afile").write_text("x")),
    Case("out-unwritable", ["run", "{scenario}", "--out", "/proc/harness-hostile/results"],
         line=False, words="cannot create"),
    Case("metrics-port-busy", [*RUN, "--metrics-port", "{port}"], line=False,
         words="--metrics-port"),
    Case("dashboard-port-busy", ["dashboard", "{tmp}/results", "--port", "{port}"],
         line=False, words="--port"),
]


@pytest.fixture
def busy_port() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s.getsockname()[1]
    s.close()


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _harness(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HARNESS_CI": os.environ.get("HARNESS_CI", "")})


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_exits_2_with_one_line(case: Case, tmp_path: Path,
                                             busy_port: int) -> None:
    text = BASE.format(**{**DEFAULTS, **case.fields})
    scenario = tmp_path / "s.yaml"
    scenario.write_text(text)
    if case.setup:
        case.setup(tmp_path)
    marked = [i for i, ln in enumerate(text.splitlines(), start=1) if "# <-" in ln]
    locks_before = set(os.listdir(DEFAULT_ROOT / "runs")) if (DEFAULT_ROOT / "runs").is_dir() \
        else set()
    before = _tree(tmp_path)
    args = [a.format(scenario=scenario, tmp=tmp_path, port=busy_port) for a in case.args]

    r = _harness(args, tmp_path)

    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr and len(err.splitlines()) == 1, r.stderr[-2000:]
    assert err.startswith("harness: "), err
    assert case.words in err, err
    if case.line:
        assert len(marked) == 1, "the case must mark exactly one line"
        assert f"{scenario}:{marked[0]}:" in err, (marked[0], err)
    if case.key:
        assert f" {case.key}: " in err, err
    assert "SECRET" not in r.stderr + r.stdout  # a file's content is never echoed
    assert _tree(tmp_path) == before, "something was created"
    locks_after = set(os.listdir(DEFAULT_ROOT / "runs")) if (DEFAULT_ROOT / "runs").is_dir() \
        else set()
    # other runs on the machine may take locks meanwhile: only this scenario's count
    assert not [n for n in locks_after - locks_before if n.startswith(("hostile", "aaaa"))]


def test_the_base_scenario_is_valid(tmp_path: Path) -> None:
    """The cases fail because of their hostile piece, not because the base is broken."""
    scenario = tmp_path / "s.yaml"
    scenario.write_text(BASE.format(**DEFAULTS))
    r = _harness(["validate", str(scenario)], tmp_path)
    assert r.returncode == 0, r.stderr


def test_report_of_a_corrupt_histogram_is_one_line(tmp_path: Path) -> None:
    from tests.synthetic_run import make_synthetic_run

    run = make_synthetic_run(tmp_path)
    ts = run / "timeseries.csv"
    lines = ts.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    col = header.index("latency_hist")
    for i in range(1, len(lines)):
        cells = lines[i].rstrip("\n").split(",")
        if cells[col]:
            cells[col] = "12.5|notabucket"
            lines[i] = ",".join(cells) + "\n"
            break
    ts.write_text("".join(lines))
    before = _tree(tmp_path)
    r = _harness(["report", str(run)], tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "latency_hist" in r.stderr and "timeseries.csv" in r.stderr
    assert _tree(tmp_path) == before


def test_report_on_a_fifo_run_json_does_not_hang(tmp_path: Path) -> None:
    from tests.synthetic_run import make_synthetic_run

    run = make_synthetic_run(tmp_path)
    (run / "run.json").unlink()
    os.mkfifo(run / "run.json")
    before = _tree(tmp_path)
    r = _harness(["report", str(run)], tmp_path)  # timeout=120: a hang fails the test
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "not a regular file" in r.stderr
    assert _tree(tmp_path) == before
