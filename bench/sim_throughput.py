"""How many readings a second one simulator process sustains into Mosquitto, on one core.

Starts its own Mosquitto (bus.broker.Mosquitto), pins this process to one CPU, and measures
in the same run:
  1. the engine alone: a 10,000-device community's readings, made and encoded (no network);
  2. the simulator into Mosquitto: ScenarioRunner, one connection per gateway, QoS 0,
     as fast as possible (speed 0), and paced at the target rate (speed 1);
  3. a bare paho-mqtt publisher loop of the same payload size, the ceiling for any Python
     publisher on this core;
and prints each rate and the simulator's ratio to the bare loop.

    .venv/bin/python bench/sim_throughput.py [--devices 10000] [--rate 20000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

import wire
from bus.broker import Mosquitto
from firmware_sim import community
from firmware_sim.engine import Engine
from firmware_sim.load import load_scenario
from firmware_sim.runner import ScenarioRunner, run_start, utc_now


def pin_to_one_core() -> str:
    with contextlib.suppress(AttributeError, OSError):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"cpu {cpu}"
    return "not pinned"


def engine_only(devices: int, rate: float, seconds: float) -> tuple[float, int]:
    c = community.build(load_scenario(devices, rate, duration_s=seconds))
    codec = wire.Codec()
    began = time.perf_counter()
    n = 0
    for tx in Engine(c).transmissions():
        if tx.reading is not None:
            codec.encode(tx.reading)
        n += 1
    return n / (time.perf_counter() - began), n


def simulator(
    broker: Mosquitto, devices: int, rate: float, seconds: float, speed: float
) -> tuple[float, int, int]:
    c = community.build(
        load_scenario(devices, rate, duration_s=seconds),
        start=run_start(utc_now(), seconds, speed),
    )
    runner = ScenarioRunner(
        c,
        broker.broker,
        speed=speed,
        connections="gateway",
        reading_qos=0,
        commands=False,
        client_prefix=f"bench{speed}",
    )
    asyncio.run(runner.run())
    # Rated over the readings alone: connecting 10,000 devices and their retained statuses
    # (QoS 1, one PUBACK each) is set-up, not the sustained rate.
    took = runner.play_seconds
    sent = runner.counters["readings_published"]
    return sent / took, sent, runner.counters["readings_lost"]


def bare_paho(broker: Mosquitto, count: int, payload: bytes) -> float:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare")
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    topic = wire.topics.reading("load", "gw-L1", "gas-L1-101")
    began = time.perf_counter()
    info = None
    for _ in range(count):
        info = client.publish(topic, payload, qos=0)
    assert info is not None
    info.wait_for_publish(60)
    took = time.perf_counter() - began
    client.loop_stop()
    client.disconnect()
    return count / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=20_000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    # aiomqtt warns once per publish when more than 10 are in flight; that is the point here.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    where = pin_to_one_core()
    sample = next(
        tx.reading
        for tx in Engine(community.build(load_scenario(1000, 1000, duration_s=5))).transmissions()
        if tx.reading is not None
    )
    payload = wire.Codec().encode(sample)
    print(f"one process, {where}; {args.devices} devices; payload ~{len(payload)} bytes")
    made, n = engine_only(args.devices, args.rate, args.seconds)
    print(f"engine alone (make + encode, no network): {made:,.0f} readings/s ({n} readings)")
    with Mosquitto(persistence=False) as broker:
        fast, sent, lost = simulator(broker, args.devices, args.rate, args.seconds, 0.0)
        print(
            f"simulator -> Mosquitto, as fast as possible: {fast:,.0f} readings/s "
            f"({sent} sent, {lost} lost)"
        )
        paced, sent_paced, lost_paced = simulator(
            broker, args.devices, args.rate, args.seconds, 1.0
        )
        print(
            f"simulator -> Mosquitto, paced at {args.rate:,.0f}/s: {paced:,.0f} readings/s "
            f"({sent_paced} sent, {lost_paced} lost)"
        )
        bare = bare_paho(broker, max(sent, 100_000), payload)
        print(f"bare paho-mqtt publisher loop: {bare:,.0f} msgs/s")
    print(f"ratio simulator / bare paho: {fast / bare:.2f}")
    verdict = "meets" if fast >= 20_000 else "misses"
    print(f"target 20,000 readings/s: {verdict} ({fast:,.0f}/s)")


if __name__ == "__main__":
    main()
