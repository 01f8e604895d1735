"""free_port: a port a server can bind, outside the range the kernel gives client sockets."""

from __future__ import annotations

import random
import socket

import pytest

from bus.broker import _ephemeral_start, free_port


def test_free_ports_lie_below_the_ephemeral_range_and_can_be_bound() -> None:
    ports = {free_port() for _ in range(50)}
    assert len(ports) > 40  # random, not one port handed to every caller
    for port in ports:
        assert 20000 <= port < _ephemeral_start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))


def test_a_port_in_use_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        used = taken.getsockname()[1]
        spare = free_port()
        draws = iter([used, spare])
        monkeypatch.setattr(random.SystemRandom, "randint", lambda *_: next(draws))
        assert free_port() == spare
