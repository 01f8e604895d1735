"""The gateway's config: strict errors with lines, environment overrides, a rule file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import load
from rules import ConfigError

BASE = "site: s1\ngateway: gw-1\nbuilding: b1\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return path


def test_a_misspelt_key_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "broker:\n  hots: x\n")
    with pytest.raises(ConfigError) as caught:
        load(path, env={})
    assert caught.value.line == 5 and "hots" in str(caught.value)


def test_environment_variables_override_any_key(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "broker: {host: a, port: 1883}\n")
    config = load(path, env={"ANMIN_EDGE_BROKER__PORT": "1884", "ANMIN_EDGE_HEARTBEAT_S": "3"})
    assert config.broker.port == 1884 and config.broker.host == "a"
    assert config.heartbeat_s == 3
    with pytest.raises(ConfigError) as caught:
        load(path, env={"ANMIN_EDGE_BROKER__PORT": "not-a-port"})
    assert "ANMIN_EDGE_BROKER__PORT" in str(caught.value)


def test_a_rule_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("version: 1\ninclude: [gas, smoke]\n")
    config = load(write(tmp_path, BASE + "rules_file: rules.yaml\n"), env={})
    assert {r.id for r in config.rules.resolved()} >= {"gas-lel", "smoke", "fire-confirmed"}


def test_the_shipped_example_loads() -> None:
    root = Path(__file__).resolve().parents[3]
    config = load(root / "deploy" / "edge.example.yaml", env={})
    assert len(config.rules.resolved()) > 10


@pytest.mark.parametrize(
    ("outbox", "words"),
    [
        ("{max_age_days: .inf}", "max_age_days"),
        ("{max_age_days: 1.0e+30}", "max_age_days"),
    ],
)
def test_outbox_bounds_past_what_the_prune_can_count_are_errors(
    tmp_path: Path, outbox: str, words: str
) -> None:
    """Accepted, these stopped the agent at its first housekeeping round (int(inf), or a
    cut-off too large for SQLite's integers in the prune): now check-config names them."""
    path = write(tmp_path, BASE + f"outbox: {outbox}\n")
    with pytest.raises(ConfigError) as caught:
        load(path, env={})
    assert caught.value.line == 4 and words in str(caught.value)


@pytest.mark.parametrize(
    ("extra", "line", "words"),
    [
        # Each turned a loop busy: a heartbeat, a resend of every unacknowledged alert, a
        # telemetry flush to the card on every turn; a device "silent" after every reading.
        ("heartbeat_s: 1.0e-300\n", 4, "heartbeat_s"),
        ("uplink_retry_s: 0.0004\n", 4, "uplink_retry_s"),
        ("telemetry: {flush_s: 1.0e-300}\n", 4, "flush_s"),
        ("devices:\n  - {id: g1, kind: gas, interval_s: 1.0e-300}\n", 5, "interval_s"),
    ],
)
def test_intervals_that_would_spin_a_loop_are_errors(
    tmp_path: Path, extra: str, line: int, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, BASE + extra), env={})
    assert caught.value.line == line and words in str(caught.value)
