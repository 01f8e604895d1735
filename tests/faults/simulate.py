"""The simulator as its own process, for the fault suite: ``anmin sim run``'s runner, plus the
ground truth and the wall-clock moment the scenario started playing, written to ``--truth``
so that the checker can tell which alarms were caused, and when each was due.

    python -m tests.faults.simulate SCENARIO --speed 20 --broker-port 1883 --truth out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import msgspec

from bus import Broker
from firmware_sim import community
from firmware_sim.runner import ScenarioRunner, run_start, utc_now
from firmware_sim.scenario import load_scenario, seconds


class TruthfulRunner(ScenarioRunner):
    """Writes the truth file at the moment play begins (the wall time of the first reading)."""

    truth_path: Path

    async def _play(self) -> None:
        truth = msgspec.to_builtins(self.community.ground_truth())
        document = {"truth": truth, "speed": self.speed, "played_at": time.time()}
        partial = self.truth_path.with_suffix(".partial")
        partial.write_text(json.dumps(document))
        partial.replace(self.truth_path)  # the test polls for the file: never half written
        await super()._play()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--speed", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--broker-host", default="127.0.0.1")
    parser.add_argument("--broker-port", type=int, required=True)
    parser.add_argument("--truth", type=Path, required=True)
    parser.add_argument("--counters", type=Path, required=True)
    parser.add_argument("--duration", type=float, default=None, help="seconds (the file's)")
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    length = seconds(scenario.duration) if args.duration is None else args.duration
    built = community.build(
        scenario, seed=args.seed, start=run_start(utc_now(), length, args.speed), duration_s=length
    )
    runner = TruthfulRunner(
        built, Broker(args.broker_host, args.broker_port), speed=args.speed, connections="gateway"
    )
    runner.truth_path = args.truth
    asyncio.run(runner.run())
    args.counters.write_text(json.dumps(dict(runner.counters)))


if __name__ == "__main__":
    main()
