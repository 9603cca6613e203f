"""Scenario files: strict reading, located errors, and the shipped examples."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ScenarioError
from harness.scenario.loader import load_scenario, load_scenario_text
from harness.scenario.yamlsafe import MAX_BYTES, load_file, load_text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [ROOT / "spike.yaml", *sorted((ROOT / "examples").glob("*.yaml"))]

MINIMAL = """\
name: t
load:
  stages:
    - {duration_s: 10, rps: 100}
strategies:
  - {name: m, kind: manual, replicas: 2}
"""


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate(path: Path) -> None:
    loaded = load_scenario(path)
    assert loaded.scenario.strategies


def test_minimal_defaults() -> None:
    s = load_scenario_text(MINIMAL)
    assert s.load.model == "open"
    assert s.slo.p95_ms == 300
    assert s.app.image == "harness-app:latest"
    assert s.repetitions == 1


def _err(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(text, file="s.yaml")
    return info.value


@pytest.mark.parametrize(("text", "line", "key", "needle"), [
    pytest.param(MINIMAL + "repetitons: 3\n", 7, "repetitons", "did you mean 'repetitions'",
                 id="unknown-top-key-hint"),
    pytest.param(MINIMAL.replace("rps: 100", "rsp: 100"), 4, "load.stages[0].rsp",
                 "did you mean 'rps'", id="unknown-nested-key-hint"),
    pytest.param(MINIMAL.replace("replicas: 2", "replicas: 10000"), 6,
                 "strategies[0].replicas", "less than or equal", id="absurd-replicas"),
    pytest.param(MINIMAL.replace("rps: 100", "rps: -5"), 4, "load.stages[0].rps",
                 "greater than or equal", id="negative-rate"),
    pytest.param(MINIMAL.replace("kind: manual", "kind: kubernetes"), 6,
                 "strategies[0].kind", "manual", id="unknown-kind"),
    pytest.param(MINIMAL.replace("name: t", "name: ../../etc"), 1, "name", "must match",
                 id="path-traversal-name"),
    pytest.param(MINIMAL.replace("name: m,", "name: ../x,"), 6, "strategies[0].name",
                 "must match", id="path-traversal-strategy"),
    pytest.param(MINIMAL + "output: ../elsewhere\n", 7, "output", "'..'",
                 id="path-traversal-output"),
    pytest.param(MINIMAL.replace("name: t\n", ""), None, None, "required key is missing",
                 id="missing-name"),
    pytest.param(MINIMAL + "faults:\n  - {at_s: 50, action: crash}\n", 8, "faults[0].at_s",
                 "after the load ends", id="fault-after-end"),
    pytest.param(MINIMAL + "faults:\n  - {at_s: 5, action: pause}\n", 8, "faults[0]",
                 "needs duration_s", id="pause-needs-duration"),
])
def test_bad_scenarios_are_located(text: str, line: int | None, key: str | None,
                                   needle: str) -> None:
    e = _err(text)
    msg = str(e)
    assert needle in msg, msg
    assert msg.startswith("s.yaml:"), msg
    if line is not None:
        assert e.line == line, msg
    if key is not None:
        assert e.key == key, msg
    assert "\n" not in msg


@pytest.mark.parametrize(("text", "needle"), [
    pytest.param("a: 1\na: 2\n", "duplicate key 'a'", id="duplicate-key"),
    pytest.param("a: !!python/object/apply:os.system ['true']\n", "not allowed", id="tag"),
    pytest.param("a: !custom 3\n", "not allowed", id="custom-tag"),
    pytest.param("a: 1\n---\nb: 2\n", "several YAML documents", id="multi-doc"),
    pytest.param("base: &b {x: 1}\nother:\n  <<: *b\n", "merge keys", id="merge-key"),
    pytest.param("- 1\n- 2\n", "mapping", id="not-a-mapping"),
    pytest.param("a: [1, 2\n", "invalid YAML", id="syntax"),
    pytest.param("", "empty", id="empty"),
])
def test_yaml_refusals(text: str, needle: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_text(text, file="x.yaml")
    assert needle in str(info.value)


def test_alias_bomb_refused() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 9)}]")
    with pytest.raises(ScenarioError, match="alias bomb"):
        load_text("\n".join(lines) + "\n", file="bomb.yaml")


def test_small_aliases_allowed() -> None:
    loc = load_text("env: &e {A: 1}\nother: *e\n")
    assert loc.data["other"] == {"A": 1}


def test_non_utf8_and_size(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ScenarioError, match="not UTF-8") as info:
        load_file(bad)
    assert info.value.line == 1
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_BYTES + "\n")
    with pytest.raises(ScenarioError, match="limit"):
        load_file(big)
    with pytest.raises(ScenarioError, match="no such file"):
        load_file(tmp_path / "missing.yaml")


def test_missing_trace_file_is_located(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("name: t\nload:\n  trace: nope.csv\nstrategies:\n"
                 "  - {name: m, kind: manual, replicas: 1}\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(p)
    assert info.value.line == 3 and info.value.key == "load.trace"


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_cli_validate_prints_resolved() -> None:
    r = _cli("validate", "spike.yaml")
    assert r.returncode == 0, r.stderr
    assert "spike-demo" in r.stdout and "stable_s: 5" in r.stdout


@pytest.mark.parametrize("body", [
    MINIMAL + "bogus: 1\n",
    "a: !!python/object/apply:os.system ['echo pwned']\n",
    "a: 1\na: 2\n",
], ids=["unknown-key", "object-tag", "duplicate"])
def test_cli_validate_rejects_with_exit_2(tmp_path: Path, body: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(body)
    r = _cli("validate", str(p))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1, r.stderr  # one line, no traceback
    assert f"{p}:" in r.stderr
    assert "pwned" not in r.stdout + r.stderr


def test_cli_help_lists_subcommands() -> None:
    r = _cli("--help")
    assert r.returncode == 0
    for sub in ("run", "validate", "images", "compare", "report", "dashboard", "calibrate",
                "clean"):
        assert sub in r.stdout


# -- every cross-reference is checked when the scenario loads (issue: the scenario as the
#    single source): `harness run` refuses before any run folder exists.

_REFS = MINIMAL.replace("stages:\n    - {duration_s: 10, rps: 100}\n", "{load}")


# `marker` is the text on the line the error must name (the line is found, not guessed).
@pytest.mark.parametrize(("load", "extra", "files", "marker", "key", "needle"), [
    ("stages:\n    - {duration_s: 10, rps: 100}\n", "thresholds:\n  - p95_ms < 300\n"
     "  - mx.recovery_s < 30\n", {}, "mx.recovery_s", "thresholds[1]",
     "unknown strategy 'mx'"),
    ("stages:\n    - {duration_s: 10, rps: 100}\n", "thresholds:\n  - p96_ms < 300\n",
     {}, "p96_ms", "thresholds[0]", "unknown metric 'p96_ms'"),
    ("stages:\n    - {duration_s: 10, rps: 100}\n", "thresholds:\n  - p95_ms <\n",
     {}, "p95_ms <", "thresholds[0]", "is not a threshold"),
    ("trace: t.csv\n", "", {"t.csv": "time,rate\n0,10\n5,20\n"}, "trace:", "load.trace",
     "header must name the columns"),
    ("trace: t.csv\n", "", {"t.csv": "t_s,rps\n0,10\n5,x\n"}, "trace:", "load.trace",
     "t.csv:3:"),
    ("trace: gone.csv\n", "", {}, "trace:", "load.trace", "not found"),
    ("stages:\n    - {duration_s: 10, rps: 100}\n  locustfile: lf.py\n", "", {},
     "locustfile:", "load.locustfile", "not found"),
], ids=["threshold-strategy", "threshold-metric", "threshold-syntax", "trace-header",
        "trace-row", "trace-missing", "locustfile-missing"])
def test_run_refuses_bad_references_before_creating_anything(
        tmp_path: Path, load: str, extra: str, files: dict[str, str], marker: str, key: str,
        needle: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    p = tmp_path / "s.yaml"
    body = _REFS.replace("{load}", load) + extra
    p.write_text(body)
    line = next(n for n, text in enumerate(body.splitlines(), 1) if marker in text)
    out = tmp_path / "results"
    r = _cli("run", str(p), "--platform", "sim", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"harness: {p}:{line}: {key}: "), r.stderr
    assert needle in r.stderr
    assert not out.exists()
    v = _cli("validate", str(p), cwd=tmp_path)
    assert v.returncode == 2 and v.stderr == r.stderr
