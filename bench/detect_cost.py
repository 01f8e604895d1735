"""Cost per reading of every registered detector (score_one + learn_one, as the engine calls
them) and the size of one stream's state. Prints µs/reading; docs/detection.md quotes it.

    .venv/bin/python bench/detect_cost.py [readings]
"""

from __future__ import annotations

import pickle
import random
import sys
import time

from rules.detect.base import TIME_KEY
from rules.detectors import CONFIGS, DETECTORS


def main(n: int) -> None:
    rng = random.Random(7)
    print(f"{'detector':<18} {'µs/reading':>11} {'state bytes':>12}  ({n} readings, 5 channels)")
    for name in sorted(DETECTORS):
        config = CONFIGS.get(name)
        names = list(config.channels)[:5] if config and config.channels else list("abcde")
        stream = [
            {**{c: 10.0 + rng.gauss(0.0, 1.0) for c in names}, TIME_KEY: float(i * 10)}
            for i in range(n)
        ]
        detector = DETECTORS[name]()
        for x in stream[: n // 2]:  # warm up (and fit) before timing
            detector.score_one(x)
            detector.learn_one(x)
        began = time.perf_counter()
        for x in stream[n // 2 :]:
            detector.score_one(x)
            detector.learn_one(x)
        took = time.perf_counter() - began
        size = len(pickle.dumps(detector))
        print(f"{name:<18} {1e6 * took / (n - n // 2):>11.1f} {size:>12,}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4000)
