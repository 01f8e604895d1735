"""The simulator's one exception base, and the error for a wrong scenario file."""

from __future__ import annotations


class SimError(Exception):
    """Something the simulator cannot do as asked."""


class ScenarioError(SimError):
    """A scenario file is wrong. ``str()`` says the file, the line and what to fix."""

    def __init__(self, source: str, line: int | None, where: str, problem: str) -> None:
        at = f"{source}:{line}" if line else source
        key = f" at {where}" if where else ""
        super().__init__(f"{at}: {problem}{key}")
        self.source = source
        self.line = line
        self.where = where
        self.problem = problem
