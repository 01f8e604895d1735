"""A QoS 1 message is acknowledged after its handler, so one a process dies on comes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from bus import Incoming, MqttLink
from bus.broker import Mosquitto
from bus.mqtt import Handler
from bus.tasks import stop
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

TOPIC = "anmin/v1/s1/gw-1/broadcast-test"


def gateway(mosquitto: Mosquitto, handler: Callable[[Incoming], Awaitable[None]]) -> MqttLink:
    """The same gateway each time: one client id, one persistent session."""
    return MqttLink(
        mosquitto.broker,
        client_id="gw-acks",
        persistent=True,
        subscriptions=[(TOPIC, 1)],
        handler=handler,
    )


async def test_a_message_whose_handler_never_finished_is_delivered_again(
    mosquitto: Mosquitto,
) -> None:
    entered = asyncio.Event()

    async def dies_inside(message: Incoming) -> None:
        entered.set()
        await asyncio.Event().wait()  # the process is killed while it handles the message

    first = gateway(mosquitto, dies_inside)
    task = asyncio.create_task(first.run())
    sender = MqttLink(mosquitto.broker, client_id="hub-acks")
    sender_task = asyncio.create_task(sender.run())
    try:
        assert await first.wait_connected(10) and await sender.wait_connected(10)
        await sender.publish(TOPIC, b"warning 1", qos=1)
        await wait_for(entered.is_set, what="the handler to get the message")
    finally:
        await stop(task)  # gone without acknowledging

    got: list[bytes] = []

    async def records(message: Incoming) -> None:
        got.append(message.payload)

    second = gateway(mosquitto, records)
    task = asyncio.create_task(second.run())
    try:
        await wait_for(lambda: got == [b"warning 1"], what="the warning delivered again")
        # Handled this time, so acknowledged: a third session gets nothing more.
        await sender.publish(TOPIC, b"warning 2", qos=1)
        await wait_for(lambda: got == [b"warning 1", b"warning 2"], what="the next warning")
    finally:
        await stop(task)
    third: list[bytes] = []

    async def records_third(message: Incoming) -> None:
        third.append(message.payload)

    last = gateway(mosquitto, records_third)
    task = asyncio.create_task(last.run())
    try:
        assert await last.wait_connected(10)
        await sender.publish(TOPIC, b"warning 3", qos=1)
        await wait_for(lambda: third == [b"warning 3"], what="only the new warning")
    finally:
        await stop(task)
        await stop(sender_task)


@asynccontextmanager
async def linked(
    mosquitto: Mosquitto, name: str, subscription: tuple[str, int], handler: Handler
) -> AsyncIterator[tuple[MqttLink, MqttLink]]:
    """A receiving link with ``handler`` and a sending one, both connected."""
    receiver = MqttLink(
        mosquitto.broker, client_id=f"gw-{name}", subscriptions=[subscription], handler=handler
    )
    sender = MqttLink(mosquitto.broker, client_id=f"{name}-sender")
    tasks = [asyncio.create_task(receiver.run()), asyncio.create_task(sender.run())]
    try:
        assert await receiver.wait_connected(10) and await sender.wait_connected(10)
        yield receiver, sender
    finally:
        for task in tasks:
            await stop(task)


async def test_a_flood_the_handler_cannot_keep_up_with_waits_unread_and_keeps_order(
    mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory stays bounded under a flood: once the inbox holds its limit, reading pauses and
    the rest waits in the socket and at the broker; nothing is read only to be dropped, and
    every message still arrives, once and in order, when the handler catches up."""
    monkeypatch.setattr("bus.mqtt.INBOX_LIMIT", 50)
    release = asyncio.Event()
    got: list[tuple[int, bytes]] = []
    waiting: list[int] = []

    async def slow(message: Incoming) -> None:
        await release.wait()  # stuck until the flood has queued up
        got.append((message.qos, message.payload))
        waiting.append(receiver.waiting)

    async with linked(mosquitto, "flood", ("flood/#", 1), slow) as (receiver, sender):
        for n in range(500):
            sender.publish_nowait("flood/best-effort", b"%d" % n)
        for n in range(10):
            await sender.publish("flood/sure", b"sure %d" % n, qos=1)
        await wait_for(lambda: receiver.waiting == 50, what="the inbox to fill")
        release.set()
        sure = [b"sure %d" % n for n in range(10)]
        await wait_for(
            lambda: [p for q, p in got if q == 1] == sure, what="every QoS 1 message, in order"
        )
        await wait_for(lambda: len(got) == 510, what="every QoS 0 message too")
        assert [int(p) for q, p in got if q == 0] == list(range(500))
        assert receiver.inbox_dropped == 0
        assert max(waiting) <= 50


async def test_every_qos_arrives_through_the_fast_ingest_path(mosquitto: Mosquitto) -> None:
    """QoS 0 and 1 go through the link's own PUBLISH handling, QoS 2 through paho's: all
    three arrive with their topic, payload and QoS."""
    got: list[tuple[str, bytes, int]] = []

    async def records(message: Incoming) -> None:
        got.append((message.topic, message.payload, message.qos))

    async with linked(mosquitto, "qos", ("qos/#", 2), records) as (_, sender):
        for qos in (0, 1, 2):
            await sender.publish(f"qos/{qos}", b"x" * (qos + 1) * 100, qos=qos)
        expected = [(f"qos/{qos}", b"x" * (qos + 1) * 100, qos) for qos in (0, 1, 2)]
        await wait_for(lambda: sorted(got) == expected, what="a message at each QoS")
        # A packet longer than paho reads in one go (it pauses every 100 reads, here of the
        # link's 16 kB buffer), with no later traffic to wake the reader: it arrives whole.
        big = bytes(range(256)) * 8192  # 2 MB
        await sender.publish("qos/big", big, qos=1)
        await wait_for(lambda: got[3:] == [("qos/big", big, 1)], timeout=5, what="a long one")
