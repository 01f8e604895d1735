"""The link's own reading of PUBLISH packets, against a byte stream cut at random places.

A real paho client is fed from a fake socket, so the packets that the fast decoder leaves
(split across reads, QoS 2, other types) go through paho's own reading as they would live.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bus.mqtt import Incoming, _BufferedReads, _publish_handler, _Received


def publish(topic: str, payload: bytes, qos: int, retain: bool, mid: int) -> bytes:
    body = struct.pack("!H", len(topic.encode())) + topic.encode()
    if qos:
        body += struct.pack("!H", mid)
    body += payload
    length, left = bytearray(), len(body)
    while True:  # MQTT's remaining length: 7 bits a byte, least significant first
        byte, left = left & 0x7F, left >> 7
        length.append(byte | (0x80 if left else 0))
        if not left:
            break
    return bytes([0x30 | qos << 1 | int(retain)]) + bytes(length) + body


class Socket:
    """Hands out a byte stream in the chunks given; empty means 'would block'."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def recv(self, size: int) -> bytes:
        if not self.chunks:
            raise BlockingIOError
        chunk = self.chunks.pop(0)
        if len(chunk) > size:
            self.chunks.insert(0, chunk[size:])
            chunk = chunk[:size]
        return chunk

    def close(self) -> None:
        self.chunks = []


def reader(
    chunks: list[bytes], limit: int = 10**9, clock: Callable[[], float] = time.monotonic
) -> tuple[_BufferedReads, list[_Received]]:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client._sock = Socket(chunks)  # type: ignore[assignment]
    got: list[_Received] = []
    reads = _BufferedReads(client, got.append, lambda: limit - len(got), clock)
    client._sock_recv = reads.recv  # type: ignore[method-assign,assignment]
    handler = _publish_handler(client, got.append, lambda: reads.read_at)
    client._handle_publish = handler  # type: ignore[method-assign]
    return reads, got


def messages(rng: random.Random, n: int) -> tuple[bytes, list[_Received]]:
    stream, expected = b"", []
    for i in range(n):
        topic = f"anmin/v1/s1/gw-1/b1/reading/dev-{rng.randrange(1000)}/气体"
        # Lengths that take 1, 2 and 3 bytes to encode.
        payload = rng.randbytes(rng.choice([0, 5, 120, 200, 20_000]))
        qos, retain, mid = rng.choice([0, 1]), rng.random() < 0.2, i % 65535 + 1
        stream += publish(topic, payload, qos, retain, mid)
        expected.append((Incoming(topic, payload, qos, retain), mid if qos else 0))
    return stream, expected


def drain(reads: _BufferedReads) -> None:
    for _ in range(100_000):
        reads.loop_read()
        if not reads.pending() and not reads.client._sock.chunks:
            return
    raise AssertionError("the reader never finished the stream")


def test_every_packet_arrives_whole_whatever_the_reads_cut() -> None:
    rng = random.Random(5)
    for _ in range(20):
        stream, expected = messages(rng, 300)
        cuts = sorted(rng.sample(range(1, len(stream)), 40))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        reads, got = reader(chunks)
        before = time.monotonic()
        drain(reads)
        assert got == expected
        # Each stamped with when it was read (an alarm's time starts there: edge /metrics).
        assert all(before <= message.at <= time.monotonic() for message, _ in got)


def test_qos_2_and_malformed_packets_are_left_to_paho() -> None:
    # An empty topic is malformed in MQTT 3.1.1: paho says so (a protocol error).
    reads, got = reader([publish("", b"x", 0, False, 0)])
    assert reads.loop_read() == paho.MQTT_ERR_PROTOCOL
    assert got == []
    # QoS 2 is paho's: it holds the message until the PUBREL, so none arrives here yet.
    reads, got = reader([publish("a/b", b"x", 2, False, 7) + publish("a/c", b"y", 0, False, 0)])
    reads.client._sock_send = lambda data: len(data)
    drain(reads)
    assert got == [(Incoming("a/c", b"y", 0, False), 0)]


def test_reading_pauses_while_the_inbox_is_full_and_loses_nothing() -> None:
    stream, expected = messages(random.Random(6), 50)
    reads, got = reader([stream], limit=10)
    reads.loop_read()
    assert got == expected[:10]
    for handled in range(10, 50, 10):
        del got[:]
        reads.loop_read()
        assert got == expected[handled : handled + 10]
    assert not reads.pending()


def test_a_pause_longer_than_half_the_keepalive_reads_on_so_the_broker_is_heard() -> None:
    """A handler stuck on a slow disk must not make paho drop a live connection: once the
    pause has lasted half the keepalive, what waits is read (the PINGRESP among it)."""
    now = [0.0]
    stream, expected = messages(random.Random(7), 20)
    pingresp = b"\xd0\x00"
    reads, got = reader([stream + pingresp], limit=5, clock=lambda: now[0])
    reads.client._keepalive = 10
    reads.client._ping_t = 1.0  # a PINGREQ is out
    reads.loop_read()
    assert got == expected[:5]
    now[0] = 4.9
    reads.loop_read()  # paused: nothing more read
    assert got == expected[:5] and reads.client._ping_t == 1.0
    now[0] = 5.0
    drain(reads)
    assert got == expected  # the link's enqueue would shed QoS 0 here; this one keeps all
    assert reads.client._ping_t == 0  # the PINGRESP was read


def test_what_a_full_inbox_leaves_in_the_buffer_keeps_the_time_it_was_read() -> None:
    """An alarm's time (edge /metrics) starts when its reading was read off the socket: the
    readings a full inbox left in the buffer were read then, not when the reading resumes."""
    stream = b"".join(publish(f"a/{i}", b"x", 0, False, 0) for i in range(20))
    reads, got = reader([stream], limit=5)
    before = time.monotonic()
    reads.loop_read()  # the whole stream read in one go; 5 taken, the inbox full
    read = time.monotonic()
    assert len(got) == 5
    handled: list[_Received] = []
    while reads.pending():  # the handler empties the inbox; reading resumes from the buffer
        handled += got
        got.clear()
        reads.drain()
    handled += got
    assert len(handled) == 20
    assert all(before <= message.at <= read for message, _ in handled)
