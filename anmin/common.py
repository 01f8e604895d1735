"""What every ``anmin`` subcommand shares: the consoles, logging and running a coroutine."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine
from typing import Any

from rich.console import Console

console = Console()
errors = Console(stderr=True)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: what journald and log shippers parse without regexes."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def logging_setup(verbose: bool, *, json_logs: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLogFormatter()
        if json_logs
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])


def run_until_interrupted(coro: Coroutine[Any, Any, Any]) -> None:
    try:
        asyncio.run(coro)
    except KeyboardInterrupt:
        errors.print("[dim]stopped[/]")
