"""Runs on a building's gateway: ingest, rules, local actions, the outbox and the uplink."""

from edge.agent import EdgeAgent, Observed
from edge.config import EdgeConfig, load, parse
from edge.outbox import Outbox


class EdgeError(Exception):
    """Base of the edge's own errors."""


__all__ = ["EdgeAgent", "EdgeConfig", "EdgeError", "Observed", "Outbox", "load", "parse"]
