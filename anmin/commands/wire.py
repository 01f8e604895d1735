"""``anmin wire``: The wire contract: JSON Schemas of the payloads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anmin.common import console

app = typer.Typer(help="The wire contract: JSON Schemas of the payloads.", no_args_is_help=True)


@app.command("schemas")
def wire_schemas(
    out: Annotated[Path, typer.Option(help="Folder to write the JSON Schemas to.")] = Path(
        "docs/schemas"
    ),
) -> None:
    """Write the JSON Schema of every payload model (committed under docs/schemas/)."""
    from wire.schemas import write

    for path in write(out):
        console.print(f"wrote {path}")
