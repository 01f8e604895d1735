"""A throwaway PostgreSQL cluster for tests and benchmarks: Debian's own binaries, our own port.

``initdb`` into a temporary folder, ``pg_ctl start`` on a free port with the socket in that
folder and trust authentication on loopback. PostgreSQL refuses to run as root, so as root the
binaries run as the ``postgres`` system user (``runuser``), which owns the folder.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bus.broker import free_port

SEARCH = "/usr/lib/postgresql/*/bin"


class PostgresUnavailable(Exception):
    """No PostgreSQL server binaries on this machine."""


def find_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/N/bin`` with initdb and pg_ctl (or ANMIN_PG_BIN)."""
    explicit = os.environ.get("ANMIN_PG_BIN")
    candidates = [Path(explicit)] if explicit else []

    def version(path: Path) -> int:
        match = re.search(r"/(\d+)/bin$", str(path))
        return int(match.group(1)) if match else 0

    candidates += sorted(Path("/").glob(SEARCH.lstrip("/")), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise PostgresUnavailable(
        f"no PostgreSQL server binaries (initdb, pg_ctl) in {SEARCH} or on PATH; "
        "install the distribution's postgresql package"
    )


class PostgresCluster:
    """One cluster; ``url(db)`` gives a SQLAlchemy URL, ``create_database`` a fresh database."""

    def __init__(self, *, durable: bool = False) -> None:
        self.bin_dir = find_bin_dir()
        self.durable = durable
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="anmin-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._started = False

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self._as_user, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}{log}")

    def start(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = [
            f"-p {self.port}",
            f"-k {self.root}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=200",
        ]
        if not self.durable:
            # Tests prove logic, not crash safety of the disk: skip the fsyncs.
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            " ".join(options),
            "-w",
            "-t",
            "60",
            "start",
        )
        self._started = True

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        if self._started:
            with contextlib.suppress(Exception):
                self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
            self._started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
