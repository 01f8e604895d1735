"""Run a Mosquitto for tests and the demo: temporary config, a free port, stopped afterwards.

The config sets what Mosquitto's defaults get wrong for alarms (see docs/architecture.md):
Nagle's algorithm off (it delays each small message by ~20-25 ms), and an explicit, large
queue per client instead of the default 1000 that silently drops QoS 1 messages.

With ``security`` it runs the way a deployed broker does (docs/security.md): a password file,
an ACL file, anonymous access off, and optionally a TLS listener with a server certificate.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bus.mqtt import Broker, Tls
from bus.process import ServerProcess

MOSQUITTO_CONF = """\
{listeners}
allow_anonymous {anonymous}
set_tcp_nodelay true
max_queued_messages 100000
max_inflight_messages 100
persistence {persistence}
persistence_location {data}/
autosave_interval 1
log_dest file {data}/mosquitto.log
log_type error
log_type warning
log_type notice
{extra}"""


@dataclass(frozen=True, slots=True)
class TlsListener:
    """A TLS listener: the broker's certificate and key, and the CA its clients trust.

    With ``require_certificate`` a client must also present a certificate signed by
    ``ca_file``; with ``use_identity_as_username`` its CN becomes its username (for the ACL).
    """

    cert_file: Path
    key_file: Path
    ca_file: Path
    require_certificate: bool = False
    use_identity_as_username: bool = False


@dataclass(frozen=True, slots=True)
class Security:
    """How a secured Mosquitto admits clients: the files ``anmin broker`` generates."""

    password_file: Path | None = None
    acl_file: Path | None = None
    allow_anonymous: bool = False
    tls: TlsListener | None = None
    # With TLS: also keep a plaintext listener (on ``Mosquitto.port``; TLS on ``tls_port``).
    # Off, the only listener is the TLS one and plaintext clients are refused.
    plaintext: bool = False


def _listeners(port: int, tls_port: int | None, security: Security | None) -> str:
    tls = security.tls if security is not None else None
    lines = []
    if tls is None or (security is not None and security.plaintext):
        lines.append(f"listener {port} 127.0.0.1")
    if tls is not None and tls_port is not None:
        lines += [
            f"listener {tls_port} 127.0.0.1",
            f"certfile {tls.cert_file}",
            f"keyfile {tls.key_file}",
            f"cafile {tls.ca_file}",
            "tls_version tlsv1.2",
            f"require_certificate {'true' if tls.require_certificate else 'false'}",
        ]
        if tls.use_identity_as_username:
            lines.append("use_identity_as_username true")
    return "\n".join(lines)


def _security_settings(security: Security | None) -> str:
    if security is None:
        return ""
    lines = []
    if security.password_file is not None:
        lines.append(f"password_file {security.password_file}")
    if security.acl_file is not None:
        lines.append(f"acl_file {security.acl_file}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # As root Mosquitto drops to the user "mosquitto", who cannot read a test's private
        # temporary files (password, ACL, keys); a test broker keeps the user it was given.
        lines.append("user root")
    return "".join(f"{line}\n" for line in lines)


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel gives client sockets (and port 0)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2]
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_handed_out: collections.deque[int] = collections.deque(maxlen=64)


def free_port() -> int:
    """A port nothing listens on, outside the kernel's ephemeral range: a port from that range
    (what binding port 0 gives) can meanwhile become the local end of some client's
    connection, and the server started on it then fails to bind (seen with benchmarks in
    parallel). Random, so that processes choosing at once rarely pick the same; below the
    range if there is room, else above it, else (a range of nearly every port) port 0."""
    start, end = ephemeral_range()
    spans = [(20000, start - 1), (1024, start - 1), (end + 1, 65535)]
    low, high = next(((lo, hi) for lo, hi in spans if hi - lo >= 1000), (0, 0))
    for _ in range(200):
        port = random.SystemRandom().randint(low, high) if high else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            chosen: int = sock.getsockname()[1]
            if chosen in _handed_out:
                continue  # two ports asked for at once (influxd's): both free, not the same
            _handed_out.append(chosen)
            return chosen
    raise OSError(f"no free port found between {low} and {high}")


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None,
    )


class Mosquitto(ServerProcess):
    """A Mosquitto process of our own; a context manager, with ``restart()`` for fault tests."""

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | None = None,
        *,
        persistence: bool = True,
        security: Security | None = None,
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise FileNotFoundError(
                "mosquitto is not installed; install it with 'apt-get install -y mosquitto'"
            )
        self.binary = binary
        self.port = port or free_port()
        super().__init__(data_dir, "anmin-mosquitto-")
        self.persistence = persistence
        self.security = security
        tls = security.tls if security is not None else None
        # TLS alone: ``port`` is the TLS listener. TLS beside plaintext: TLS on ``tls_port``.
        self.tls_port: int | None = None
        if tls is not None:
            self.tls_port = free_port() if security and security.plaintext else self.port

    @property
    def broker(self) -> Broker:
        """Where clients connect: the plaintext listener, or the TLS one if it is the only one."""
        if self.tls_port == self.port and self.security and self.security.tls:
            return self.tls_broker()
        return Broker("127.0.0.1", self.port)

    def tls_broker(
        self, *, username: str | None = None, password: str | None = None, host: str = "127.0.0.1"
    ) -> Broker:
        """The TLS listener, trusting the CA that signed the broker's certificate."""
        if self.tls_port is None or self.security is None or self.security.tls is None:
            raise ValueError("this Mosquitto has no TLS listener")
        tls = Tls(ca_file=str(self.security.tls.ca_file))
        return Broker(host, self.tls_port, username, password, tls)

    def _ports(self) -> list[int]:
        return sorted({self.port} if self.tls_port is None else {self.port, self.tls_port})

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(
            MOSQUITTO_CONF.format(
                listeners=_listeners(self.port, self.tls_port, self.security),
                anonymous="true"
                if self.security is None or self.security.allow_anonymous
                else "false",
                data=self.data_dir,
                persistence="true" if self.persistence else "false",
                extra=_security_settings(self.security),
            )
        )
        self.process = subprocess.Popen(
            [self.binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop it ourselves
        )
        deadline = time.monotonic() + timeout
        waiting = self._ports()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.data_dir / "mosquitto.log"
                text = log.read_text() if log.exists() else ""
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {text}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.2),
            ):
                waiting.pop(0)
                if not waiting:
                    return
                continue
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"mosquitto did not listen on port {self.port} within {timeout}s")
