"""Gateway heartbeats and last wills become gateway-offline incidents after a grace period."""

from __future__ import annotations

from datetime import timedelta

from hub.store import Store
from tests.unit.hub.helpers import NOW
from wire import Heartbeat


def beat(state: str, minutes: float = 0) -> Heartbeat:
    return Heartbeat(
        site="s1",
        gateway="g1",
        state=state,  # type: ignore[arg-type]
        ts=NOW + timedelta(minutes=minutes),
    )


def at(minutes: float) -> timedelta:
    return timedelta(minutes=minutes)


def test_a_silent_gateway_is_stale_then_an_incident_then_cleared(store: Store) -> None:
    store.record_heartbeat(beat("online"), NOW)
    assert store.sweep_gateways(NOW + at(4)) == []
    [state] = store.gateway_states(NOW + at(4))
    assert state.stale and state.offline_incident is None  # stale after 3 min, grace 2 more
    [opened] = store.sweep_gateways(NOW + at(5) + timedelta(seconds=1))
    assert store.sweep_gateways(NOW + at(6)) == []  # once per outage
    incident = store.incident(opened)
    assert incident is not None
    assert (incident.kind, incident.state, incident.severity) == (
        "gateway_offline",
        "open",
        "Severe",
    )
    assert incident.opened_at == NOW + at(3)  # down since it went stale
    # It comes back: the incident is marked cleared (someone should still look why).
    store.record_heartbeat(beat("online", 7), NOW + at(7))
    incident = store.incident(opened)
    assert incident is not None and incident.cleared_at is not None
    [state] = store.gateway_states(NOW + at(7))
    assert not state.stale and state.offline_incident is None and state.down_since is None


def test_a_last_will_counts_from_when_it_arrived(store: Store) -> None:
    store.record_heartbeat(beat("online"), NOW)
    store.record_heartbeat(beat("offline"), NOW + at(1))
    assert store.sweep_gateways(NOW + at(2)) == []
    [state] = store.gateway_states(NOW + at(2))
    assert state.stale and state.down_since == NOW + at(1)
    assert len(store.sweep_gateways(NOW + at(3) + timedelta(seconds=1))) == 1
    assert [i.kind for i in store.incidents()] == ["gateway_offline"]
    actions = [a.action for a in store.audit()]
    assert actions == ["incident.opened"]


def test_a_batch_of_heartbeats_is_one_by_one_in_one_transaction(
    store: Store, database_url: str
) -> None:
    """Many gateways, one of them new, one twice (older after newer), one back from an outage
    with its incident: the batch leaves what the heartbeats one by one would."""
    store.record_heartbeat(beat("offline"), NOW)
    [opened] = store.sweep_gateways(NOW + at(3) + timedelta(seconds=1))
    others = [
        Heartbeat(site="s1", gateway=f"g{n}", state="online", ts=NOW + at(4), outbox_depth=n)
        for n in range(2, 6)
    ]
    older = Heartbeat(site="s1", gateway="g2", state="online", ts=NOW, outbox_depth=99)
    store.record_heartbeats([others[0], beat("online", 4), *others[1:], older], NOW + at(4))
    states = {s.gateway: s for s in store.gateway_states(NOW + at(4))}
    assert sorted(states) == ["g1", "g2", "g3", "g4", "g5"]
    assert states["g2"].outbox_depth == 2  # the older heartbeat changed nothing
    assert states["g1"].down_since is None and states["g1"].offline_incident is None
    incident = store.incident(opened)
    assert incident is not None and incident.cleared_at is not None
    # Another hub's store, the same batch again: nothing new, nothing lost.
    other = Store(database_url)
    try:
        other.record_heartbeats(others, NOW + at(5))
    finally:
        other.close()
    assert len(store.gateway_states(NOW + at(5))) == 5
