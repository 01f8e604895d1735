"""free_port: a port a server can bind, outside the range the kernel gives client sockets."""

from __future__ import annotations

import collections
import random
import socket

import pytest

from bus import broker
from bus.broker import ephemeral_range, free_port


def test_free_ports_lie_outside_the_ephemeral_range_and_can_be_bound() -> None:
    ports = {free_port() for _ in range(50)}
    assert len(ports) > 40  # random, not one port handed to every caller
    start, end = ephemeral_range()
    for port in ports:
        assert not start <= port <= end
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))


def test_a_port_in_use_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        used = taken.getsockname()[1]
        spare = free_port()
        monkeypatch.setattr(broker, "_handed_out", collections.deque(maxlen=64))
        draws = iter([used, spare])
        monkeypatch.setattr(random.SystemRandom, "randint", lambda *_: next(draws))
        assert free_port() == spare


@pytest.mark.parametrize(
    ("kernel", "within"),
    [((32768, 60999), (20000, 32767)), ((1024, 60000), (60001, 65535)), ((1024, 65535), None)],
)
def test_the_ports_chosen_from_follow_the_kernels_range(
    monkeypatch: pytest.MonkeyPatch, kernel: tuple[int, int], within: tuple[int, int] | None
) -> None:
    asked: list[tuple[int, int]] = []

    def randint(_self: object, low: int, high: int) -> int:
        asked.append((low, high))
        return low if within is None else free_port_of(low, high)

    def free_port_of(low: int, high: int) -> int:
        for port in range(high, low, -1):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
        raise AssertionError("no free port in the span")

    monkeypatch.setattr("bus.broker.ephemeral_range", lambda: kernel)
    monkeypatch.setattr(random.SystemRandom, "randint", randint)
    # Ports handed out before in this process (by other tests) are not handed out again.
    monkeypatch.setattr(broker, "_handed_out", collections.deque(maxlen=64))
    port = free_port()
    if within is None:  # no room outside the range: the kernel's choice
        assert asked == [] and port > 0
    else:
        assert asked == [within] and within[0] <= port <= within[1]


def test_ports_asked_for_in_turn_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing binds between two calls (influxd's HTTP and RPC ports): both free, not one."""
    monkeypatch.setattr(broker, "_handed_out", collections.deque(maxlen=64))
    first, other = _bindable(2)
    draws = iter([first, first, other])
    monkeypatch.setattr(random.SystemRandom, "randint", lambda *_: next(draws))
    assert (free_port(), free_port()) == (first, other)


def _bindable(count: int) -> list[int]:
    found: list[int] = []
    for port in range(20000, 30000):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise AssertionError("no free ports to test with")
