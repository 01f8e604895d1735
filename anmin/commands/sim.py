"""``anmin sim``: Simulated devices, for demos, tests, recordings and load."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer

from anmin.common import console, errors, logging_setup, run_until_interrupted

if TYPE_CHECKING:
    from bus import Broker
    from firmware_sim.community import Community
    from firmware_sim.record import RecordSummary
    from firmware_sim.runner import ScenarioRunner

app = typer.Typer(help="Simulated devices, for demos and tests.", no_args_is_help=True)

SeedOption = Annotated[
    int | None,
    typer.Option(help="Random seed: the same seed gives the same readings (default: the file's)."),
]
DurationOption = Annotated[
    float | None, typer.Option(help="Simulate this many seconds instead of the file's duration.")
]


def parse_broker(url: str) -> Broker:
    """``mqtt://[user:password@]host[:port]`` (or just ``host[:port]``) to a ``Broker``."""
    from bus import Broker

    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise typer.BadParameter(f"{url!r}: expected mqtt://host[:port]")
    return Broker(parts.hostname, parts.port or 1883, parts.username, parts.password)


def _load(
    scenario: Path,
    seed: int | None,
    *,
    start: datetime | None = None,
    duration_s: float | None = None,
) -> Community:
    from firmware_sim import community
    from firmware_sim.errors import ScenarioError
    from firmware_sim.scenario import load_scenario

    try:
        return community.build(
            load_scenario(scenario), seed=seed, start=start, duration_s=duration_s
        )
    except ScenarioError as exc:
        errors.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc


@app.command("run")
def run(
    scenario: Annotated[
        Path | None,
        typer.Argument(help="A scenario YAML; without one, the demo's gas-leak building."),
    ] = None,
    speed: Annotated[
        float, typer.Option(help="1 = real time, N = N times faster, 0 = as fast as possible.")
    ] = 1.0,
    seed: SeedOption = None,
    broker: Annotated[
        str | None, typer.Option(help="MQTT broker URL, mqtt://host:port (overrides --broker-*).")
    ] = None,
    duration: DurationOption = None,
    connections: Annotated[
        str, typer.Option(help="'device': a connection (and last will) per device; 'gateway'.")
    ] = "device",
    qos: Annotated[int, typer.Option(help="QoS of readings (0 or 1).")] = 1,
    wav_dir: Annotated[
        Path | None, typer.Option(help="Speak each played broadcast into a WAV (espeak-ng).")
    ] = None,
    broker_host: Annotated[str, typer.Option(help="MQTT broker host.")] = "127.0.0.1",
    broker_port: Annotated[int, typer.Option(help="MQTT broker port.")] = 1883,
    site: Annotated[str, typer.Option(help="Site id (demo building).")] = "demo",
    gateway: Annotated[str, typer.Option(help="Gateway id (demo building).")] = "gw-1",
    building: Annotated[str, typer.Option(help="Building id (demo building).")] = "b1",
    leak_after: Annotated[
        float, typer.Option(help="Seconds before the gas leak starts (demo building).")
    ] = 15.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Publish a scenario's devices over MQTT (or, without SCENARIO, the demo's building:
    a kitchen gas sensor that starts to leak, and a speaker)."""
    from bus import Broker

    logging_setup(verbose)
    target = parse_broker(broker) if broker else Broker(broker_host, broker_port)
    if scenario is None:
        from firmware_sim.scenarios import gas_leak_building

        simulated = gas_leak_building(
            target,
            site=site,
            gateway=gateway,
            building=building,
            seed=7 if seed is None else seed,
            leak_after_s=leak_after,
        )
        run_until_interrupted(simulated.run())
        return
    if connections not in ("device", "gateway") or qos not in (0, 1):
        raise typer.BadParameter("--connections is device or gateway; --qos is 0 or 1")
    runner = _runner(scenario, target, speed, seed, duration, connections, qos, wav_dir)
    info = runner.community
    console.print(
        f"[bold]{info.scenario.name}[/]: {len(runner.devices)} devices, "
        f"{len(info.incidents)} incidents, simulated {info.start:%Y-%m-%d %H:%M:%S%z} to "
        f"{info.end:%H:%M:%S}, speed {speed or 'max'}, broker {target.host}:{target.port}"
    )
    run_until_interrupted(runner.run())
    _print_counters(runner)


def _runner(
    scenario: Path,
    target: Broker,
    speed: float,
    seed: int | None,
    duration: float | None,
    connections: str,
    qos: int,
    wav_dir: Path | None,
) -> ScenarioRunner:
    from firmware_sim.errors import ScenarioError
    from firmware_sim.runner import ScenarioRunner, run_start, utc_now
    from firmware_sim.scenario import load_scenario, seconds

    try:
        length = duration if duration is not None else seconds(load_scenario(scenario).duration)
    except ScenarioError as exc:
        errors.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    start = run_start(utc_now(), length, speed)
    community = _load(scenario, seed, start=start, duration_s=length)
    return ScenarioRunner(
        community,
        target,
        speed=speed,
        connections="gateway" if connections == "gateway" else "device",
        reading_qos=qos,
        wav_dir=wav_dir,
    )


def _print_counters(runner: ScenarioRunner) -> None:
    from rich.table import Table

    table = Table(title="published", show_header=False)
    for key, value in sorted(runner.counters.items()):
        table.add_row(key, str(value))
    console.print(table)


@app.command("record")
def record(
    scenario: Annotated[Path, typer.Argument(help="A scenario YAML.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The replay file (JSON Lines).")],
    seed: SeedOption = None,
    duration: DurationOption = None,
) -> None:
    """Record a scenario on a simulated clock: the replay FILE plus FILE.truth.json."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from firmware_sim.record import record as record_scenario

    community = _load(scenario, seed, duration_s=duration)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% of simulated time"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(community.scenario.name, total=1.0)
        summary = record_scenario(
            community, out, progress=lambda share: bar.update(task, completed=share)
        )
    _print_summary(community, summary)


def _print_summary(community: Community, summary: RecordSummary) -> None:
    from rich.table import Table

    simulated = summary.simulated_s
    console.print(
        f"[green]recorded[/] {summary.readings} readings from {summary.devices} devices over "
        f"{simulated / 60:.0f} simulated minutes -> {summary.replay}\n"
        f"ground truth: {summary.incidents} incidents, {len(community.faults)} injected faults "
        f"-> {summary.truth}"
    )
    table = Table("family", "readings")
    for kind, count in sorted(summary.by_kind.items()):
        table.add_row(kind, str(count))
    console.print(table)
    if summary.faults:
        console.print(
            "faults applied: "
            + ", ".join(f"{name} {count}" for name, count in sorted(summary.faults.items()))
        )
    if summary.rejected:
        console.print(
            "malformed, left out as the gateway would reject them: "
            + ", ".join(f"{name} {count}" for name, count in sorted(summary.rejected.items()))
        )


@app.command("load")
def load(
    devices: Annotated[int, typer.Option(help="How many devices to simulate.")] = 10_000,
    rate: Annotated[float, typer.Option(help="Aggregate readings per second.")] = 20_000.0,
    duration: Annotated[float, typer.Option(help="Seconds to run.")] = 30.0,
    broker: Annotated[str, typer.Option(help="MQTT broker URL.")] = "mqtt://127.0.0.1:1883",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
) -> None:
    """Simulate many devices (one connection per gateway, QoS 0) at an aggregate rate."""
    import logging
    import time

    from firmware_sim import community
    from firmware_sim.load import load_scenario
    from firmware_sim.runner import ScenarioRunner, run_start, utc_now

    built = community.build(
        load_scenario(devices, rate, duration_s=duration, seed=seed),
        start=run_start(utc_now(), duration, 1.0),
    )
    runner = ScenarioRunner(
        built,
        parse_broker(broker),
        speed=1.0,
        connections="gateway",
        reading_qos=0,
        commands=False,
    )
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt: "N pending publish calls"
    began = time.perf_counter()
    asyncio.run(runner.run())
    took = time.perf_counter() - began
    sent = runner.counters["readings_published"]
    console.print(
        f"{len(built.devices)} devices: {sent} readings in {took:.1f} s = {sent / took:.0f}/s"
    )
