"""LoadSpec: from a scenario file, to the child and back. Pure (no process started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ScenarioError
from harness.load.profile import Profile
from harness.load.runner import LoadSpec, seconds_span
from harness.scenario.loader import load_scenario

SCENARIO = """\
name: load-spec
seed: 9
app:
  path: /work
load:
{load}
strategies:
  - {{name: fixed, kind: compose, replicas: 2}}
"""


def write(tmp_path: Path, load: str) -> Path:
    f = tmp_path / "s.yaml"
    f.write_text(SCENARIO.format(load=load))
    return f


def test_stages_become_a_profile_that_ramps_from_the_warmup_rate(tmp_path: Path) -> None:
    f = write(tmp_path, """\
  warmup_s: 3
  warmup_rps: 50
  timeout_s: 2
  max_in_flight: 300
  stages:
    - {duration_s: 10, rps: 100, ramp_s: 2}
    - {duration_s: 10, rps: 600}
""")
    spec = LoadSpec.from_scenario(load_scenario(f), base_url="http://127.0.0.1:9000")
    assert (spec.model, spec.path, spec.timeout_s, spec.max_in_flight) == ("open", "/work", 2, 300)
    assert (spec.warmup_s, spec.warmup_rps, spec.seed, spec.workers) == (3, 50, 9, 0)
    p = spec.profile
    assert p.rate_at(0) == 50 and p.rate_at(1) == 75 and p.rate_at(2) == 100
    assert p.rate_at(10) == 600 and p.end_s == 20
    assert spec.offered_in(-1) == 50 and spec.offered_in(15) == 600
    assert seconds_span(spec) == (-3, 19)


def test_cli_workers_and_seed_override_the_scenario(tmp_path: Path) -> None:
    f = write(tmp_path, """\
  workers: 2
  stages: [{duration_s: 5, rps: 10}]
""")
    loaded = load_scenario(f)
    assert LoadSpec.from_scenario(loaded, base_url="http://x:1").workers == 2
    spec = LoadSpec.from_scenario(loaded, base_url="http://x:1", workers=4, seed=11)
    assert (spec.workers, spec.seed) == (4, 11)
    # warm-up defaults to the first stage's rate; no warm-up: the first ramp starts at 0
    assert spec.warmup_rps == 10


def test_closed_model_users_and_think_time(tmp_path: Path) -> None:
    f = write(tmp_path, """\
  model: closed
  think_time_s: 0.5
  warmup_s: 0
  stages: [{duration_s: 5, users: 20, ramp_s: 5}]
""")
    spec = LoadSpec.from_scenario(load_scenario(f), base_url="http://x:1")
    assert spec.model == "closed" and spec.think_time_s == 0.5
    assert spec.users_profile.users_at(2.5) == 10
    assert spec.offered_in(0) is None  # closed: offered is what the users sent


def test_trace_and_locustfile_resolve_next_to_the_scenario(tmp_path: Path) -> None:
    (tmp_path / "traffic.csv").write_text("t_s,rps\n0,10\n30,300\n")
    (tmp_path / "mine.py").write_text("from locust import HttpUser\n")
    f = write(tmp_path, """\
  trace: traffic.csv
  locustfile: mine.py
  warmup_s: 2
""")
    spec = LoadSpec.from_scenario(load_scenario(f), base_url="http://x:1")
    assert spec.profile.rate_at(15) == pytest.approx(155)
    assert spec.locustfile == str(tmp_path / "mine.py")
    assert spec.warmup_rps == 10  # the trace's first rate


def test_a_bad_trace_is_a_scenario_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "traffic.csv").write_text("t_s,rps\n0,10\n")
    f = write(tmp_path, "  trace: traffic.csv\n")
    with pytest.raises(ScenarioError, match=r"traffic\.csv: a trace needs at least two rows"):
        LoadSpec.from_scenario(load_scenario(f), base_url="http://x:1")


def test_spec_round_trips_through_json_dict() -> None:
    spec = LoadSpec(base_url="http://127.0.0.1:1", profile=Profile.constant(5, 3),
                    model="closed", users=Profile.constant(2, 3), workers=2, arrival="poisson")
    again = LoadSpec.from_dict(spec.to_dict())
    assert again == spec


@pytest.mark.parametrize("kw", [
    {"model": "half-open"}, {"arrival": "bursty"}, {"base_url": "127.0.0.1:80"},
    {"max_in_flight": 0}, {"timeout_s": 0}, {"workers": 4, "max_in_flight": 3},
], ids=lambda d: ",".join(d))
def test_bad_specs_are_refused(kw: dict[str, object]) -> None:
    args: dict[str, object] = {"base_url": "http://127.0.0.1:1",
                               "profile": Profile.constant(5, 3), **kw}
    with pytest.raises(ValueError):
        LoadSpec(**args)  # type: ignore[arg-type]
