"""The link's writing: the registration of a socket for writing (bus.mqtt._register_write)
and the write a publish makes at once (_write_now)."""

from __future__ import annotations

import asyncio
import socket
import threading
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bus import Broker, MqttLink, NotConnected
from bus.mqtt import _register_write, _write_now

pytestmark = pytest.mark.anyio


async def test_a_write_registered_for_a_socket_closed_meanwhile_is_dropped() -> None:
    """A message queued just before the broker went away: the socket is closed before the
    registration runs, which must then do nothing (aiomqtt's raised EBADF in a callback)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    written = asyncio.Event()
    closed, _peer = socket.socketpair()
    paho = SimpleNamespace(
        _sock=closed,
        loop_write=written.set,
        _registered_write=True,
        _in_callback_mutex=threading.Lock(),
    )
    link = SimpleNamespace(_loop=loop, _disconnected=loop.create_future(), _client=paho)
    register = _register_write(cast(Any, link))
    register(paho, None, closed)
    closed.close()
    for _ in range(3):
        await asyncio.sleep(0)
    assert errors == [] and not written.is_set()

    # An open socket is written to once it is writable.
    open_, peer = socket.socketpair()
    paho._sock = open_
    register(paho, None, open_)
    async with asyncio.timeout(5):
        await written.wait()
    loop.remove_writer(open_.fileno())
    for sock in (open_, peer, _peer):
        sock.close()
    assert errors == []


async def test_a_write_registered_after_a_direct_write_emptied_the_queue_is_dropped() -> None:
    """publish_soon wrote everything at once and paho counted the socket as unregistered:
    a writer added then would be called on every turn of the loop (paho would never remove
    it), so the registration still on its way must not add one."""
    loop = asyncio.get_running_loop()
    calls: list[int] = []
    sock, peer = socket.socketpair()
    paho = SimpleNamespace(
        _sock=sock,
        loop_write=lambda: calls.append(1),
        _registered_write=True,
        _in_callback_mutex=threading.Lock(),
    )
    link = SimpleNamespace(_loop=loop, _disconnected=loop.create_future(), _client=paho)
    register = _register_write(cast(Any, link))
    register(paho, None, sock)
    paho._registered_write = False  # what paho's loop_write does once its queue is empty
    for _ in range(5):
        await asyncio.sleep(0)
    assert loop.remove_writer(sock.fileno()) is False  # no writer was added
    assert calls == []
    sock.close()
    peer.close()


async def test_a_direct_write_from_inside_a_paho_callback_waits_for_the_writer() -> None:
    """paho holds its callback lock while it calls us back; writing then could re-enter it
    (a QoS 0 publish's on_publish takes that lock): the write is left to the writer."""
    loop = asyncio.get_running_loop()
    calls: list[int] = []
    mutex = threading.Lock()
    paho = SimpleNamespace(loop_write=lambda: calls.append(1), _in_callback_mutex=mutex)
    link = SimpleNamespace(_loop=loop, _disconnected=loop.create_future(), _client=paho)
    with mutex:
        _write_now(cast(Any, link))
    assert calls == []
    _write_now(cast(Any, link))
    assert calls == [1]


async def test_a_broken_pipe_on_a_direct_write_ends_the_connection() -> None:
    loop = asyncio.get_running_loop()

    def broken() -> None:
        raise BrokenPipeError("the broker is gone")

    paho = SimpleNamespace(loop_write=broken, _in_callback_mutex=threading.Lock())
    link = SimpleNamespace(_loop=loop, _disconnected=loop.create_future(), _client=paho)
    _write_now(cast(Any, link))
    assert isinstance(link._disconnected.exception(), BrokenPipeError)


@pytest.mark.parametrize("qos", [0, 1])
async def test_a_publish_on_a_connection_lost_as_it_writes_fails_at_once(qos: int) -> None:
    """The broker went away: the write finds the socket broken, and the publish says so
    instead of reporting a QoS 0 message sent (or waiting out a QoS 1 ack that cannot come)."""
    link = MqttLink(Broker(), client_id="gone")
    client = link._make_client()
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    broker.close()
    client._client._sock = ours
    link._client = client
    with pytest.raises(NotConnected, match="connection was lost"):
        link.publish_soon("anmin/v1/s1/gw-1/heartbeat", b"x", qos=qos, timeout=30)
    assert client._client._sock is None  # paho closed it: the link reconnects
