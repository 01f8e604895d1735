"""The link's registration of a socket for writing (bus.mqtt._register_write)."""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bus.mqtt import _register_write

pytestmark = pytest.mark.anyio


async def test_a_write_registered_for_a_socket_closed_meanwhile_is_dropped() -> None:
    """A message queued just before the broker went away: the socket is closed before the
    registration runs, which must then do nothing (aiomqtt's raised EBADF in a callback)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    written = asyncio.Event()
    link = SimpleNamespace(_loop=loop, _disconnected=loop.create_future())
    register = _register_write(cast(Any, link))
    closed, _peer = socket.socketpair()
    paho = SimpleNamespace(_sock=closed, loop_write=written.set)
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
