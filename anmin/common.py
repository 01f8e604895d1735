"""What every ``anmin`` subcommand shares: the consoles, logging and running a coroutine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from rich.console import Console

console = Console()
errors = Console(stderr=True)


def logging_setup(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run_until_interrupted(coro: Coroutine[Any, Any, Any]) -> None:
    try:
        asyncio.run(coro)
    except KeyboardInterrupt:
        errors.print("[dim]stopped[/]")
