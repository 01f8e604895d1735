"""Run an InfluxDB 1.x (Debian's influxd) for tests, benchmarks and the demo: temporary dirs,
free ports, stopped afterwards. Grouped with the Mosquitto runner as the project's servers."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from bus.broker import free_port
from bus.process import ServerProcess

INFLUXD_CONF = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{data}/meta"
[data]
  dir = "{data}/data"
  wal-dir = "{data}/wal"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
[monitor]
  store-enabled = false
[ifql]
  enabled = false
[continuous_queries]
  enabled = false
"""


def influxd_binary() -> str | None:
    return shutil.which("influxd") or (
        "/usr/bin/influxd" if Path("/usr/bin/influxd").exists() else None
    )


class Influxd(ServerProcess):
    """An influxd process of our own; ``stop()``/``start()`` keep its data for fault tests."""

    stop_timeout_s = 10.0

    def __init__(self, data_dir: Path | None = None) -> None:
        binary = influxd_binary()
        if binary is None:
            raise FileNotFoundError(
                "influxd is not installed; install it with 'apt-get install -y influxdb'"
            )
        self.binary = binary
        self.http_port = free_port()
        self.rpc_port = free_port()
        super().__init__(data_dir, "anmin-influxd-")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "influxd.conf"
        conf.write_text(
            INFLUXD_CONF.format(
                data=self.data_dir, http_port=self.http_port, rpc_port=self.rpc_port
            )
        )
        log = (self.data_dir / "influxd.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, "-config", str(conf)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"influxd exited with {self.process.returncode}")
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"influxd did not answer on {self.url} within {timeout}s")

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=0.5) as reply:  # noqa: S310
                return bool(reply.status == 204)
        except OSError:
            return False

    def query(self, influxql: str, database: str | None = None) -> dict[str, object]:
        """Run InfluxQL through the v1 /query API; return the decoded JSON."""
        import json

        params = {"q": influxql}
        if database:
            params["db"] = database
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=data, timeout=10) as reply:  # noqa: S310
            result: dict[str, object] = json.loads(reply.read())
            return result
