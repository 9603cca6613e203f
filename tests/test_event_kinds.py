"""Every events.csv `kind` the code writes is declared in EVENT_KINDS (and documented in
docs/columns.md), and every declared kind is written somewhere: both directions.

The kinds are collected from the source: the string literal given as the kind to each
function that produces an event (a DeployEvent, a watcher Change, the deployers' and the
fault timeline's emitters, the trial writers, the load generator's event channel), and
`"kind": "…"` in the rows the trials write. A sim run then checks the kinds that
actually reach events.csv.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pandas as pd

from harness.record.schema import EVENT_KINDS, markdown

ROOT = Path(__file__).resolve().parents[1]
KIND = re.compile(r"^[a-z][a-z_]*$")
# callee name → indexes of the positional argument that can be the event kind: the load
# child's `Out.event(kind, …)`, the trial record's `event(t_s, kind, …)` / `event_at(t, kind, …)`
EMITTERS: dict[str, tuple[int, ...]] = {
    "DeployEvent": (0,), "Change": (0,), "PodEvent": (0,), "emit": (0,), "_emit_deploy_event": (0,),
    "event": (0, 1), "on_event": (0,), "_event": (0,), "write_event": (1,),
    "event_at": (1,)}
# `_emit` is the deployers' (kind first) and the fault timeline's (t first)
EMIT_KIND_AT = {"timeline.py": 1}
# decisions.csv rows, not events: the controller's `_emit(row, action)`
NOT_EVENTS = {"controller.py"}


def _callee(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) \
            and KIND.match(node.value):
        return node.value
    return None


def emitted_kinds() -> dict[str, set[str]]:
    """kind → files that write it."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "harness").rglob("*.py")):
        if path.name in NOT_EVENTS:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            kinds: list[str | None] = []
            if isinstance(node, ast.Call):
                name = _callee(node)
                ats = (EMIT_KIND_AT.get(path.name, 0),) if name == "_emit" \
                    else EMITTERS.get(name, ())
                kinds += [_literal(node.args[at]) for at in ats if len(node.args) > at]
            elif isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values, strict=True):
                    if isinstance(k, ast.Constant) and k.value == "kind":
                        kinds.append(_literal(v))
            for k in kinds:
                if k is not None:
                    found.setdefault(k, set()).add(str(path.relative_to(ROOT)))
    return found


def test_collector_sees_the_known_emitters() -> None:
    found = emitted_kinds()
    # one per emitter style, so a refactor that hides them from the scan fails here
    for kind in ("load_stage", "fault", "fault_reverted", "scale", "replica_ready",
                 "replica_started", "deployed", "worker_lost", "loadgen_saturated", "note"):
        assert kind in found, kind


def test_every_emitted_kind_is_declared() -> None:
    undeclared = {k: sorted(v) for k, v in emitted_kinds().items() if k not in EVENT_KINDS}
    assert undeclared == {}, "declare these in harness/record/schema.py EVENT_KINDS"


def test_every_declared_kind_is_emitted() -> None:
    assert sorted(set(EVENT_KINDS) - set(emitted_kinds())) == []


def test_every_kind_is_documented() -> None:
    doc = (ROOT / "docs" / "columns.md").read_text()
    assert doc == markdown()
    for kind in EVENT_KINDS:
        assert f"| `{kind}` |" in doc


def test_a_sim_run_writes_only_declared_kinds(tmp_path: Path) -> None:
    from tests.test_sim_trial import SPIKE_CRASH, run_one

    for strategy in ("manual", "autoscale"):  # a fault, and an autoscaler's scale events
        run_one(tmp_path, SPIKE_CRASH, strategy)
    ev = pd.read_csv(tmp_path / "run" / "events.csv", keep_default_na=False)
    assert set(ev["kind"]) <= set(EVENT_KINDS)
    assert {"load_stage", "fault", "scale", "replica_started", "replica_ready"} \
        <= set(ev["kind"])
