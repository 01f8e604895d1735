"""The agent's once-a-second housekeeping (tick, state, silence, outbox bounds) outlives a
round that fails: an SD card that went read-only (or full) refuses the outbox's prune."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bus import Broker
from edge import EdgeAgent, parse
from tests.conftest import wait_for
from tests.integration.edge_support import edge_config_yaml


@pytest.mark.anyio
async def test_a_round_that_fails_is_counted_and_the_next_one_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No broker is needed: nothing in these rounds publishes.
    agent = EdgeAgent(parse(edge_config_yaml(Broker("127.0.0.1", 1), tmp_path)))
    refused = 0

    def read_only(*args: object, **kwargs: object) -> int:
        nonlocal refused
        refused += 1
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(agent.outbox, "prune", read_only)
    rounds = asyncio.create_task(agent._housekeeping_loop())
    try:
        await wait_for(
            lambda: agent.counters["housekeeping_errors"] >= 2 or rounds.done(),
            what="two failed rounds",
        )
        assert not rounds.done()  # before, the first refusal ended the task (and the agent)
        assert agent.counters["housekeeping_errors"] in (refused, refused - 1)  # each counted
    finally:
        rounds.cancel()
        with pytest.raises(asyncio.CancelledError):
            await rounds
        agent.close()
