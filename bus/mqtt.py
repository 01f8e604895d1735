"""The one async MQTT adapter: aiomqtt behind a reconnect loop.

The edge, the hub and the simulator all talk MQTT through ``MqttLink``: they hand it the
subscriptions and a coroutine per message, and publish through it. When the broker goes away
the link reconnects with backoff and subscribes again; with ``persistent`` sessions (a fixed
client id and clean_session off) the broker keeps QoS 1 messages for us while we are away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt import _packet as paho_packet  # decode_publish: see _publish_handler
from paho.mqtt.enums import MQTTErrorCode as paho_errors

from bus.tasks import reraise_lost_cancel, stop

log = logging.getLogger(__name__)

# Queued messages handled in a row before the dispatch loop lets other tasks run: an alert
# raised by one reading waits for this many more before its uplink task gets its turn.
YIELD_EVERY = 8
# Messages read off the socket in one wake-up (paho reads one per wake-up: one epoll each).
READ_BURST = 64
# QoS 0 messages held unhandled before more are dropped (and counted). QoS 1 is never
# dropped here: manual acks hold it at the broker's in-flight window (max_inflight_messages).
INBOX_LIMIT = 5_000


class BusError(Exception):
    """The MQTT link cannot do what was asked (for example: publish while disconnected)."""


class NotConnected(BusError):
    pass


@dataclass(frozen=True, slots=True)
class Tls:
    """TLS to the broker: the CA that signed its certificate, and optionally our own.

    Without ``ca_file`` the system's trust store is used. The broker's certificate must name
    the host we connect to (a DNS name or an IP address in its subjectAltName).
    """

    ca_file: str | None = None
    cert_file: str | None = None  # a client certificate, where the broker asks for one
    key_file: str | None = None

    def context(self) -> ssl.SSLContext:
        """A client context that verifies the broker's certificate and host name."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


@dataclass(frozen=True, slots=True)
class Broker:
    """Where a broker is and how to log in to it."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in logs
    tls: Tls | None = None  # None: plain TCP (a gateway's loopback only)


@dataclass(slots=True)
class Incoming:
    """A received message, reduced to what the domain needs. Not frozen: one is made for
    every message, ~125 ns where a frozen dataclass took ~450 (measured)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    # time.monotonic() when read off the socket (once a read, for every message in it): how
    # long it waited before it was handled is part of an alarm's time (edge /metrics).
    at: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class LastWill:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


Handler = Callable[[Incoming], Awaitable[None]]
ConnectHook = Callable[[], Awaitable[None]]


# An incoming PUBLISH in the inbox: the message, and its packet id to acknowledge it by.
_Received = tuple[Incoming, int]


class _BufferedReads:
    """The link's reading of the socket, in place of paho's (docs/edge.md, "Speed").

    paho reads each packet with three or more ``recv`` calls (the type byte, each length
    byte, the body) and one wake-up of the event loop each. Here the socket is read 16 kB at
    a time, and QoS 0 and 1 PUBLISH packets wholly in that buffer (nearly all of them) are
    decoded straight into the inbox; any other packet, or one split across reads, goes
    through paho's own reading, served from the same buffer.

    While the inbox is full, reading pauses: what is unread waits in the socket and at the
    broker (which holds QoS 1 in its queue and sheds QoS 0 beyond its limits), instead of
    being read, decoded and dropped here at the cost of the handling that would empty the
    inbox. The dispatch loop reads on (``drain``) once it has emptied the inbox.
    """

    def __init__(
        self,
        client: Any,
        enqueue: Callable[[_Received], None],
        room: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client  # a paho Client
        self.clock = clock
        self.paused_since: float | None = None
        self.raw: Callable[[int], bytes] = client._sock_recv  # handles TLS's want-read
        self.enqueue = enqueue
        self.room = room  # how many more messages the inbox takes
        # MQTT 5 PUBLISH packets carry properties, which only paho decodes.
        self.fast = client._protocol in (paho.MQTTv31, paho.MQTTv311)
        self.data = b""
        self.at = 0
        # When ``data`` was read off the socket (``Incoming.at`` of what is decoded from it):
        # what a full inbox leaves in the buffer keeps the time it was read, not drained.
        self.read_at = 0.0

    def recv(self, size: int) -> bytes:
        if self.at >= len(self.data):
            self.data, self.at = self.raw(16384), 0  # raises BlockingIOError when empty
            self.read_at = time.monotonic()
            if not self.data:
                return b""  # the broker closed the connection
        chunk = self.data[self.at : self.at + size]
        self.at += len(chunk)
        return chunk

    def pending(self) -> bool:
        return self.at < len(self.data)

    def _publishes(self, most: int) -> int:
        """Decode up to ``most`` whole QoS 0/1 PUBLISH packets at the buffer's head; how many."""
        data, at, end, read_at = self.data, self.at, len(self.data), self.read_at
        enqueue, taken = self.enqueue, 0
        while taken < most and at + 4 < end:
            command = data[at]
            # PUBLISH (type 3) at QoS 0 or 1; dup and retain may be set.
            if command & 0xF0 != 0x30 or command & 0x06 > 0x02:
                break
            # The remaining length: 1-4 bytes, 7 bits each, least significant first.
            length, shift, p = 0, 0, at + 1
            while True:
                byte = data[p]
                length |= (byte & 0x7F) << shift
                p += 1
                if byte < 0x80 or shift == 21 or p >= end:
                    break
                shift += 7
            if byte >= 0x80 or length < 3 or p + length > end:
                break  # malformed, or not wholly here: paho's reading decides
            stop = p + length
            topic_end = p + 2 + ((data[p] << 8) | data[p + 1])
            if topic_end == p + 2 or topic_end > stop:
                break  # an empty or overlong topic: paho rejects the packet
            qos = (command >> 1) & 0x03
            mid = 0
            payload_at = topic_end
            if qos:
                if topic_end + 2 > stop:
                    break
                mid = (data[topic_end] << 8) | data[topic_end + 1]
                payload_at += 2
            # A topic that is not UTF-8 (a broker lets none through) is rejected downstream.
            topic = data[p + 2 : topic_end].decode("utf-8", "replace")
            incoming = Incoming(topic, data[payload_at:stop], qos, bool(command & 0x01), read_at)
            enqueue((incoming, mid))
            at = stop
            taken += 1
        self.at = at
        return taken

    def loop_read(self, max_packets: int = 1) -> Any:
        """paho's ``loop_read``: reads packets until the socket is empty, READ_BURST are read
        and the buffer is used up, or the inbox is full."""
        client, read = self.client, 0
        while True:
            if client._sock is None:
                return paho_errors.MQTT_ERR_NO_CONN
            room = self.room()
            if room <= 0:
                # aiomqtt's reader calls again at once while TLS holds decrypted bytes:
                # those are read (and QoS 0 dropped, counted) rather than spun on. So is
                # everything once a pause has lasted half the keepalive: the broker's
                # PINGRESP must be seen, or paho would drop the connection as dead while a
                # handler waits long on the disk (QoS 1 is held by the broker's in-flight
                # window, so the inbox grows by that much at most).
                now = self.clock()
                if self.paused_since is None:
                    self.paused_since = now
                stalled = now - self.paused_since >= client._keepalive / 2
                if not stalled and not (
                    hasattr(client._sock, "pending") and client._sock.pending()
                ):
                    break
            elif self.fast and client._in_packet["command"] == 0 and self.pending():
                self.paused_since = None
                taken = self._publishes(room)
                if taken:
                    read += taken
                    if read >= READ_BURST and not self.pending():
                        break
                    continue
            rc = client._packet_read()
            if rc > 0:
                return client._loop_rc_handle(rc)
            if rc == paho_errors.MQTT_ERR_AGAIN:
                if self.pending():  # paho pauses a long packet every 100 reads: go on
                    continue
                break
            read += 1
            if read >= READ_BURST and not self.pending():
                break
        if read:
            with client._msgtime_mutex:  # paho's keepalive watches for traffic
                client._last_bytes_received = paho.time_func()
        return paho_errors.MQTT_ERR_SUCCESS

    def drain(self) -> None:
        """Read on what the buffer still holds, once a pause has ended: the socket's
        readiness cannot tell of it."""
        if self.pending():
            self.loop_read()


def _publish_handler(
    client: Any, enqueue: Callable[[_Received], None], read_at: Callable[[], float]
) -> Callable[[], paho_errors]:
    """paho's ``_handle_publish`` for QoS 0 and 1, without what each message costs there and
    we never use: a ``threading.Condition`` (in MQTTMessageInfo) and a formatted debug log
    line. Measured: ~14 % of the edge agent's time at full load. QoS 2 (which we never
    subscribe at) is left to paho."""
    original = client._handle_publish

    def handle_publish() -> paho_errors:
        command = client._in_packet["command"]
        if command & 0x06 == 0x04:
            return cast(paho_errors, original())
        result = paho_packet.decode_publish(command, client._in_packet["packet"], client._protocol)
        # A topic that is not UTF-8 (a broker lets none through) is rejected downstream.
        topic = result.topic.decode("utf-8", "replace")
        incoming = Incoming(
            topic, bytes(result.payload), result.qos, bool(result.retain), read_at()
        )
        enqueue((incoming, result.mid))
        # QoS 1 is acknowledged by the dispatch loop once handled (manual acks).
        return paho_errors.MQTT_ERR_SUCCESS

    return handle_publish


def _register_write(client: aiomqtt.Client) -> Callable[[Any, Any, Any], None]:
    """aiomqtt's ``on_socket_register_write``, except that a registration which runs after
    the socket closed, or after a direct write (``_write_now``) emptied paho's queue, is
    dropped. aiomqtt schedules ``add_writer`` with the socket's number taken when a message is
    queued; a message queued just before the broker went away made asyncio log EBADF from a
    callback (seen in the broker restart test). A writer added with nothing left to write
    would be called on every turn of the loop: paho removes it only while it counts it as
    registered."""
    loop = client._loop

    def register(paho_client: Any, _userdata: Any, sock: Any) -> None:
        def add() -> None:
            if paho_client._sock is sock and sock.fileno() >= 0 and paho_client._registered_write:
                loop.add_writer(sock.fileno(), _write_now, client)

        # paho may call this from the thread that connects (see aiomqtt).
        loop.call_soon_threadsafe(add)

    return register


def _write_now(client: aiomqtt.Client) -> None:
    """What paho has queued, written to the socket now (on the loop's thread); what the socket
    does not take waits for the writer ``_register_write`` adds. A broken pipe ends the
    connection, as aiomqtt's writer does."""
    paho_client = client._client
    # As paho itself writes when no loop is registered: not from inside one of its callbacks.
    if not paho_client._in_callback_mutex.acquire(False):
        return
    paho_client._in_callback_mutex.release()
    try:
        paho_client.loop_write()
    except Exception as exc:  # a broken pipe: the connection is gone
        if not client._disconnected.done():
            client._disconnected.set_exception(exc)


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if payload is None:
        return b""
    return str(payload).encode("utf-8")


class MqttLink:
    """A self-healing MQTT connection. ``run()`` owns it; ``publish()`` may be called anywhere."""

    def __init__(
        self,
        broker: Broker,
        *,
        client_id: str,
        subscriptions: Sequence[tuple[str, int]] = (),
        handler: Handler | None = None,
        will: LastWill | Callable[[], LastWill] | None = None,
        persistent: bool = False,
        on_connect: ConnectHook | None = None,
        keepalive: int = 15,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 5.0,
        stale: Sequence[str] = (),
    ) -> None:
        """``stale``: filters unsubscribed at each connect before subscribing, which a
        persistent session may hold from an earlier run that subscribed otherwise."""
        self.broker = broker
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self.stale = list(stale)
        self.handler = handler
        self.will = will
        self.persistent = persistent
        self.on_connect = on_connect
        self.keepalive = keepalive
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.connected = asyncio.Event()
        self.connections = 0  # how many times we have connected: a reconnect counter for health
        self.handler_errors = 0
        self.inbox_dropped = 0  # QoS 0 messages dropped because the inbox was full
        self._inboxes: list[Any] = []  # the client's Inbox (made in _make_client)
        # What the dispatch loop waits on while the inbox is empty (see _dispatch).
        self._arrival: asyncio.Future[None] | None = None
        self._client: aiomqtt.Client | None = None
        self._reads: _BufferedReads | None = None

    def _make_client(self) -> aiomqtt.Client:
        will = None
        # A factory makes the will afresh at each connect, so its timestamp is not months old.
        last_will = self.will() if callable(self.will) else self.will
        if last_will is not None:
            will = aiomqtt.Will(last_will.topic, last_will.payload, last_will.qos, last_will.retain)
        inboxes = self._inboxes

        class Inbox(asyncio.Queue[_Received]):
            """The client's incoming queue, which it makes through its public ``queue_type``
            hook; kept here so that ``_dispatch`` can take what has already arrived. Messages
            wait in ``items``, a plain deque: every message passes through it, and the
            queue's own put and get (waking getters, counting unfinished tasks, none of
            which the link uses) cost ~0.3 µs more a message (measured)."""

            def __init__(self, maxsize: int = 0) -> None:
                super().__init__(maxsize)
                self.items: deque[_Received] = deque()
                inboxes.append(self)

        inboxes.clear()
        client = aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username=self.broker.username,
            password=self.broker.password,
            identifier=self.client_id,
            clean_session=not self.persistent,
            will=will,
            keepalive=self.keepalive,
            timeout=10,
            tls_context=None if self.broker.tls is None else self.broker.tls.context(),
            # paho leaves Nagle's algorithm on: each small message (an ack, an alert) would
            # wait ~20 ms for more to send with it. Measured: 8x on the hub's intake.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            queue_type=Inbox,  # type: ignore[arg-type]  # holds _Received: see _enqueue
        )
        # A QoS 1 message is acknowledged once the handler is done with it, not when it
        # arrives: a process killed in between gets it again from the broker (the session is
        # persistent), instead of the broker thinking it delivered. It also bounds what the
        # broker sends ahead of our handling (its max_inflight_messages).
        client._client.manual_ack_set(True)
        # The hot path, measured (docs/performance.md): paho's messages go straight into the
        # inbox, without aiomqtt's copy of each or paho's per-topic callback lookup (we
        # register no per-topic callbacks), and are read off the socket in bursts.
        items = self._inboxes[0].items
        reads = _BufferedReads(client._client, self._enqueue, lambda: INBOX_LIMIT - len(items))
        self._reads = reads
        client._client._sock_recv = reads.recv  # type: ignore[method-assign,assignment]
        client._client.loop_read = reads.loop_read  # type: ignore[method-assign]
        handle_publish = _publish_handler(client._client, self._enqueue, lambda: reads.read_at)
        client._client._handle_publish = handle_publish  # type: ignore[method-assign]
        client._client._handle_on_message = self._enqueue_paho  # type: ignore[method-assign]
        client._client.on_socket_register_write = _register_write(client)
        return client

    @property
    def waiting(self) -> int:
        """Messages received and not yet handled (at most INBOX_LIMIT: see _BufferedReads)."""
        return len(self._inboxes[0].items) if self._inboxes else 0

    def _enqueue_paho(self, message: paho.MQTTMessage) -> None:
        """A QoS 2 message, through paho's own handling."""
        topic = message._topic.decode("utf-8", "replace")
        payload = _payload_bytes(message.payload)
        incoming = Incoming(topic, payload, message.qos, message.retain, time.monotonic())
        self._enqueue((incoming, message.mid))

    def _enqueue(self, message: _Received) -> None:
        items = self._inboxes[0].items
        # A flood beyond what the handler keeps up with must not grow memory without bound:
        # QoS 0 ("at most once") is dropped and counted, as a broker would.
        if message[0].qos == 0 and len(items) >= INBOX_LIMIT:
            self.inbox_dropped += 1
            if self.inbox_dropped == 1 or self.inbox_dropped % 10_000 == 0:
                log.warning(
                    "mqtt %s: inbox full, %d QoS 0 messages dropped so far",
                    self.client_id,
                    self.inbox_dropped,
                )
            return
        items.append(message)
        self._wake()

    def _wake(self, _: object = None) -> None:
        arrival = self._arrival
        if arrival is not None and not arrival.done():
            arrival.set_result(None)

    async def _arrived(self, client: aiomqtt.Client) -> None:
        """Wait until a message is in the inbox; raise MqttError once the connection is lost.

        aiomqtt's iterator waits with a task of its own on the queue and ``asyncio.wait`` on
        it (3-4 turns of the loop from the socket to the handler: ~0.2 ms of an idle alarm's
        path, measured); here one future is woken by ``_enqueue`` or by the disconnection."""
        disconnected = client._disconnected
        while True:
            if self._inboxes and self._inboxes[0].items:
                return
            if disconnected.done():
                raise aiomqtt.MqttError(
                    "Disconnected during message iteration"
                ) from disconnected.exception()
            self._arrival = asyncio.get_running_loop().create_future()
            try:
                await self._arrival
            finally:
                self._arrival = None

    async def _hook(self) -> None:
        assert self.on_connect is not None
        try:
            await self.on_connect()
        except Exception:
            # A failed hook (a publish that timed out) must not end the link.
            self.handler_errors += 1
            log.exception("mqtt %s: on_connect hook failed", self.client_id)

    async def _dispatch(self, client: aiomqtt.Client) -> None:
        """Hand every incoming message to the handler until the connection ends.

        aiomqtt's iterator creates a task and waits on it for every message (~25 µs each,
        more than the edge's whole decision): what is already queued is taken directly, and
        when nothing is, ``_arrived`` waits. The loop still yields every few messages, so
        timers and publishes (an alert's uplink) are not held by a backlog.
        """
        items = self._inboxes[0].items
        reads = self._reads
        taken = 0
        client._disconnected.add_done_callback(self._wake)
        while True:
            if items:
                taken += 1
                if taken % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # only this loop takes from the inbox
                message, mid = items.popleft()
            else:
                if reads is not None and reads.pending():
                    reads.drain()  # what a full inbox left in the buffer
                    if items:
                        continue
                await self._arrived(client)
                continue
            if self.handler is not None:
                try:
                    await self.handler(message)
                except Exception:
                    # One bad message must never stop the loop that carries alarms (nor come
                    # back for ever: it is acknowledged all the same).
                    self.handler_errors += 1
                    log.exception("mqtt %s: handler failed on %s", self.client_id, message.topic)
            if message.qos:
                client._client.ack(mid, message.qos)

    async def run(self) -> None:
        """Connect, subscribe and dispatch messages until cancelled; reconnect on failure."""
        delay = self.reconnect_min_s
        while True:
            client = self._make_client()
            try:
                async with client:
                    reraise_lost_cancel()
                    self._client = client
                    if self.stale:
                        await client.unsubscribe(self.stale)
                    if self.subscriptions:
                        # One SUBSCRIBE for all: retained messages arrive as soon as it is
                        # acknowledged, and wait (unacknowledged) until dispatch starts.
                        await client.subscribe(list(self.subscriptions))
                        reraise_lost_cancel()
                    self.connections += 1
                    self.connected.set()
                    delay = self.reconnect_min_s
                    log.info("mqtt %s connected to %s:%s", self.client_id, *self._where())
                    # The hook runs beside the dispatch, not before it: messages are
                    # acknowledged only once handled, and a broker waits for that (amqtt
                    # gives up after 5 s) while the hook publishes and queries.
                    hook = None if self.on_connect is None else asyncio.create_task(self._hook())
                    try:
                        await self._dispatch(client)
                    finally:
                        if hook is not None:
                            await stop(hook)
            except aiomqtt.MqttError as exc:
                log.warning(
                    "mqtt %s lost %s:%s (%s); retrying in %.1fs",
                    self.client_id,
                    *self._where(),
                    exc,
                    delay,
                )
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_s)

    async def subscribe(self, subscriptions: Sequence[tuple[str, int]]) -> None:
        """More subscriptions: now, if connected, and at every connect from now on."""
        new = [s for s in subscriptions if s not in self.subscriptions]
        self.subscriptions.extend(new)
        client = self._client
        if new and client is not None:
            # A connection lost meanwhile subscribes them all again when it is back.
            with contextlib.suppress(aiomqtt.MqttError):
                await client.subscribe(new)

    async def unsubscribe(self, filters: Sequence[str]) -> None:
        """Fewer subscriptions: now, if connected, and not at the connects to come."""
        gone = set(filters)
        self.subscriptions = [s for s in self.subscriptions if s[0] not in gone]
        client = self._client
        if gone and client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.unsubscribe(list(gone))

    def subscribed(self, topic: str) -> bool:
        """Whether ``topic`` is one of this link's filters, as given (no wildcard matching)."""
        return any(s[0] == topic for s in self.subscriptions)

    def _where(self) -> tuple[str, int]:
        return self.broker.host, self.broker.port

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float = 10
    ) -> None:
        """Publish; at QoS 1 this returns once the broker has acknowledged the message."""
        await self.publish_soon(topic, payload, qos=qos, retain=retain, timeout=timeout)
        reraise_lost_cancel()

    def publish_soon(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float = 10,
    ) -> Awaitable[None]:
        """Write the message to the socket before returning, and return what waits for the
        broker's ack (raising NotConnected if none comes).

        aiomqtt's publish would leave the writing to the loop's next turns (a writer added
        from a callback, then the socket's readiness: two turns, each behind up to
        YIELD_EVERY readings), and make its caller wait for the ack; an alarm's handler must
        not wait on the broker (an uplink over a slow network). This is aiomqtt's publish
        split in two, on its own pending table: aiomqtt is pinned beside paho for it. Bulk
        QoS 0 goes through ``publish_nowait``, written a batch per turn instead."""
        client = self._client
        if client is None:
            raise NotConnected(f"not connected to {self.broker.host}:{self.broker.port}")
        info = client._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise NotConnected(f"publish to {topic} failed: paho rc {info.rc}")
        _write_now(client)
        if client._client._sock is None:  # the write found the connection gone
            raise NotConnected(f"publish to {topic} failed: the connection was lost")
        confirmation = asyncio.Event()
        # QoS 0 is done once written (paho's on_publish; at once if the socket took it all),
        # QoS 1 once the broker's PUBACK is in.
        if info.is_published():
            confirmation.set()
        else:
            client._pending_publishes[info.mid] = confirmation
        return self._acked(client, info.mid, confirmation, topic, timeout)

    @staticmethod
    async def _acked(
        client: aiomqtt.Client, mid: int, confirmation: asyncio.Event, topic: str, timeout: float
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                await confirmation.wait()
        except TimeoutError as exc:
            raise NotConnected(f"publish to {topic}: no ack in {timeout:g} s") from exc
        finally:
            client._pending_publishes.pop(mid, None)

    def publish_nowait(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 0 without waiting for the client library's confirmation.

        aiomqtt's ``publish`` waits for paho's callback even at QoS 0, one event-loop pass per
        message; for bulk telemetry (the simulator's load, dead letters) that cost bounds a
        process at ~9k msgs/s, against ~55k for paho alone. QoS 0 promises no delivery anyway.
        """
        client = self._client
        if client is None:
            raise NotConnected(f"not connected to {self.broker.host}:{self.broker.port}")
        info = client._client.publish(topic, payload, qos=0, retain=retain)
        if info.rc != 0:
            raise NotConnected(f"publish to {topic} failed: paho rc {info.rc}")

    async def wait_connected(self, timeout: float | None = None) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # not wait_for: see bus.tasks
                await self.connected.wait()
        return self.connected.is_set()
