"""One gateway's agent as several processes ("parts"), for more readings a second than one
Python process decides on (docs/edge.md, "Parts").

Each part is a whole agent for its share of the building's flats: it subscribes to its own
devices' topics, runs their rules, keeps its own outbox and rule state, and sends its own
alerts under the gateway's identity. A flat never spans parts, so a rule over a flat (or a
resident) sees all of it. Part 0 also speaks for the gateway: the heartbeat and its last will,
/metrics, and the figures of every part, which the others leave on a shared board.

The parts are forked from one process after its imports, so they share those pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import mmap
import os
import signal
import struct
import sys
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from edge.config import DeviceConfig, EdgeConfig, part_of

log = logging.getLogger(__name__)

PART_DIR = "part-{}"  # part p's data under data_dir (p >= 1; part 0 keeps data_dir itself)
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent ends
SLOT_BYTES = 64 * 1024  # one part's figures on the board
_HEADER = struct.Struct("<QII")  # sequence (odd while written), length, crc32 of the blob


def part_dir(data_dir: Path, index: int) -> Path:
    return data_dir if index == 0 else data_dir / PART_DIR.format(index)


@dataclass(frozen=True, slots=True)
class Part:
    """This process's place among the parts. An ``index`` at or past ``count`` is a part
    left from a run with more parts: it owns no device, sends what its outbox holds, and
    ends (``retiring``)."""

    index: int
    count: int
    board: Board | None = None
    # The devices discovery took in, every part's, read before the parts were forked.
    discovered: tuple[DeviceConfig, ...] = ()

    @property
    def retiring(self) -> bool:
        return self.index >= self.count

    @property
    def speaks(self) -> bool:
        """Whether this part speaks for the gateway (heartbeat, last will, /metrics)."""
        return self.index == 0

    def owns(self, device: DeviceConfig) -> bool:
        return part_of(device, self.count) == self.index


BOARD_EVERY_S = 0.5  # how often a part leaves its figures on the board
BOARD_FRESH_S = 10.0  # figures older than this are a part's that is stuck or gone
# A part's figures summed over the parts but these: the gateway's own, and the worst.
PEER_OWN = {"uptime_s"}
PEER_MAX = {"uplink_lag_s"}


class PartFigures(msgspec.Struct, frozen=True):
    """One part's figures on the board."""

    at: float  # time.monotonic() when written (one clock for every process of the machine)
    connections: int  # its local MQTT link's: at least 1 once it has subscribed
    stats: dict[str, float]
    latency: list[int]  # Latency.counts
    latency_sum: float
    alarm: list[int] = []  # EdgeAgent.alarm_latency's counts
    alarm_sum: float = 0.0
    alarm_disk: list[int] = []  # EdgeAgent.alarm_disk's counts
    alarm_disk_sum: float = 0.0


_FIGURES = msgspec.msgpack.Decoder(PartFigures)
_FIGURES_ENCODER = msgspec.msgpack.Encoder()


def summed_stats(
    own: dict[str, float], others: list[tuple[int, PartFigures]], count: int, now: float
) -> dict[str, float]:
    """The gateway's figures: this part's ``own`` with every other part's last ones. A part's
    last figures count even when stale (counters must never go down); that they are stale
    shows in ``parts_reporting``."""
    out = dict(own)
    reporting = 1
    for index, figures in others:
        if index < count and 0 <= now - figures.at <= BOARD_FRESH_S:
            reporting += 1
        for name, value in figures.stats.items():
            if name in PEER_OWN:
                continue
            if name in PEER_MAX:
                out[name] = max(out.get(name, 0.0), value)
            else:
                out[name] = out.get(name, 0.0) + value
    out["parts"] = float(count)
    # Parts whose figures are fresh, this one included: fewer than "parts" is a part stuck
    # or gone (its service restarts the whole agent if it ends).
    out["parts_reporting"] = float(reporting)
    return out


class Board:
    """The parts' figures, where part 0 reads them: an anonymous shared mapping made before
    the parts are forked, one slot a part. A slot is written whole under a sequence number
    that is odd while it is written (a seqlock) and a checksum, so a reader never takes half
    of one.

    Chosen over a pipe: a writer never blocks on a reader that is busy, and part 0 reads the
    latest figures only when it needs them (a heartbeat, a scrape)."""

    def __init__(self, parts: int) -> None:
        self.parts = parts
        self._map = mmap.mmap(-1, SLOT_BYTES * parts)

    def write(self, index: int, blob: bytes) -> bool:
        """False if ``blob`` does not fit its slot (it is then left as it was)."""
        if len(blob) > SLOT_BYTES - _HEADER.size:
            return False
        at = index * SLOT_BYTES
        (sequence, _, _) = _HEADER.unpack_from(self._map, at)
        _HEADER.pack_into(self._map, at, sequence + 1, 0, 0)  # odd: being written
        self._map[at + _HEADER.size : at + _HEADER.size + len(blob)] = blob
        _HEADER.pack_into(self._map, at, sequence + 2, len(blob), zlib.crc32(blob))
        return True

    def leave(self, index: int, figures: PartFigures) -> bool:
        """Leave a part's figures in its slot; False if they do not fit."""
        return self.write(index, _FIGURES_ENCODER.encode(figures))

    def figures(self, index: int) -> PartFigures | None:
        """A part's latest figures; None before its first, or unreadable."""
        blob = self.read(index)
        if blob is None:
            return None
        try:
            return _FIGURES.decode(blob)
        except msgspec.DecodeError:
            return None

    def others(self, index: int) -> list[tuple[int, PartFigures]]:
        """Every other part's latest figures, by index (retiring parts' among them)."""
        out = []
        for other in range(self.parts):
            if other != index and (figures := self.figures(other)) is not None:
                out.append((other, figures))
        return out

    def read(self, index: int) -> bytes | None:
        """The slot's latest whole blob; None before its first, or if every try met a write."""
        at = index * SLOT_BYTES
        for _ in range(100):
            (before, length, crc) = _HEADER.unpack_from(self._map, at)
            if before == 0:
                return None
            if before % 2:
                time.sleep(0)
                continue
            blob = self._map[at + _HEADER.size : at + _HEADER.size + length]
            (after, _, _) = _HEADER.unpack_from(self._map, at)
            # The checksum too: a CPU that reorders stores (ARM: a Raspberry Pi) may show
            # the sequence before the bytes it guards.
            if after == before and zlib.crc32(blob) == crc:
                return blob
        return None


def retiring_parts(data_dir: Path, count: int) -> list[int]:
    """Parts left on disk by a run with more parts than ``count``."""
    out = []
    for path in data_dir.glob(PART_DIR.format("*")):
        index = path.name.removeprefix(PART_DIR.format(""))
        if index.isdigit() and int(index) >= count and path.is_dir():
            out.append(int(index))
    return sorted(out)


# A part's life in a process of its own: given its Part, it runs the agent and returns the
# process's exit status.
RunPart = Callable[[Part], int]


class Parts:
    """The parts forked from this process, which runs part 0 itself (a process of its own
    for the waiting alone would hold ~20 MB of pages the others copied away from it)."""

    def __init__(
        self,
        config: EdgeConfig,
        run_part: RunPart,
        retiring: Iterable[int] = (),
        discovered: Iterable[DeviceConfig] = (),
    ) -> None:
        indexes = [*range(1, config.parts), *retiring]
        self.count = config.parts
        self.board = Board(max([0, *indexes]) + 1)
        found = tuple(discovered)
        self.part = Part(0, config.parts, self.board, found)
        self.children: dict[int, int] = {}  # pid -> part index
        self.failed = 0  # the first exit status of a part that ended on its own (not 0)
        self.stopped = False  # the parts were told to stop
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        for index in indexes:
            pid = os.fork()
            if pid == 0:
                _die_with(parent)
                status = 1
                try:
                    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until its loop takes it
                    status = run_part(Part(index, config.parts, self.board, found))
                except BaseException:
                    log.exception("edge: part %d failed", index)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(status)
            self.children[pid] = index

    def signal(self, signum: int) -> None:
        """Pass a signal on to every part still running."""
        if signum in (signal.SIGTERM, signal.SIGINT):
            # Once: a second one would find a part past its loop, saving its state, where
            # the signal's default action ends it.
            if self.stopped:
                return
            self.stopped = True
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def watch(self, loop: asyncio.AbstractEventLoop, ended: Callable[[], None]) -> None:
        """Call ``ended`` on ``loop`` when a part ends on its own (not a retiring part that
        drained): the agent stops whole, for its service manager to start it again."""
        for pid in list(self.children):
            fd = os.pidfd_open(pid)
            loop.add_reader(fd, self._reap, loop, fd, pid, ended)

    def _reap(
        self, loop: asyncio.AbstractEventLoop, fd: int, pid: int, ended: Callable[[], None]
    ) -> None:
        loop.remove_reader(fd)
        os.close(fd)
        if pid not in self.children:
            return
        index = self.children.pop(pid)
        code = _exit_code(pid)
        if index >= self.count and code == 0:
            return  # a retiring part, drained
        log.error("edge: part %d ended (exit status %d); the agent stops", index, code)
        self.failed = self.failed or (code if code > 0 else 1)
        ended()

    def wait(self, timeout_s: float = 20.0) -> int:
        """After part 0 stopped: stop the others, wait for them, and return the agent's exit
        status (that of the first part that failed, or 0)."""
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.children:
            for pid in list(self.children):
                done, waited = os.waitpid(pid, os.WNOHANG)
                if done:
                    index = self.children.pop(pid)
                    code = os.waitstatus_to_exitcode(waited)
                    if code != 0 and not self.failed:
                        log.error("edge: part %d stopped with exit status %d", index, code)
                        self.failed = code if code > 0 else 1
            if self.children and time.monotonic() > deadline:
                self.signal(signal.SIGKILL)
                deadline = time.monotonic() + timeout_s
            time.sleep(0.05)
        return self.failed


def _exit_code(pid: int) -> int:
    with contextlib.suppress(ChildProcessError):
        _, waited = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(waited)
    return 1


def _die_with(parent: int) -> None:
    """A part ends when part 0's process does, even if SIGKILLed: a part left running
    would hold the gateway's client ids against the agent started again."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)
