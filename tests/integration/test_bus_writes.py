"""A publish leaves on the socket at once, not on the event loop's later turns (bus.mqtt)."""

from __future__ import annotations

import asyncio
import threading

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bus import MqttLink
from bus.broker import Mosquitto
from bus.tasks import stop

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

TOPIC = "anmin/v1/s1/gw-1/alert"


@pytest.mark.parametrize("qos", [0, 1])
async def test_a_publish_is_written_before_the_loop_turns(mosquitto: Mosquitto, qos: int) -> None:
    """An alarm's alert and siren command must not wait for the loop to finish the readings
    queued behind them: with the loop blocked right after publish_soon returns, another
    client still receives the message."""
    arrived = threading.Event()
    subscribed = threading.Event()
    watcher = paho.Client(CallbackAPIVersion.VERSION2, client_id="watcher")
    watcher.on_subscribe = lambda *_args: subscribed.set()
    watcher.on_message = lambda _c, _u, message: arrived.set() if message.payload == b"x" else None
    watcher.connect(mosquitto.broker.host, mosquitto.broker.port)
    watcher.subscribe(TOPIC, qos=1)
    watcher.loop_start()
    link = MqttLink(mosquitto.broker, client_id="gw-writes")
    task = asyncio.create_task(link.run())
    try:
        assert await link.wait_connected(10)
        assert await asyncio.to_thread(subscribed.wait, 10)
        acked = link.publish_soon(TOPIC, b"x", qos=qos)
        # Blocks the loop: only a write made inside publish_soon can reach the watcher.
        assert arrived.wait(10), "the message waited for the loop's next turn"
        await acked
    finally:
        await stop(task)
        watcher.loop_stop()
        watcher.disconnect()
