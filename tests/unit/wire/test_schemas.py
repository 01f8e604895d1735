"""The JSON Schemas under docs/schemas/ are generated from the models and must match them."""

from __future__ import annotations

from pathlib import Path

from wire.schemas import schemas

DOCS = Path(__file__).resolve().parents[3] / "docs" / "schemas"


def test_committed_schemas_match_the_models() -> None:
    expected = schemas()
    committed = {p.name: p.read_text(encoding="utf-8") for p in DOCS.glob("*.json")}
    assert set(committed) == set(expected), "run 'anmin wire schemas' and commit docs/schemas/"
    for name, text in expected.items():
        assert committed[name] == text, f"{name} is stale: run 'anmin wire schemas'"
