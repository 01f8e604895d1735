"""``anmin edge``: the gateway's edge agent."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from anmin.common import console, errors, logging_setup

if TYPE_CHECKING:
    from edge import EdgeConfig
    from edge.parts import Part, Parts

app = typer.Typer(help="The gateway's edge agent.", no_args_is_help=True)

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config", "-c", help="The gateway's YAML config; ANMIN_EDGE_* variables override it."
    ),
]


def _load(config: Path) -> EdgeConfig:
    from edge import load
    from rules import ConfigError

    try:
        return load(config)
    except ConfigError as exc:
        errors.print(f"[red]config error:[/] {exc}")
        raise typer.Exit(2) from exc


@app.command("run")
def edge_run(
    config: ConfigOption,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
    json_logs: Annotated[
        bool, typer.Option("--json-logs", help="One JSON object a log line (for journald).")
    ] = False,
) -> None:
    """Run the edge agent of one gateway, as its YAML config describes (see deploy/).

    SIGTERM and Ctrl-C stop it cleanly: rule state saved, telemetry flushed. SIGHUP reloads
    the rules from the config (and its rules_file) without losing the state of unchanged rules.
    """
    logging_setup(verbose, json_logs=json_logs)
    settings = _load(config)
    from edge.parts import retiring_parts

    retiring = retiring_parts(Path(settings.data_dir), settings.parts)
    if settings.parts == 1 and not retiring:
        _run_agent(config, settings)
        return
    from edge.agent import discovered_on_disk  # imported before the fork: pages shared
    from edge.parts import Parts
    from rules.engine import Engine

    # So is what the rules' detectors import (numpy). Each part loading its own after the
    # fork cost the two parts together 5.5 MB of resident memory (measured, 1,000 devices).
    # OpenBLAS would start a thread of its own at that import, and the parts are better
    # forked from a process of one thread; the detectors do no linear algebra worth two.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    Engine(settings.rules).load_detectors()

    # What start-up made (modules, config, rules) is shared with the parts forked below, and
    # frozen: the collector would otherwise touch (and so copy) every page of it in each.
    gc.freeze()
    parts = Parts(
        settings,
        lambda part: _run_agent(config, settings, part=part),
        retiring=retiring,
        discovered=discovered_on_disk(Path(settings.data_dir)),
    )
    try:
        _run_agent(config, settings, parts=parts)  # part 0, in this process
    finally:
        status = parts.wait()
    if status:
        errors.print(f"[red]edge agent stopped: a part failed (exit status {status})[/]")
        raise typer.Exit(status)
    errors.print("[dim]edge agent stopped[/]")


def _run_agent(
    config: Path, settings: EdgeConfig, *, part: Part | None = None, parts: Parts | None = None
) -> int:
    """Run one agent until SIGTERM or Ctrl-C, 0 once stopped: the single agent, a part in
    a process of its own (``part``), or part 0 with the others (``parts``)."""
    import shutil

    from edge import EdgeAgent

    if parts is not None:
        part = parts.part
    agent = EdgeAgent(settings, part=part)
    # What start-up made (modules, config, rules, restored state) lives as long as the
    # process: out of the collector's sight, a full collection pauses the loop far less
    # (measured at 1,000 devices: 42-46 ms -> 7-8 ms; 5-8x that on a Pi).
    gc.freeze()

    async def reload() -> None:
        from edge import load
        from rules import ConfigError

        try:
            fresh = load(config)
            if fresh.parts != settings.parts:
                errors.print(
                    f"[yellow]parts: {fresh.parts} in {config} takes a restart; the"
                    f" {settings.parts} parts running now reload their rules[/]"
                )
            # Checked against the parts and devices running, not the file's: a rule each
            # running part could not see whole must not get in by a reload.
            count = await agent.reload_rules(fresh.rules)
        except ConfigError as exc:
            # A broken edit must not stop a running gateway: keep the rules it has.
            errors.print(f"[red]rules not reloaded:[/] {exc}")
            return
        errors.print(f"rules reloaded: {count} rules")

    async def main() -> None:
        from bus.tasks import stop

        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()

        def stop_all(signum: int) -> None:
            stopping.set()
            if parts is not None:
                parts.signal(signum)

        reloading: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak ones

        def reload_all() -> None:
            task = asyncio.ensure_future(reload())
            reloading.add(task)
            task.add_done_callback(reloading.discard)
            if parts is not None:
                parts.signal(signal.SIGHUP)

        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop_signal, stop_all, stop_signal)
        loop.add_signal_handler(signal.SIGHUP, reload_all)
        if parts is not None:
            parts.watch(loop, stopping.set)  # a part that ends ends the agent
        port = agent.config.metrics_port
        if port is not None and (part is None or part.speaks):
            from edge.metrics import serve_metrics

            serve_metrics(agent, port)
        running = asyncio.create_task(agent.run())
        waiting = asyncio.create_task(stopping.wait())
        await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if running.done():
            running.result()  # it failed: let the error show
        else:
            # One cancel can be lost while aiomqtt connects (Python 3.11); stop() insists.
            await stop(running)

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        pass
    finally:
        # The loop's handlers are gone: a second SIGTERM (systemd signals every process of
        # the service, and part 0 passes its own on) must not end the state's last save.
        for stop_signal in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(stop_signal, signal.SIG_IGN)
        agent.close()
    if agent.retired:  # a part left from a run with more parts, now drained
        from edge.outbox import entries_on_disk

        left = entries_on_disk(agent.outbox.path)
        if left:  # an alert stored after the last look: it goes at the next start
            errors.print(f"[yellow]{agent.data_dir}: {left} alerts left to send; kept[/]")
            return 0
        if not asyncio.run(agent.forget_sessions()):
            errors.print(f"[yellow]{agent.data_dir}: no broker to end its sessions; kept[/]")
            return 0
        shutil.rmtree(agent.data_dir)
        return 0
    if part is None and parts is None:
        errors.print("[dim]edge agent stopped[/]")
    return 0


@app.command("check-config")
def edge_check_config(config: ConfigOption) -> None:
    """Check a gateway config (and ANMIN_EDGE_* overrides) without starting anything."""
    settings = _load(config)
    kinds: dict[str, int] = {}
    for device in settings.devices:
        kinds[device.kind] = kinds.get(device.kind, 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "no devices"
    telemetry = settings.telemetry.url if settings.telemetry else "off"
    discovery = settings.discovery
    discovering = (
        "off"
        if discovery is None
        else f"{', '.join(discovery.kinds)} (at most {discovery.max_devices})"
    )
    console.print(
        f"[green]ok[/] {config}: site {settings.site}, gateway {settings.gateway}, "
        f"building {settings.building}; {summary}; broker "
        f"{settings.broker.host}:{settings.broker.port}; telemetry {telemetry}; "
        f"discovery {discovering}"
        + (f"; {settings.parts} parts (docs/edge.md, Parts)" if settings.parts > 1 else "")
    )


@app.command("devices")
def edge_devices(config: ConfigOption) -> None:
    """The devices the gateway watches: those its config lists, and those discovery took in
    (as the agent saved them in its data_dir, each as it was taken in)."""
    from rich.table import Table

    from edge.agent import discovered_on_disk

    settings = _load(config)
    listed = {d.id for d in settings.devices}
    discovered = [d for d in discovered_on_disk(Path(settings.data_dir)) if d.id not in listed]
    table = Table("device", "kind", "unit", "room", "reports every", "from")
    for device, source in [(d, "config") for d in settings.devices] + [
        (d, "discovered" if settings.discovery else "discovered, discovery now off")
        for d in discovered
    ]:
        table.add_row(
            device.id,
            device.kind,
            device.unit or "-",
            device.room or "-",
            f"{device.interval_s:g} s",
            source,
        )
    console.print(table)
    console.print(f"{len(listed)} listed, {len(discovered)} discovered")
