"""``anmin edge check-config`` and ``anmin edge devices``: what an installer sees of a gateway."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from anmin.cli import app
from edge import EdgeAgent, load
from edge.config import DeviceConfig


def config(
    tmp_path: Path, discovery: str = "discovery: {kinds: [gas, co], max_devices: 5}"
) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(
        f"site: s1\ngateway: gw-1\nbuilding: b1\ndata_dir: {tmp_path / 'data'}\n"
        "devices:\n  - {id: gas-101, kind: gas, unit: '101'}\n"
        f"{discovery}\n"
    )
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["edge", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_check_config_says_what_discovery_takes_in(tmp_path: Path) -> None:
    code, output = run("check-config", "--config", str(config(tmp_path)))
    assert code == 0, output
    assert "1 gas" in output and "discovery gas, co (at most 5)" in output
    code, output = run("check-config", "--config", str(config(tmp_path, discovery="")))
    assert code == 0 and "discovery off" in output


def test_devices_lists_the_config_and_what_discovery_took_in(tmp_path: Path) -> None:
    path = config(tmp_path)
    code, output = run("devices", "--config", str(path))  # nothing saved yet
    assert code == 0, output
    assert "gas-101" in output and "1 listed, 0 discovered" in output

    agent = EdgeAgent(load(path, env={}))

    async def announced(device: DeviceConfig) -> None:  # as its announcement takes it in
        agent.ingest.take_in([device])
        agent._take_in(device, datetime.now(UTC))
        await asyncio.gather(*agent._tasks)

    asyncio.run(announced(DeviceConfig(id="co-301", kind="co", unit="301", interval_s=30)))
    agent.close()
    code, output = run("devices", "--config", str(path))
    assert code == 0, output
    [row] = [line for line in output.splitlines() if "co-301" in line]
    assert "co" in row and "301" in row and "30 s" in row and "discovered" in row
    assert "1 listed, 1 discovered" in output


def test_check_config_says_how_many_parts_and_what_they_cannot_run(tmp_path: Path) -> None:
    path = config(tmp_path, discovery="parts: 2")
    code, output = run("check-config", "--config", str(path))
    assert code == 0 and "2 parts" in output, output
    path.write_text(
        path.read_text()
        + "rules:\n  rules:\n    - id: any-gas\n      kind: gas\n      scope: building\n"
        "      devices: {kinds: [gas]}\n      create:\n        Severe: {all: [{metric: gas_lel,"
        ' op: ">=", value: 10, unit: "%LEL"}]}\n      clear: {all: [{metric: gas_lel, op: "<",'
        ' value: 1, unit: "%LEL"}]}\n'
    )
    code, output = run("check-config", "--config", str(path))
    assert code == 2, output
    assert str(path) in output and "any-gas" in output and "scope building" in output


def test_devices_lists_what_every_part_took_in(tmp_path: Path) -> None:
    path = config(tmp_path)
    part = tmp_path / "data" / "part-1"
    agent = EdgeAgent(load(path, env={}), data_dir=part)  # a part's directory, as it saves

    async def announced(device: DeviceConfig) -> None:
        agent.ingest.take_in([device])
        agent._take_in(device, datetime.now(UTC))
        await asyncio.gather(*agent._tasks)

    asyncio.run(announced(DeviceConfig(id="co-302", kind="co", unit="302")))
    agent.close()
    code, output = run("devices", "--config", str(path))
    assert code == 0 and "co-302" in output and "1 listed, 1 discovered" in output, output
