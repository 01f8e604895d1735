"""Fault injectors the test controls: a TCP proxy that can cut a link, and an MQTT client that
publishes duplicated, delayed and reordered copies of what it sees."""

from __future__ import annotations

import asyncio
import contextlib
import random

from bus import Broker, Incoming, MqttLink
from bus.broker import free_port
from bus.tasks import stop


class CuttableProxy:
    """A TCP proxy in front of a broker. ``cut()`` drops every connection through it and
    refuses new ones (as a dead uplink does) until ``restore()``."""

    def __init__(self, target: Broker) -> None:
        self.target = target
        self.port = free_port()
        self.cut_now = False
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def broker(self) -> Broker:
        return Broker("127.0.0.1", self.port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_now:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target.host, self.target.port)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    def cut(self) -> None:
        self.cut_now = True
        for writer in list(self._writers):
            # Abort, not close: the peer sees the link die, not an orderly goodbye.
            writer.transport.abort()

    def restore(self) -> None:
        self.cut_now = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class Replayer:
    """Subscribes to ``filters`` and, for every message it has not seen before, publishes
    ``copies`` more copies of it: one at once and the rest after a random delay of up to
    ``max_delay_s``, so copies arrive duplicated, late and out of order."""

    def __init__(
        self,
        broker: Broker,
        filters: list[str],
        *,
        copies: int = 2,
        max_delay_s: float = 2.0,
        seed: int = 5,
    ) -> None:
        self.copies = copies
        self.max_delay_s = max_delay_s
        self.random = random.Random(seed)
        self.seen: set[tuple[str, bytes]] = set()
        self.sent = 0
        self.link = MqttLink(
            broker,
            client_id="faults-replayer",
            subscriptions=[(f, 1) for f in filters],
            handler=self._on_message,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._run: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._run = asyncio.create_task(self.link.run())
        assert await self.link.wait_connected(10)

    async def _on_message(self, message: Incoming) -> None:
        key = (message.topic, message.payload)
        if key in self.seen or not message.payload:
            return  # our own copies come back to us: copy each original only
        self.seen.add(key)
        await self._send(message.topic, message.payload)
        for _ in range(self.copies - 1):
            delay = self.random.uniform(0.1, self.max_delay_s)
            task = asyncio.create_task(self._later(delay, message.topic, message.payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _later(self, delay: float, topic: str, payload: bytes) -> None:
        await asyncio.sleep(delay)  # the injected delay itself, not a wait for a result
        await self._send(topic, payload)

    async def _send(self, topic: str, payload: bytes) -> None:
        with contextlib.suppress(Exception):
            await self.link.publish(topic, payload, qos=1)
            self.sent += 1

    async def close(self) -> None:
        for task in list(self._tasks):
            await stop(task)
        if self._run is not None:
            await stop(self._run)
