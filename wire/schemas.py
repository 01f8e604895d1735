"""JSON Schemas of the wire models, as committed under docs/schemas/."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import msgspec

from wire.models import MODELS


def schemas() -> dict[str, str]:
    """File name -> JSON text of each model's schema, stable and pretty."""
    out: dict[str, str] = {}
    for name, model in MODELS.items():
        schema = _clean_descriptions(msgspec.json.schema(model))
        out[f"{name}.json"] = (
            json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        )
    return out


def _clean_descriptions(node: Any) -> Any:
    """Docstrings dedented the same way whatever msgspec does (0.23 began to clean them)."""
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else _clean_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(item) for item in node]
    return node


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in schemas().items():
        path = folder / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
