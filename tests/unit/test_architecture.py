"""DESIGN.md's import arrows and the one-module rule for topics, checked on the source."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "wire": ROOT / "wire",
    "rules": ROOT / "rules",
    "edge": ROOT / "edge",
    "hub": ROOT / "hub",
    "bus": ROOT / "bus",
    "firmware_sim": ROOT / "firmware-sim" / "firmware_sim",
    "anmin": ROOT / "anmin",
}
OURS = set(PACKAGES)
STDLIB = set(sys.stdlib_module_names)
# What each package may import beyond the standard library (third-party and ours).
ALLOWED: dict[str, set[str]] = {
    "wire": {"msgspec"},
    "rules": {"wire", "msgspec", "yaml", "numpy", "sklearn"},
    "bus": {"aiomqtt", "paho"},
    "edge": {
        "wire",
        "rules",
        "bus",
        "msgspec",
        "yaml",
        "influxdb_client",
        "urllib3",
        "prometheus_client",
    },
    "hub": {
        "wire",
        "bus",
        "msgspec",
        "yaml",
        "fastapi",
        "starlette",
        "pydantic",
        "sqlalchemy",
        "uvicorn",
        "alembic",
        "psycopg",
        "argon2",
        "jwt",
        "apprise",
        "pywebpush",
        "py_vapid",  # Web Push keys (pywebpush's own dependency)
        "cryptography",  # the VAPID key file
        "jinja2",  # the web console's pages
        "httpx",
    },
    "firmware_sim": {"wire", "bus", "msgspec", "yaml", "pypinyin"},
    "anmin": OURS
    | {"typer", "rich", "msgspec", "amqtt", "yaml", "numpy", "matplotlib", "cryptography"},
}


def imports_of(package: str) -> dict[str, set[str]]:
    """Top-level module names imported by each file of a package."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGES[package].rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names - STDLIB - {"__future__", package}
    return found


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_imports_follow_the_arrows(package: str) -> None:
    wrong = {
        file: sorted(names - ALLOWED[package])
        for file, names in imports_of(package).items()
        if names - ALLOWED[package]
    }
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}: {wrong}"


def test_edge_and_hub_never_import_each_other() -> None:
    assert "hub" not in ALLOWED["edge"] and "edge" not in ALLOWED["hub"]
    for file, names in {**imports_of("edge"), **imports_of("hub")}.items():
        assert not names & {"edge", "hub"} - {file.split("/")[0]}, file


def test_topic_strings_are_built_only_in_wire_topics() -> None:
    offenders = []
    for folder in PACKAGES.values():
        for path in folder.rglob("*.py"):
            if path == ROOT / "wire" / "topics.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                    continue
                if "anmin/v1" in node.value or node.value.startswith("$share/"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"topic literals outside wire/topics.py: {offenders}"
