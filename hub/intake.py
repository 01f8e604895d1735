"""What the hub does with each MQTT message from the gateways.

Alert events are stored, then acknowledged, then any broadcast they caused is published. The
order matters: the edge forgets an event only after the ack, so the ack must follow the commit;
the broadcast row is committed with the event, so a crash before publishing is repaired by
``publish_pending`` when the link (re)connects.

Bad input never raises out of ``handle``: it is counted by reason and logged, and the next
message is handled as usual.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from bus import BusError, Incoming
from hub.clock import Clock, utc_now
from hub.errors import StoreError
from hub.store import Recorded, Store
from wire import (
    Ack,
    AlertEvent,
    Codec,
    DeadLetter,
    Heartbeat,
    Reason,
    Receipt,
    WireError,
    topics,
)
from wire.topics import Channel, Topic

log = logging.getLogger(__name__)
T = TypeVar("T")


class Publisher(Protocol):
    """What the intake needs from the MQTT link (``bus.MqttLink`` is one)."""

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None: ...


def _check_source(topic: Topic, site: str | None, gateway: str | None, what: str) -> None:
    """A payload must name the gateway whose topic it came on (when it names one at all).

    A gateway's broker credentials (ACL) bind it to its own topics; a payload claiming another
    gateway is a bug or a forgery, and either way must not be stored as that gateway's.
    """
    if site is not None and site != topic.site:
        raise WireError(
            Reason.DEVICE_MISMATCH, f"{what} names site {site!r} but came on {topic.site!r}'s topic"
        )
    if gateway is not None and gateway != topic.gateway:
        raise WireError(
            Reason.DEVICE_MISMATCH,
            f"{what} names gateway {gateway!r} but came on {topic.gateway!r}'s topic",
        )


def _gateway_of(topic: Topic) -> str:
    if topic.gateway is None:  # topics.parse gives gateway channels a gateway; be sure anyway
        raise WireError(Reason.BAD_TOPIC, f"{topic.channel} topic without a gateway")
    return topic.gateway


class Intake:
    """Handles the gateways' alert, receipt, heartbeat and dead-letter messages.

    ``counters`` counts rejections by ``wire.Reason`` (a ``StrEnum``, so ``counters["bad_topic"]``
    and ``counters[Reason.BAD_TOPIC]`` are the same entry) and the work done under plain names:
    alerts_stored, alerts_repeated, acks_sent, broadcasts_published, receipts_stored,
    receipts_repeated, heartbeats, dead_letters, store_errors, publish_errors, internal_errors.
    ``dead_letters`` counts the gateways' own rejections by their reason.
    """

    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        *,
        clock: Clock = utc_now,
        codec: Codec | None = None,
        acks: AckBatcher | None = None,
    ) -> None:
        self.store = store
        # With a batcher, acks (still only after the commit) go out batched, not one by one.
        self.acks = acks
        self.publisher = publisher
        self.clock = clock
        self.codec = codec or Codec()
        self.counters: Counter[str] = Counter()
        # Called when an alert opens an incident, to wake the notification timers at once.
        self.on_incident: Callable[[], None] | None = None
        self.dead_letters: Counter[str] = Counter()
        self._channels: dict[Channel, Callable[[Topic, bytes], Awaitable[None]]] = {
            Channel.ALERT: self._alert,
            Channel.RECEIPT: self._receipt,
            Channel.HEARTBEAT: self._heartbeat,
            Channel.DEADLETTER: self._dead_letter,
        }

    async def handle(self, incoming: Incoming) -> None:
        """Handle one message; never raises (except cancellation)."""
        try:
            topic = topics.parse(incoming.topic)
            handler = self._channels.get(topic.channel)
            if handler is None:
                raise WireError(Reason.BAD_TOPIC, f"the hub does not read {topic.channel} topics")
            await handler(topic, incoming.payload)
        except WireError as exc:
            self._rejected(incoming, exc)
        except StoreError as exc:
            # Not acked, so the edge keeps the event in its outbox and sends it again.
            self.counters["store_errors"] += 1
            log.error("database failed on %s: %s", incoming.topic, exc)
        except BusError as exc:
            # A lost ack is resent when the edge resends; a lost broadcast on reconnect.
            self.counters["publish_errors"] += 1
            log.warning("publish failed while handling %s: %s", incoming.topic, exc)
        except Exception:
            # A bug must not stop the loop that every other gateway's alarms go through.
            self.counters["internal_errors"] += 1
            log.exception("unexpected failure handling %s", incoming.topic)

    async def handle_many(self, batch: Sequence[Incoming]) -> None:
        """Handle messages in their order; consecutive alert events are stored in one
        transaction (``Store.record_alert_events``). Never raises (except cancellation)."""
        events: list[AlertEvent] = []
        beats: list[Heartbeat] = []
        letters: list[DeadLetter] = []
        for incoming in batch:
            channel = incoming.topic.rsplit("/", 1)[-1]
            if channel == Channel.DEADLETTER:
                # Counted in one transaction after the alerts, as heartbeats are: a flood of
                # them (a device gone wrong) must not hold the alarms behind it for seconds.
                try:
                    letters.append(
                        self._decode_dead_letter(topics.parse(incoming.topic), incoming.payload)
                    )
                except WireError as exc:
                    self._rejected(incoming, exc)
                continue
            if channel == Channel.HEARTBEAT:
                # All of a batch's heartbeats in one transaction, after its alerts: they touch
                # only the gateways' state, and a gateway's own stay in their order.
                try:
                    topic = topics.parse(incoming.topic)
                    beats.append(self._decode_heartbeat(topic, incoming.payload))
                except WireError as exc:
                    self._rejected(incoming, exc)
                continue
            if channel != Channel.ALERT:
                await self._store_alerts(events)
                events = []
                await self.handle(incoming)
                continue
            try:
                events.append(self._decode_alert(topics.parse(incoming.topic), incoming.payload))
            except WireError as exc:
                self._rejected(incoming, exc)
        await self._store_alerts(events)
        await self._store_heartbeats(beats)
        await self._store_dead_letters(letters)

    async def _store_dead_letters(self, letters: list[DeadLetter]) -> None:
        if await self._stored_many(self.store.record_dead_letters, letters, "dead letters"):
            self._counted(letters)

    def _counted(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            self.counters["dead_letters"] += 1 + letter.repeats
            self.dead_letters[letter.reason] += 1 + letter.repeats

    async def _store_heartbeats(self, beats: list[Heartbeat]) -> None:
        stored = await self._stored_many(self.store.record_heartbeats, beats, "heartbeats")
        if stored:
            self.counters["heartbeats"] += len(beats)
        elif stored is None and len(beats) > 1:
            # One that cannot be stored (a bug) must not take the others with it.
            for beat in beats:
                await self._store_heartbeats([beat])

    async def _stored_many(
        self, record: Callable[[list[T], datetime], None], items: list[T], what: str
    ) -> bool | None:
        """Store a batch's ``items`` in one transaction: True when stored, False when the
        database failed, None on a bug (each counted and logged). Never raises."""
        if not items:
            return False
        try:
            await asyncio.to_thread(record, items, self.clock())
        except StoreError as exc:
            self.counters["store_errors"] += 1
            log.error("database failed on %d %s: %s", len(items), what, exc)
            return False
        except Exception:
            self.counters["internal_errors"] += 1
            log.exception("unexpected failure storing %d %s", len(items), what)
            return None
        return True

    def _rejected(self, incoming: Incoming, exc: WireError) -> None:
        self.counters[exc.reason] += 1
        log.warning("rejected %s (%d bytes): %s", incoming.topic, len(incoming.payload), exc)

    async def _store_alerts(self, events: list[AlertEvent]) -> None:
        if not events:
            return
        now = self.clock()
        try:
            recorded = await self.accept_alerts(events, now)
        except StoreError as exc:
            # Not acked, so the edge keeps the events in its outbox and sends them again.
            self.counters["store_errors"] += 1
            log.error("database failed on %d alert events: %s", len(events), exc)
            return
        except Exception:
            self.counters["internal_errors"] += 1
            log.exception("unexpected failure storing %d alert events", len(events))
            return
        for event, done in zip(events, recorded, strict=True):
            try:
                await self._acknowledge(event, done, now)
            except BusError as exc:
                self.counters["publish_errors"] += 1
                log.warning("broadcast caused by %s not published yet: %s", event.id, exc)

    def _decode_alert(self, topic: Topic, payload: bytes) -> AlertEvent:
        # No timestamp window here: an alert from a gateway whose clock drifted is still an
        # alert, and one we refused would never be acked and would come back forever.
        event = self.codec.decode(payload, AlertEvent, self.clock(), check_time=False)
        _check_source(topic, event.site, event.gateway, "alert event")
        return event

    async def _alert(self, topic: Topic, payload: bytes) -> None:
        event = self._decode_alert(topic, payload)
        now = self.clock()
        await self._acknowledge(event, await self.accept_alert(event, now), now)

    async def _acknowledge(self, event: AlertEvent, recorded: Recorded, now: datetime) -> None:
        """Ack a stored event (a repeat too: the edge resends because it missed our first
        ack), then publish the broadcast it caused (raises ``BusError``)."""
        if self.acks is not None:
            self.acks.add(event.site, event.gateway, event.id)
            await self.publish_caused(recorded)
            return
        ack = Ack(ids=[event.id], ts=now)
        try:
            await self.publisher.publish(
                topics.gateway_topic(Channel.ACK, event.site, event.gateway),
                self.codec.encode(ack),
                qos=1,
            )
            self.counters["acks_sent"] += 1
        except BusError as exc:
            # The edge resends and gets the ack then; the broadcast must not wait for that.
            self.counters["publish_errors"] += 1
            log.warning("ack of %s not sent: %s", event.id, exc)
        await self.publish_caused(recorded)

    async def accept_alert(self, event: AlertEvent, now: datetime) -> Recorded:
        """Store an alert event once, with its incident: the part MQTT and HTTP share.

        Raises ``StoreError``; the caller acknowledges only after this returns.
        """
        return (await self.accept_alerts([event], now))[0]

    async def accept_alerts(self, events: Sequence[AlertEvent], now: datetime) -> list[Recorded]:
        """Store alert events once each, in one transaction (see ``accept_alert``)."""
        recorded = await asyncio.to_thread(self.store.record_alert_events, events, now)
        opened = False
        for done in recorded:
            self.counters["alerts_stored" if done.stored else "alerts_repeated"] += 1
            if done.incident_opened:
                self.counters["incidents_opened"] += 1
                opened = True
        if opened and self.on_incident is not None:
            self.on_incident()
        return recorded

    async def publish_caused(self, recorded: Recorded) -> None:
        """Publish the broadcast an alert caused, if any (raises ``BusError``; a failed
        publish stays pending and is retried by ``publish_pending``)."""
        broadcast = recorded.broadcast
        if broadcast is not None:
            await self._publish_broadcast(
                broadcast.id, broadcast.site, self.codec.encode(broadcast)
            )

    async def _publish_broadcast(self, broadcast_id: str, site: str, payload: bytes) -> None:
        await self.publisher.publish(topics.broadcast(site), payload, qos=1)
        await asyncio.to_thread(self.store.mark_published, broadcast_id, self.clock())
        self.counters["broadcasts_published"] += 1
        log.info("broadcast %s published to site %s", broadcast_id, site)

    async def _receipt(self, topic: Topic, payload: bytes) -> None:
        now = self.clock()
        receipt = self.codec.decode(payload, Receipt, now, check_time=False)
        _check_source(topic, receipt.site, receipt.gateway, "receipt")
        gateway = _gateway_of(topic)
        stored = await asyncio.to_thread(
            self.store.record_receipt, receipt, site=topic.site, gateway=gateway, now=now
        )
        self.counters["receipts_stored" if stored else "receipts_repeated"] += 1

    async def _heartbeat(self, topic: Topic, payload: bytes) -> None:
        heartbeat = self._decode_heartbeat(topic, payload)
        await asyncio.to_thread(self.store.record_heartbeat, heartbeat, self.clock())
        self.counters["heartbeats"] += 1

    def _decode_heartbeat(self, topic: Topic, payload: bytes) -> Heartbeat:
        heartbeat = self.codec.decode(payload, Heartbeat, self.clock(), check_time=False)
        _check_source(topic, heartbeat.site, heartbeat.gateway, "heartbeat")
        return heartbeat

    async def _dead_letter(self, topic: Topic, payload: bytes) -> None:
        dead_letter = self._decode_dead_letter(topic, payload)
        await asyncio.to_thread(self.store.record_dead_letter, dead_letter, self.clock())
        self._counted([dead_letter])

    def _decode_dead_letter(self, topic: Topic, payload: bytes) -> DeadLetter:
        dead_letter = self.codec.decode(payload, DeadLetter, self.clock(), check_time=False)
        _check_source(topic, dead_letter.site, dead_letter.gateway, "dead letter")
        return dead_letter

    async def on_connect(self) -> None:
        """The link's on-connect hook: tell the gateways we are here (so they resend what
        waits in their outboxes now, not at their next backoff), then publish pending
        broadcasts. Never raises (except cancellation)."""
        try:
            await self.publisher.publish(topics.hub_online(), b"{}", qos=1)
        except BusError as exc:
            self.counters["publish_errors"] += 1
            log.warning("cannot announce the hub: %s", exc)
        await self.publish_pending()

    async def republish_loop(self, every_s: float = 5.0) -> None:
        """A broadcast whose publish failed while the link stayed up is retried here."""
        while True:
            await asyncio.sleep(every_s)
            await self.publish_pending()

    async def publish_pending(self) -> None:
        """Publish broadcasts committed but never published (the hub crashed, or the link fell).

        Meant as the link's on-connect hook, so it never raises (except cancellation): an
        exception there would stop the link. What fails stays pending for the next connect.
        """
        try:
            pending = await asyncio.to_thread(self.store.unpublished_broadcasts, self.clock())
            for record in pending:
                await self._publish_broadcast(record.id, record.site, record.payload)
        except StoreError as exc:
            self.counters["store_errors"] += 1
            log.error("cannot read pending broadcasts: %s", exc)
        except BusError as exc:
            self.counters["publish_errors"] += 1
            log.warning("cannot publish pending broadcasts: %s", exc)
        except Exception:
            self.counters["internal_errors"] += 1
            log.exception("unexpected failure publishing pending broadcasts")


class AckBatcher:
    """Acks of committed events, gathered per gateway and published as few ``Ack`` messages.

    While one ack is on its way to the broker the next ids pile up and leave together, so the
    intake never waits on the broker per event. An ack that cannot be published is dropped:
    the edge resends the event and is acked then.
    """

    def __init__(self, publisher: Publisher, *, clock: Clock = utc_now, codec: Codec | None = None):
        self.publisher = publisher
        self.clock = clock
        self.codec = codec or Codec()
        self.counters: Counter[str] = Counter()
        self._pending: dict[tuple[str, str], list[str]] = {}
        self._ready = asyncio.Event()

    def add(self, site: str, gateway: str, event_id: str) -> None:
        self._pending.setdefault((site, gateway), []).append(event_id)
        self._ready.set()

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        self._ready.clear()
        for (site, gateway), ids in pending.items():
            for start in range(0, len(ids), MAX_ACK_IDS):
                chunk = ids[start : start + MAX_ACK_IDS]
                ack = Ack(ids=chunk, ts=self.clock())
                try:
                    await self.publisher.publish(
                        topics.gateway_topic(Channel.ACK, site, gateway),
                        self.codec.encode(ack),
                        qos=1,
                    )
                    self.counters["acks_sent"] += 1
                    self.counters["ids_acked"] += len(chunk)
                except BusError as exc:
                    self.counters["publish_errors"] += 1
                    log.warning("ack of %d events to %s/%s not sent: %s", len(chunk), site,
                                gateway, exc)  # fmt: skip

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            await self.flush()


# The wire's Ack takes at most this many ids.
MAX_ACK_IDS = 500
# Messages one transaction takes at most: consecutive alert events among them share it.
MAX_BATCH = 256
# Messages that must be waiting before a second batch is stored beside one in progress.
SPREAD_AT = 32


class Pipeline:
    """Stores what the gateways send in batches, up to ``workers`` batches at a time, each
    gateway's messages in their order.

    A batch is everything queued when a worker takes it (up to ``MAX_BATCH``), from every
    gateway not already being stored by another worker: a lone event is stored at once, and
    under a flood one transaction (one commit, a handful of statements) serves many events
    from many gateways. A gateway is in one batch at a time, so its messages stay in order.

    While a batch is being stored, another starts beside it only once ``SPREAD_AT`` messages
    wait; fewer wait for the batch in progress (milliseconds) and go together after it. A
    batch costs about as much as a dozen events, so a steady stream taken one event per
    transaction by many idle workers would spend the CPU on batches, not on events (measured:
    ~400 events/s on PostgreSQL with two hubs, against >2,000 batched).

    At most ``depth`` x ``workers`` messages wait; beyond that ``handle`` waits, and the flood
    backs up into the broker, not into memory.
    """

    def __init__(self, intake: Intake, *, workers: int = 2, depth: int = 256) -> None:
        self.intake = intake
        self._workers = max(1, workers)
        self._limit = max(1, depth) * self._workers
        self._queues: dict[str, deque[Incoming]] = {}  # per gateway, in arrival order
        self._ready: deque[str] = deque()  # gateways with messages that no worker is storing
        self._busy: set[str] = set()  # gateways in a batch being stored
        self._held = 0  # messages queued or being stored
        self._takeable = 0  # messages of the ready gateways
        self._storing = 0  # batches in progress
        self._work = asyncio.Event()
        self._room = asyncio.Event()

    async def handle(self, incoming: Incoming) -> None:
        while self._held >= self._limit:
            self._room.clear()
            await self._room.wait()
        # Everything before the channel names the gateway: anmin/v1/{site}/{gateway}/{channel}.
        source = incoming.topic.rsplit("/", 1)[0]
        queue = self._queues.get(source)
        if queue is None:
            queue = self._queues[source] = deque()
        if source not in self._busy:
            if not queue:
                self._ready.append(source)
            self._takeable += 1
        queue.append(incoming)
        self._held += 1
        self._work.set()

    def _may_take(self) -> bool:
        return bool(self._ready) and (self._storing == 0 or self._takeable >= SPREAD_AT)

    def _take(self) -> tuple[list[Incoming], list[str]]:
        """What is queued, gateway by gateway (oldest waiting first), up to ``MAX_BATCH``."""
        batch: list[Incoming] = []
        sources: list[str] = []
        while self._ready and len(batch) < MAX_BATCH:
            source = self._ready.popleft()
            queue = self._queues[source]
            self._busy.add(source)
            self._takeable -= len(queue)  # what does not fit waits for this batch too
            sources.append(source)
            while queue and len(batch) < MAX_BATCH:
                batch.append(queue.popleft())
        return batch, sources

    def _release(self, batch: list[Incoming], sources: list[str]) -> None:
        for source in sources:
            self._busy.discard(source)
            queue = self._queues[source]
            if queue:
                self._ready.append(source)  # what came meanwhile (or did not fit) goes next
                self._takeable += len(queue)
            else:
                del self._queues[source]
        self._held -= len(batch)
        self._room.set()
        if self._ready:
            self._work.set()

    async def _store(self) -> None:
        while True:
            while not self._may_take():
                self._work.clear()
                await self._work.wait()
            batch, sources = self._take()
            self._storing += 1
            self.intake.counters["batches"] += 1
            try:
                await self.intake.handle_many(batch)
            finally:
                self._storing -= 1
                self._release(batch, sources)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for n in range(self._workers):
                group.create_task(self._store(), name=f"intake worker {n}")
