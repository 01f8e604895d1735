"""The hub's one exception base, and the faults below it."""

from __future__ import annotations


class HubError(Exception):
    """Something the hub cannot do; converted to HTTP errors only in routes."""


class StoreError(HubError):
    """The database failed (unreachable, locked, full); the operation did not happen."""


class ServeError(HubError):
    """The HTTP server could not start (for example: the port is taken)."""
