"""The intake against a real SQLite store and a recording publisher (no broker)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bus import Incoming, NotConnected
from hub.intake import MAX_BATCH, SPREAD_AT, Intake, Pipeline
from hub.store import Store
from tests.unit.hub.helpers import NOW, gas_event, receipt
from wire import Ack, AlertEvent, Broadcast, Codec, DeadLetter, Heartbeat, Reason, Severity, topics
from wire.topics import Channel

codec = Codec()


@dataclass
class Recorder:
    sent: list[tuple[str, bytes, int]] = field(default_factory=list)
    down: bool = False
    refuse: set[str] = field(default_factory=set)  # topics whose publish fails

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        if self.down or topic in self.refuse:
            raise NotConnected("the test broker is down")
        self.sent.append((topic, payload, qos))

    def on(self, topic: str) -> list[bytes]:
        return [payload for sent_topic, payload, _ in self.sent if sent_topic == topic]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    store.create_schema()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def publisher() -> Recorder:
    return Recorder()


@pytest.fixture
def intake(store: Store, publisher: Recorder) -> Intake:
    return Intake(store, publisher, clock=lambda: NOW)


def alert_message(event: AlertEvent, *, site: str = "s1", gateway: str = "g1") -> Incoming:
    topic = topics.gateway_topic(Channel.ALERT, site, gateway)
    return Incoming(topic=topic, payload=codec.encode(event), qos=1, retain=False)


ACK_TOPIC = topics.gateway_topic(Channel.ACK, "s1", "g1")
BROADCAST_TOPIC = topics.broadcast("s1")


@pytest.mark.anyio
async def test_alert_is_stored_acked_and_broadcast(
    intake: Intake, store: Store, publisher: Recorder
) -> None:
    event = gas_event()
    await intake.handle(alert_message(event))

    [ack] = publisher.on(ACK_TOPIC)
    assert codec.decode(ack, Ack, NOW).ids == [event.id]
    [payload] = publisher.on(BROADCAST_TOPIC)
    broadcast = codec.decode(payload, Broadcast, NOW)
    assert broadcast.cause == event.id
    assert all(qos == 1 for _, _, qos in publisher.sent)
    # Ack first: the edge may forget the event as soon as it is stored.
    assert [t for t, _, _ in publisher.sent] == [ACK_TOPIC, BROADCAST_TOPIC]
    assert store.unpublished_broadcasts() == []
    assert intake.counters["alerts_stored"] == 1


@pytest.mark.anyio
async def test_repeated_alert_is_acked_again_but_stored_and_broadcast_once(
    intake: Intake, store: Store, publisher: Recorder
) -> None:
    event = gas_event()
    await intake.handle(alert_message(event))
    await intake.handle(alert_message(event))
    assert len(publisher.on(ACK_TOPIC)) == 2
    assert len(publisher.on(BROADCAST_TOPIC)) == 1
    assert len(store.alerts()) == 1
    assert intake.counters["alerts_repeated"] == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", Reason.EMPTY_PAYLOAD),
        (b"{not json", Reason.MALFORMED_JSON),
        (b'{"id": 1}', Reason.WRONG_TYPE),
        (b"\xff\xfe", Reason.NOT_UTF8),
    ],
)
async def test_bad_alert_payload_is_counted_not_stored(
    intake: Intake, store: Store, publisher: Recorder, payload: bytes, reason: Reason
) -> None:
    topic = topics.gateway_topic(Channel.ALERT, "s1", "g1")
    await intake.handle(Incoming(topic=topic, payload=payload, qos=1, retain=False))
    assert intake.counters[reason] == 1
    assert store.alerts() == []
    assert publisher.sent == []


@pytest.mark.anyio
async def test_alert_from_another_gateways_topic_is_rejected(
    intake: Intake, store: Store, publisher: Recorder
) -> None:
    await intake.handle(alert_message(gas_event(gateway="g2"), gateway="g1"))
    await intake.handle(alert_message(gas_event(site="s2"), site="s1"))
    assert intake.counters[Reason.DEVICE_MISMATCH] == 2
    assert store.alerts() == []
    assert publisher.sent == []


@pytest.mark.anyio
async def test_alert_from_a_drifted_clock_is_still_stored_and_acked(
    intake: Intake, store: Store, publisher: Recorder
) -> None:
    # Refusing it would mean no ack, and the edge would resend it forever.
    await intake.handle(alert_message(gas_event(at=NOW + timedelta(hours=1))))
    assert intake.counters[Reason.TIMESTAMP_IN_FUTURE] == 0
    assert len(store.alerts()) == 1
    assert len(publisher.on(ACK_TOPIC)) == 1


@pytest.mark.anyio
async def test_topics_the_hub_does_not_read_are_counted(intake: Intake) -> None:
    for topic in ("nonsense", topics.reading("s1", "g1", "d1"), topics.broadcast("s1")):
        await intake.handle(Incoming(topic=topic, payload=b"{}", qos=0, retain=False))
    assert intake.counters[Reason.BAD_TOPIC] == 3


@pytest.mark.anyio
async def test_broadcast_lost_on_publish_is_sent_on_reconnect(
    intake: Intake, store: Store, publisher: Recorder
) -> None:
    publisher.down = True
    await intake.handle(alert_message(gas_event()))
    # Stored (the edge's resend will be acked), but neither acked nor broadcast yet.
    assert len(store.alerts()) == 1
    assert intake.counters["publish_errors"] == 2  # the ack and the broadcast
    [pending] = store.unpublished_broadcasts()

    publisher.down = False
    await intake.publish_pending()
    assert publisher.on(BROADCAST_TOPIC) == [pending.payload]
    assert store.unpublished_broadcasts() == []
    await intake.publish_pending()
    assert len(publisher.on(BROADCAST_TOPIC)) == 1


@pytest.mark.anyio
async def test_store_failure_is_counted_and_not_acked(
    intake: Intake, store: Store, publisher: Recorder
) -> None:
    # Break the database under the intake: a table it needs is gone.
    with store.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE alert_events")
    await intake.handle(alert_message(gas_event()))
    assert intake.counters["store_errors"] == 1
    assert publisher.sent == []


@pytest.mark.anyio
async def test_receipt_heartbeat_and_dead_letter(intake: Intake, store: Store) -> None:
    _, broadcast = store.record_alert(gas_event(), NOW)
    assert broadcast is not None
    receipt_topic = topics.gateway_topic(Channel.RECEIPT, "s1", "g1")
    payload = codec.encode(receipt(broadcast.id))
    for _ in range(2):
        await intake.handle(Incoming(topic=receipt_topic, payload=payload, qos=1, retain=False))
    assert [r.speaker for r in store.broadcasts()[0].receipts] == ["spk-1"]
    assert intake.counters["receipts_repeated"] == 1

    heartbeat = Heartbeat(site="s1", gateway="g1", state="online", ts=NOW, outbox_depth=3)
    await intake.handle(
        Incoming(
            topic=topics.gateway_topic(Channel.HEARTBEAT, "s1", "g1"),
            payload=codec.encode(heartbeat),
            qos=0,
            retain=True,
        )
    )
    assert store.gateways()[0].outbox_depth == 3

    letter = DeadLetter(
        site="s1", gateway="g1", topic="t", reason="malformed_json", detail="", ts=NOW, size=1
    )
    await intake.handle(
        Incoming(
            topic=topics.gateway_topic(Channel.DEADLETTER, "s1", "g1"),
            payload=codec.encode(letter),
            qos=0,
            retain=False,
        )
    )
    assert intake.dead_letters == {"malformed_json": 1}
    assert store.dead_letter_counts() == {("s1", "g1", "malformed_json"): 1}


@pytest.mark.anyio
async def test_a_batch_of_dead_letters_is_counted_in_one_go_after_its_alerts(
    intake: Intake, store: Store, publisher: Recorder
) -> None:
    def letter(reason: str, repeats: int = 0) -> Incoming:
        dead = DeadLetter(
            site="s1", gateway="g1", topic="t", reason=reason, detail="", ts=NOW, size=1,
            repeats=repeats,
        )  # fmt: skip
        topic = topics.gateway_topic(Channel.DEADLETTER, "s1", "g1")
        return Incoming(topic=topic, payload=codec.encode(dead), qos=0, retain=False)

    event = gas_event()
    batch = [letter("out_of_order") for _ in range(200)]
    batch += [alert_message(event), letter("out_of_order", repeats=799), letter("duplicate")]
    await intake.handle_many(batch)
    assert [i for p in publisher.on(ACK_TOPIC) for i in codec.decode(p, Ack, NOW).ids] == [event.id]
    assert store.dead_letter_counts() == {
        ("s1", "g1", "out_of_order"): 1000,
        ("s1", "g1", "duplicate"): 1,
    }
    assert intake.dead_letters == {"out_of_order": 1000, "duplicate": 1}


@pytest.mark.anyio
async def test_severe_gas_is_acked_without_broadcast(intake: Intake, publisher: Recorder) -> None:
    await intake.handle(alert_message(gas_event(severity=Severity.SEVERE)))
    assert len(publisher.on(ACK_TOPIC)) == 1
    assert publisher.on(BROADCAST_TOPIC) == []


@pytest.mark.anyio
async def test_a_lost_ack_does_not_hold_back_the_broadcast(
    intake: Intake, store: Store, publisher: Recorder
) -> None:
    publisher.refuse.add(ACK_TOPIC)
    await intake.handle(alert_message(gas_event()))
    assert len(publisher.on(BROADCAST_TOPIC)) == 1
    assert store.unpublished_broadcasts() == []
    assert intake.counters["publish_errors"] == 1


@pytest.mark.anyio
async def test_a_batch_keeps_its_order_and_a_bad_message_drops_nothing_else(
    intake: Intake, store: Store, publisher: Recorder
) -> None:
    first, second, third = (gas_event(at=NOW + timedelta(seconds=n)) for n in range(3))
    heartbeat = Heartbeat(site="s1", gateway="g1", state="online", ts=NOW, outbox_depth=2)
    batch = [
        alert_message(first),
        Incoming(topics.gateway_topic(Channel.ALERT, "s1", "g1"), b"{not json", 1, False),
        alert_message(second),
        Incoming(
            topics.gateway_topic(Channel.HEARTBEAT, "s1", "g1"), codec.encode(heartbeat), 0, True
        ),
        alert_message(third),
        alert_message(first),  # a resend: acked again, stored once
    ]
    await intake.handle_many(batch)
    acked = [i for payload in publisher.on(ACK_TOPIC) for i in codec.decode(payload, Ack, NOW).ids]
    assert acked == [first.id, second.id, third.id, first.id]
    assert {a.id for a in store.alerts()} == {first.id, second.id, third.id}
    assert intake.counters[Reason.MALFORMED_JSON] == 1
    assert intake.counters["alerts_stored"] == 3 and intake.counters["alerts_repeated"] == 1
    assert intake.counters["heartbeats"] == 1
    assert len(publisher.on(BROADCAST_TOPIC)) == 1  # one Extreme leak, broadcast once


@pytest.mark.anyio
async def test_a_batch_the_store_refuses_is_not_acked(
    intake: Intake, store: Store, publisher: Recorder
) -> None:
    with store.engine.begin() as connection:  # a table it needs is gone
        connection.exec_driver_sql("DROP TABLE alert_events")
    await intake.handle_many([alert_message(gas_event()), alert_message(gas_event())])
    assert intake.counters["store_errors"] == 1
    assert publisher.sent == []


@pytest.mark.anyio
async def test_a_heartbeat_the_store_cannot_take_does_not_drop_the_rest_of_its_batch(
    store: Store, publisher: Recorder
) -> None:
    class Fussy(Store):
        """Fails (a bug, not the database) on any batch holding gateway g2's heartbeat."""

        def record_heartbeats(self, heartbeats: Sequence[Heartbeat], now: datetime) -> None:
            if any(h.gateway == "g2" for h in heartbeats):
                raise ValueError("cannot store g2")
            super().record_heartbeats(heartbeats, now)

    fussy = Fussy(str(store.engine.url))
    intake = Intake(fussy, publisher, clock=lambda: NOW)
    beats = [
        Incoming(
            topics.gateway_topic(Channel.HEARTBEAT, "s1", gateway),
            codec.encode(Heartbeat(site="s1", gateway=gateway, state="online", ts=NOW)),
            0,
            True,
        )
        for gateway in ("g1", "g2", "g3")
    ]
    try:
        await intake.handle_many(beats)
        assert {g.gateway for g in fussy.gateways()} == {"g1", "g3"}
        assert intake.counters["heartbeats"] == 2
        assert intake.counters["internal_errors"] == 2  # the batch, then g2 alone
    finally:
        fussy.close()


class Held(Intake):
    """An intake whose batches are recorded, and held until the test lets them go."""

    def __init__(self, store: Store, publisher: Recorder) -> None:
        super().__init__(store, publisher, clock=lambda: NOW)
        self.batches: list[list[str]] = []
        self.going = asyncio.Event()
        self.going.set()
        self.started = asyncio.Condition()

    async def handle_many(self, batch: Sequence[Incoming]) -> None:
        async with self.started:
            self.batches.append([m.payload.decode() for m in batch])
            self.started.notify_all()
        await self.going.wait()

    async def wait_batches(self, count: int) -> None:
        async with asyncio.timeout(10), self.started:
            await self.started.wait_for(lambda: len(self.batches) >= count)


def message(gateway: str, n: int) -> Incoming:
    topic = topics.gateway_topic(Channel.ALERT, "s1", gateway)
    return Incoming(topic=topic, payload=f"{gateway}:{n}".encode(), qos=1, retain=False)


@asynccontextmanager
async def running(pipeline: Pipeline) -> AsyncIterator[Pipeline]:
    task = asyncio.create_task(pipeline.run())
    try:
        yield pipeline
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.anyio
async def test_a_lone_message_is_stored_at_once(store: Store, publisher: Recorder) -> None:
    held = Held(store, publisher)
    async with running(Pipeline(held, workers=2)) as pipeline:
        await pipeline.handle(message("g1", 0))
        await held.wait_batches(1)
        assert held.batches == [["g1:0"]]


@pytest.mark.anyio
async def test_what_queues_while_a_batch_is_stored_goes_in_one_batch_in_order(
    store: Store, publisher: Recorder
) -> None:
    held = Held(store, publisher)
    held.going.clear()
    async with running(Pipeline(held, workers=1)) as pipeline:
        await pipeline.handle(message("g1", 0))
        await held.wait_batches(1)
        for n in range(1, 4):  # the only worker is busy: these wait, from two gateways
            await pipeline.handle(message("g1", n))
            await pipeline.handle(message("g2", n))
        held.going.set()
        await held.wait_batches(2)
    assert held.batches[0] == ["g1:0"]
    # One transaction for both gateways; each gateway's messages in their order.
    assert sorted(held.batches[1]) == sorted(f"g{g}:{n}" for g in (1, 2) for n in range(1, 4))
    for gateway in ("g1", "g2"):
        mine = [m for m in held.batches[1] if m.startswith(gateway)]
        assert mine == [f"{gateway}:{n}" for n in range(1, 4)]


async def turns(count: int = 3) -> None:
    """Let the pipeline's workers run: turns of the event loop, not a wait on time."""
    for _ in range(count):
        await asyncio.sleep(0)


@pytest.mark.anyio
async def test_a_second_batch_starts_beside_one_only_when_enough_waits(
    store: Store, publisher: Recorder
) -> None:
    held = Held(store, publisher)
    held.going.clear()
    async with running(Pipeline(held, workers=4)) as pipeline:
        await pipeline.handle(message("g1", 0))
        await held.wait_batches(1)
        await pipeline.handle(message("g1", 1))  # g1 is being stored: this waits for it
        others = [message(f"g{n}", 0) for n in range(2, SPREAD_AT + 2)]
        for other in others[:-1]:  # fewer than SPREAD_AT: they wait for the batch in progress
            await pipeline.handle(other)
            await turns()
        assert len(held.batches) == 1
        await pipeline.handle(others[-1])  # enough: a second batch starts beside the first
        await held.wait_batches(2)
        # Every other gateway in it, but not g1, which is in the first batch still.
        assert held.batches[1] == [m.payload.decode() for m in others]
        held.going.set()
        await held.wait_batches(3)
        assert held.batches[2] == ["g1:1"]


@pytest.mark.anyio
async def test_a_batch_is_bounded_and_a_flood_waits_for_room(
    store: Store, publisher: Recorder
) -> None:
    held = Held(store, publisher)
    held.going.clear()
    async with running(Pipeline(held, workers=1, depth=MAX_BATCH + 1)) as pipeline:
        await pipeline.handle(message("g1", 0))
        await held.wait_batches(1)
        for n in range(1, MAX_BATCH + 1):  # fills the pipeline up: the first is still held
            await pipeline.handle(message("g1", n))
        flood = asyncio.create_task(pipeline.handle(message("g1", MAX_BATCH + 1)))
        await turns()
        assert not flood.done()  # no room: the MQTT dispatch (and so the broker) waits
        held.going.set()
        await flood
        await held.wait_batches(3)
    assert [len(b) for b in held.batches] == [1, MAX_BATCH, 1]
    assert held.batches[1][0] == "g1:1" and held.batches[2] == [f"g1:{MAX_BATCH + 1}"]
