"""``anmin broker``: the files it writes, what it keeps between runs, and its errors."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from typer.testing import CliRunner

from anmin.cli import app
from anmin.security.mosquitto import verify_password
from edge import EdgeAgent, parse


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["broker", *args])
    return result.exit_code, result.output


def test_credentials_writes_the_password_acl_and_private_credentials(tmp_path: Path) -> None:
    devices = tmp_path / "devices.txt"
    devices.write_text("gw-1 gas-1 spk-1\n")
    out = tmp_path / "out"
    code, output = run(
        "credentials", "--site", "s1", "--gateways", "gw-1,gw-2", "--devices", str(devices),
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    secrets = json.loads((out / "credentials.json").read_text())["users"]
    assert set(secrets) == {"anmin-hub", "gw-1@s1", "gw-2@s1", "gas-1@gw-1@s1", "spk-1@gw-1@s1"}
    assert not any(secret in output for secret in secrets.values()), "no secret on screen"
    assert stat.S_IMODE((out / "credentials.json").stat().st_mode) == 0o600
    hashes = dict(line.split(":", 1) for line in (out / "mosquitto.passwd").read_text().split())
    assert all(verify_password(secrets[user], hashes[user]) for user in secrets)
    assert "user gas-1@gw-1@s1" in (out / "mosquitto.acl").read_text()

    # Again, with a device removed and the gateway rotated: the rest keep their secrets.
    devices.write_text("gw-1 gas-1\n")
    args = ["--site", "s1", "--gateways", "gw-1", "--devices", str(devices), "--out", str(out)]
    code, output = run("credentials", *args, "--rotate", "gw-1@s1", "--no-hub")
    assert code == 0, output
    after = json.loads((out / "credentials.json").read_text())["users"]
    assert set(after) == {"gw-1@s1", "gas-1@gw-1@s1"}
    assert after["gas-1@gw-1@s1"] == secrets["gas-1@gw-1@s1"]
    assert after["gw-1@s1"] != secrets["gw-1@s1"]


def test_credentials_from_edge_configs(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(
        "site: s1\ngateway: gw-7\nbuilding: b7\ndevices:\n  - {id: pir-1, kind: pir}\n"
    )
    out = tmp_path / "out"
    code, output = run(
        "credentials", "--site", "s1", "--edge-config", str(config), "--out", str(out)
    )
    assert code == 0, output
    assert "pir-1@gw-7@s1" in json.loads((out / "credentials.json").read_text())["users"]
    code, output = run(
        "credentials", "--site", "s2", "--edge-config", str(config), "--out", str(out)
    )
    assert code == 2 and "is not 's2'" in output


def test_credentials_refuse_an_unlisted_gateway_and_bad_ids(tmp_path: Path) -> None:
    devices = tmp_path / "devices.txt"
    devices.write_text("gw-9 gas-1\n")
    code, output = run(
        "credentials", "--site", "s1", "--gateways", "gw-1", "--devices", str(devices),
        "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 2 and "gw-9" in output
    code, output = run("credentials", "--site", "s 1", "--gateways", "gw-1", "--out", str(tmp_path))
    assert code == 2
    assert not (tmp_path / "credentials.json").exists()


def test_ca_makes_the_ca_a_server_and_client_certificates(tmp_path: Path) -> None:
    code, output = run(
        "ca", "--site", "s1", "--out", str(tmp_path), "--host", "broker.example,10.0.0.2",
        "--client", "gw-1@s1",
    )  # fmt: skip
    assert code == 0, output
    names = {p.name for p in tmp_path.iterdir()}
    assert {"ca.pem", "ca.key", "server.pem", "server.key", "client-gw-1_s1.pem"} <= names
    ca_before = (tmp_path / "ca.pem").read_bytes()
    code, output = run("ca", "--site", "s1", "--out", str(tmp_path), "--no-server")
    assert code == 0 and (tmp_path / "ca.pem").read_bytes() == ca_before


def test_the_edge_configs_tls_reaches_the_mqtt_link(tmp_path: Path) -> None:
    config = parse(
        f"""\
site: s1
gateway: gw-1
building: b1
data_dir: {tmp_path}
broker: {{host: 127.0.0.1, port: 1883}}
uplink:
  host: hub.example
  port: 8883
  username: gw-1@s1
  password: pw
  tls: {{ca_file: /etc/anmin/ca.pem, cert_file: gw.pem, key_file: gw.key}}
"""
    )
    agent = EdgeAgent(config)
    try:
        assert agent.local.broker.tls is None
        tls = agent.upstream.broker.tls
        assert tls is not None
        assert (tls.ca_file, tls.cert_file, tls.key_file) == (
            "/etc/anmin/ca.pem",
            "gw.pem",
            "gw.key",
        )
    finally:
        agent.close()
