"""The broker's own delivery for a broadcast's fan-out: the baseline beside
bench/broadcast_fanout.py (issue 13).

The same three hops, with bare paho-mqtt clients doing nothing but forwarding: one "hub" client
publishes one message (QoS 1) that 50 "gateway" clients receive; each publishes one QoS 1
message to each of its 20 "speakers" (one connection per building, as in the benchmark); each
speaker answers with one QoS 1 message that the hub client receives. Prints the time from the
publish to 99 % and to 100 % of the answers.

    .venv/bin/python bench/fanout_baseline.py [--gateways 50] [--speakers 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import write_json
from bus.broker import Mosquitto


def client(port: int, name: str) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=name)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    return c


def run(port: int, gateways: int, speakers: int, rounds: int) -> dict[str, Any]:
    total = gateways * speakers
    arrivals: list[float] = []
    done = threading.Event()
    lock = threading.Lock()

    def on_answer(_c: paho.Client, _u: object, _m: paho.MQTTMessage) -> None:
        with lock:
            arrivals.append(time.perf_counter())
            if len(arrivals) >= total:
                done.set()

    hub = client(port, "bare-hub")
    hub.on_message = on_answer
    hub.subscribe("bare/answer/#", qos=1)
    clients = [hub]
    for g in range(gateways):
        gw = client(port, f"bare-gw-{g}")

        def on_broadcast(c: paho.Client, _u: object, m: paho.MQTTMessage, g: int = g) -> None:
            for s in range(speakers):
                c.publish(f"bare/cmd/{g}/{s}", m.payload, qos=1)

        gw.on_message = on_broadcast
        gw.subscribe("bare/broadcast", qos=1)
        building = client(port, f"bare-building-{g}")

        def on_cmd(c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
            c.publish(m.topic.replace("/cmd/", "/answer/"), b"played", qos=1)

        building.on_message = on_cmd
        building.subscribe(f"bare/cmd/{g}/+", qos=1)
        clients += [gw, building]
    for c in clients:
        c.loop_start()
    time.sleep(1.0)  # a benchmark, not a test: let every subscription settle
    p99s: list[float] = []
    p100s: list[float] = []
    try:
        for r in range(rounds):
            with lock:
                arrivals.clear()
            done.clear()
            began = time.perf_counter()
            hub.publish("bare/broadcast", b"x" * 600, qos=1)  # about a CAP warning's size
            done.wait(30)
            with lock:
                ordered = sorted(arrivals)
            need = max(1, round(total * 0.99))
            p99 = ordered[need - 1] - began if len(ordered) >= need else float("inf")
            p100 = ordered[-1] - began if len(ordered) >= total else float("inf")
            p99s.append(p99)
            p100s.append(p100)
            print(
                f"round {r + 1}: {len(ordered)}/{total} answers; 99 % in {p99:.3f} s,"
                f" 100 % in {p100:.3f} s",
                flush=True,
            )
            time.sleep(0.3)
    finally:
        # Disconnect all first: each network thread then ends at once, not at its next timeout.
        for c in clients:
            c.disconnect()
        for c in clients:
            c.loop_stop()
    return {
        "gateways": gateways,
        "speakers": total,
        "p99_median_s": statistics.median(p99s),
        "p99_worst_s": max(p99s),
        "p100_median_s": statistics.median(p100s),
        "p100_worst_s": max(p100s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--gateways", type=int, default=50)
    parser.add_argument("--speakers", type=int, default=20, help="per gateway")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with Mosquitto(persistence=False) as broker:
        results = run(broker.port, args.gateways, args.speakers, args.rounds)
    print(
        f"bare paho, {results['speakers']:,} answers via {args.gateways} gateways: 99 % in"
        f" median {results['p99_median_s']:.3f} s, 100 % in median"
        f" {results['p100_median_s']:.3f} s"
    )
    write_json(args.json, results)


if __name__ == "__main__":
    main()
