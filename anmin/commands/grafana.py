"""``anmin grafana``: Grafana dashboards, generated in code from grafana/generate.py.

grafana/ is a provisioning folder, not a package (DESIGN.md), and grafana-foundation-sdk is a
development dependency: the command runs the generator from a source checkout.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Annotated, Protocol, cast

import typer

from anmin.common import errors

app = typer.Typer(help="Grafana dashboards: generate and check them.", no_args_is_help=True)

GENERATOR = Path(__file__).resolve().parents[2] / "grafana" / "generate.py"


class Generator(Protocol):
    def main(self, argv: list[str] | None = None) -> int: ...


def _generator() -> Generator:
    if not GENERATOR.is_file():
        errors.print(f"[red]{GENERATOR} not found: run this from a source checkout of Anmin[/]")
        raise typer.Exit(2)
    spec = importlib.util.spec_from_file_location("anmin_grafana_generate", GENERATOR)
    if spec is None or spec.loader is None:
        raise typer.Exit(2)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        errors.print(f"[red]{exc}: pip install grafana-foundation-sdk (see pyproject.toml)[/]")
        raise typer.Exit(2) from exc
    return cast(Generator, module)


@app.command()
def generate(
    check: Annotated[
        bool, typer.Option("--check", help="Only compare: exit 1 if the committed JSON is stale.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Write the dashboards here (default grafana/dashboards).")
    ] = None,
) -> None:
    """Write grafana/dashboards/*.json from grafana/generate.py."""
    argv = (["--check"] if check else []) + ([] if out is None else ["--out", str(out)])
    raise typer.Exit(_generator().main(argv))
