"""``anmin eval``: detectors, through rules, over labelled series (the simulator's scenarios and
the SKAB recordings), scored with NAB and with per-row F1 / false and missed alarm rates."""
