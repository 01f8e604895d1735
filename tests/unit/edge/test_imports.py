"""What a gateway's agent imports: influxdb_client (~40 MB of RSS: it imports its whole
generated API client) only when telemetry is configured; numpy only for rules that score with
a detector, and then as it starts (not on its loop at the first reading scored)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROBE = """
import sys
from bus import Broker
from edge import EdgeAgent, parse
from tests.integration.edge_support import edge_config_yaml
text = edge_config_yaml(Broker("127.0.0.1", 9), __import__("pathlib").Path(sys.argv[1]))
if sys.argv[2] == "telemetry":
    text += "telemetry: {url: 'http://127.0.0.1:9', database: anmin}\\n"
if sys.argv[2] == "pump":
    text = text.replace("devices:\\n", "devices:\\n  - {id: pump-1, kind: pump}\\n")
    text = text.replace("rules:\\n", "rules:\\n  include: [pump]\\n")
agent = EdgeAgent(parse(text))
if sys.argv[2] == "reload":  # a SIGHUP's rules that score with a detector
    pump = text.replace("rules:\\n", "rules:\\n  include: [pump]\\n")
    import asyncio
    asyncio.run(agent.reload_rules(parse(pump).rules))
print("influxdb_client" in sys.modules, agent.telemetry is not None, "numpy" in sys.modules)
agent.close()
"""


def _imports(tmp_path: Path, telemetry: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / telemetry), telemetry],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_influxdb_client_is_imported_only_for_telemetry(tmp_path: Path) -> None:
    assert _imports(tmp_path, "none") == "False False False"
    assert _imports(tmp_path, "telemetry").startswith("True True ")  # it imports numpy


def test_numpy_is_imported_as_the_agent_starts_only_for_rules_with_detectors(
    tmp_path: Path,
) -> None:
    assert _imports(tmp_path, "pump") == "False False True"
    assert _imports(tmp_path, "reload") == "False False True"
