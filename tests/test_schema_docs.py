from pathlib import Path

from harness.record.schema import markdown

ROOT = Path(__file__).resolve().parents[1]


def test_columns_doc_is_generated_from_schema() -> None:
    assert (ROOT / "docs" / "columns.md").read_text() == markdown(), (
        "docs/columns.md is stale: run `python -m harness.record.schema > docs/columns.md`")


def test_scenario_doc_is_generated_from_models() -> None:
    from harness.scenario.docs import markdown as scenario_md

    assert (ROOT / "docs" / "scenario.md").read_text() == scenario_md(), (
        "docs/scenario.md is stale: run `python -m harness.scenario.docs > docs/scenario.md`")
