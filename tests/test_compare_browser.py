"""The compare view in headless Chromium: two real runs (`harness run --platform sim`) ×
three strategies, as a `harness compare --html` file and through `harness dashboard`
(index → tick runs → compare). No console errors, every panel drawn, six series overlaid;
screenshots under test-artifacts/ (compare-ab.png, dashboard-index.png,
dashboard-compare.png).

The browser plumbing (DevTools client, Chromium fixture) is tests/test_report_browser.py's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cli import main
from tests.dashboard_server import serving
from tests.test_report_browser import (
    ARTIFACTS,
    CHROMIUM,
    PANELS,
    Cdp,
    browser,  # noqa: F401 - the fixture, shared with the report's browser test
    close_page,
    open_page,
    panel_points,
)

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 300

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="chromium is not installed (apt install chromium)")


@pytest.fixture(scope="module")
def sim_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/A: spike.yaml; results/B: the same scenario with the autoscaler's target
    lowered (a changed strategy, as in a before/after comparison). Two trials each."""
    root = tmp_path_factory.mktemp("sim")
    results = root / "results"
    doc = yaml.safe_load((ROOT / "spike.yaml").read_text())
    auto = next(s for s in doc["strategies"] if s["name"] == "autoscale")
    auto["autoscaler"]["target"] = 0.45
    changed = root / "spike-b.yaml"
    changed.write_text(yaml.safe_dump(doc, sort_keys=False))
    for run_id, scenario in (("A", ROOT / "spike.yaml"), ("B", changed)):
        proc = subprocess.run(
            [sys.executable, "-m", "harness.cli", "run", str(scenario), "--platform", "sim",
             "--repetitions", "2", "--out", str(results), "--run-id", run_id],
            cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        # 1 = a threshold of spike.yaml failed: the run itself is complete, and gates are
        # not what this test is about
        assert proc.returncode in (0, 1), proc.stderr[-2000:]
        assert (results / run_id / "timeseries.csv").stat().st_size > 0
    return results


def wait(cdp: Cdp, expr: str, timeout_s: float = 60.0) -> Any:
    """Like Cdp.wait_for, but survives the page navigating (no context for a moment)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            v = cdp.eval(expr)
        except RuntimeError:
            v = None
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {expr}")


def check_compare_page(cdp: Cdp) -> None:
    assert cdp.eval("document.body.dataset.renderState") == "done"
    assert cdp.eval("document.body.dataset.jsErrors") == "0"
    points = panel_points(cdp)
    assert set(points) == set(PANELS)
    for name in PANELS:  # every panel drew data; the sim has no host of its own to measure
        if name == "host":
            assert points[name] == 0, points
        else:
            assert points[name] > 50, (name, points)
    owners = cdp.eval("Object.fromEntries([...document.querySelectorAll('[data-panel]')]"
                      ".map(p => [p.dataset.panel, +p.dataset.strategies]))")
    # two runs × three strategies overlaid; only autoscale has an autoscaler metric
    for name in ("rate", "latency", "errors", "replicas"):
        assert owners[name] == 6, owners
    assert owners["autoscaler"] == 2, owners
    assert cdp.eval("document.querySelectorAll('#toolbar .chip').length") == 6
    assert cdp.eval("[...document.querySelectorAll('#compare .ctitle')]"
                    ".map(e => e.textContent)") == [
        "manual — B vs A", "compose — B vs A", "autoscale — B vs A"]
    # the table has intervals (two trials each) and A/B differences
    text = cdp.eval("document.getElementById('compare').textContent")
    assert "Δ" in text and "[" in text
    assert "Student-t" in cdp.eval("document.getElementById('compare-legend').textContent")
    warn = cdp.eval("document.getElementById('warnings').textContent")
    assert "strategy autoscale changed from A to B: autoscaler.target 0.6 → 0.45" in warn
    assert cdp.errors() == []


def test_compare_html_file_renders_two_runs_by_three_strategies(browser: str,  # noqa: F811
                                                                 sim_runs: Path,
                                                                 tmp_path: Path) -> None:
    page = tmp_path / "compare.html"
    assert main(["compare", str(sim_runs / "A"), str(sim_runs / "B"), "--html",
                 str(page), "--out", str(tmp_path)]) in (0, 1)
    cdp = open_page(browser, page.as_uri())
    try:
        check_compare_page(cdp)
        cdp.screenshot(ARTIFACTS / "compare-ab.png")
    finally:
        close_page(cdp)


def test_dashboard_index_ticks_runs_into_the_compare_view(browser: str,  # noqa: F811
                                                          sim_runs: Path) -> None:
    with serving(sim_runs) as srv:
        host, port = srv.server_address[:2]
        cdp = open_page(browser, f"http://{host}:{port}/")
        try:
            # headline figures per strategy: 2 runs × 3 strategies rows
            rows = cdp.eval("[...document.querySelectorAll('tr[data-run]')]"
                            ".map(r => r.dataset.run)")
            assert sorted(rows) == ["A"] * 3 + ["B"] * 3
            figs = cdp.eval("[...document.querySelectorAll('td.fig')].map(t => t.textContent)")
            assert len(figs) == 6 * 4 and all(f not in ("", "–") for f in figs), figs
            cdp.screenshot(ARTIFACTS / "dashboard-index.png")
            # tick both runs and press "compare" with real mouse clicks
            for rid in ("A", "B"):
                click(cdp, f"input[name=run][value={rid}]")
            assert cdp.eval("[...document.querySelectorAll('input[name=run]:checked')]"
                            ".length") == 2
            click(cdp, "#compare-button")
            wait(cdp, "location.pathname === '/compare' && document.body && "
                      "document.body.dataset.renderState === 'done'")
            # the index lists B (newest) first; the compare view still makes the earlier
            # run A (check_compare_page: "… — B vs A")
            assert json.loads(cdp.eval("JSON.stringify(new URLSearchParams(location.search)"
                                       ".getAll('run'))")) == ["B", "A"]
            check_compare_page(cdp)
            cdp.screenshot(ARTIFACTS / "dashboard-compare.png")
        finally:
            close_page(cdp)


def click(cdp: Cdp, selector: str) -> None:
    r = json.loads(cdp.eval(f"(() => {{ const e = document.querySelector({selector!r}); "
                            "e.scrollIntoView({block: 'center'}); "
                            "return JSON.stringify(e.getBoundingClientRect()); })()"))
    x, y = r["x"] + r["width"] / 2, r["y"] + r["height"] / 2
    cdp.mouse("mouseMoved", x, y)
    cdp.mouse("mousePressed", x, y, button="left", clickCount=1)
    cdp.mouse("mouseReleased", x, y, button="left", clickCount=1)
