"""The rule language is strict: unknown keys, wrong units and impossible thresholds are errors
with file and line; durations and hours parse as people write them."""

from __future__ import annotations

import textwrap

import pytest

from rules import ConfigError, RuleSet, load_yaml, preset_names
from rules.durations import describe, seconds
from rules.language import parse_hours


def load(text: str) -> RuleSet:
    return load_yaml(textwrap.dedent(text), RuleSet, "test.yaml")


GOOD = """\
version: 1
rules:
  - id: co-high
    kind: co
    create:
      Severe:
        all:
          - {metric: co_ppm, op: ">=", value: 100, unit: ppm}
        for: 5min
"""


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return caught.value


def test_a_good_rule_loads() -> None:
    ruleset = load(GOOD)
    assert [r.id for r in ruleset.resolved()] == ["co-high"]
    severe = ruleset.rules[0].create.Severe
    assert severe is not None and seconds(severe.for_) == 300


@pytest.mark.parametrize(
    ("bad", "line", "words"),
    [
        (GOOD.replace("for: 5min", "fro: 5min"), 9, "unknown key 'fro'"),
        (GOOD.replace("unit: ppm", "unit: ppb"), 8, "wrong unit 'ppb'"),
        (GOOD.replace("unit: ppm}", "unit: ppm, colour: red}"), 8, "unknown key 'colour'"),
        (GOOD.replace("value: 100", "value: 5000"), 8, "impossible threshold"),
        (GOOD.replace('">="', '"<"').replace("value: 100", "value: 0"), 8, "never true"),
        (GOOD.replace("co_ppm", "co_ppb"), 8, "unknown metric 'co_ppb'"),
        (GOOD.replace("Severe:", "Dire:"), 6, "unknown key 'Dire'"),
        (GOOD.replace("for: 5min", "for: 5 minutes"), 9, "for"),
        (GOOD.replace(", unit: ppm", ""), 8, "say the unit"),
        (GOOD.replace("kind: co", "kind: co\n    scope: flat"), 5, "scope"),
    ],
)
def test_mistakes_are_errors_with_the_line(bad: str, line: int, words: str) -> None:
    found = error(bad)
    assert found.line == line, str(found)
    assert words in str(found)
    assert str(found).startswith(f"test.yaml:{line}:")


@pytest.mark.parametrize(
    ("leaf", "words"),
    [
        ('{rate: temp_c, over: 60s, op: ">=", value: 8, unit: "°C"}', "°C/min"),
        ('{rate: temp_c, op: ">=", value: 8, unit: "°C/min"}', "needs over"),
        ('{rate: temp_c, over: 60s, op: ">=", value: 500, unit: "°C/min"}', "impossible rate"),
        ('{cohb: co_ppm, op: ">=", value: 10, unit: "%"}', "%COHb"),
        ('{score: pump, op: ">=", value: 2}', "0..1"),
        ("{silent: 10min, op: '>', value: 1}", "takes no op"),
        ("{metric: co_ppm}", "needs op and value"),
        ('{metric: co_ppm, rate: co_ppm, op: ">", value: 1, unit: ppm}', "exactly one"),
        ('{metric: co_ppm, op: ">=", value: .nan, unit: ppm}', "finite number, not nan"),
        ('{metric: co_ppm, op: "<", value: .inf, unit: ppm}', "finite number, not inf"),
        ('{rate: temp_c, over: 60s, op: ">=", value: .nan, unit: "°C/min"}', "finite number"),
        ('{score: pump, op: ">=", value: .nan}', "finite number"),
        ('{metric: co_ppm, agg: mean, over: .inf, op: ">=", value: 50, unit: ppm}', "over"),
        # Windows and waits shorter than a second: a rate divided by no time at all (every
        # alarm of the device was lost with it), windows that hold nothing, silences and
        # skews that hold at every reading. Durations past ten years, as numbers or words.
        ('{rate: gas_lel, over: "0.0000001s", op: ">=", value: 5, unit: "%LEL/min"}', "1s"),
        ('{rate: gas_lel, over: 1.0e-300, op: ">=", value: 5, unit: "%LEL/min"}', "1s"),
        ('{metric: co_ppm, agg: mean, over: 0, op: ">=", value: 50, unit: ppm}', "at least 1s"),
        ('{metric: co_ppm, op: ">=", value: 50, unit: ppm, within: 0s}', "within must be"),
        ("{silent: 0}", "silent must be at least 1s"),
        ("{clock_skew: 0.5}", "clock_skew must be at least 1s"),
        ("{stuck: co_ppm, over: 0.2}", "at least 1s"),
        ("{stuck: co_ppm, over: 1h, tolerance: .inf}", "tolerance must be a finite number"),
        (
            '{metric: co_ppm, agg: mean, over: "99999999999d", op: ">=", value: 5, unit: ppm}',
            "longer than ten years",
        ),
        ("{silent: " + "9" * 400 + "s}", "longer than ten years"),
        ("{hours: '25:00-06:00'}", "hours"),
        ("{stuck: temp_c}", "needs over"),
        ('{metric: sos, op: "==", value: 2}', "never true"),
        ('{metric: temp_c, op: ">=", value: -40, unit: "°C"}', "always true"),
        ('{metric: pin_failures, agg: sum, op: ">=", value: 5}', "needs over"),
        ('{metric: "door_*_temp_c", agg: max, over: 1h, op: ">", value: 8, unit: "°C"}', "no agg"),
        ('{metric: "door_*", op: ">", value: 8, unit: "°C"}', "unknown metric"),
        ('{metric: "door_*_temp_c", op: ">", value: 8, unit: "K"}', "wrong unit"),
    ],
)
def test_leaf_mistakes(leaf: str, words: str) -> None:
    text = GOOD.replace('{metric: co_ppm, op: ">=", value: 100, unit: ppm}', leaf)
    found = error(text)
    assert words in str(found)
    assert found.line == 8


def test_inactivity_needs_a_scope_wider_than_a_device() -> None:
    text = GOOD.replace('{metric: co_ppm, op: ">=", value: 100, unit: ppm}', "{inactive: [motion]}")
    assert "scope: unit or resident" in str(error(text))


def test_repeat_goes_with_within_and_not_with_for() -> None:
    assert "repeat and within" in str(error(GOOD.replace("for: 5min", "repeat: 3")))
    both = GOOD.replace("for: 5min", "for: 5min\n        repeat: 3\n        within: 1h")
    assert "not both" in str(error(both))


def test_duplicate_ids_and_unknown_presets() -> None:
    twice = GOOD + GOOD.split("rules:\n", 1)[1]
    assert "appears twice" in str(error(twice))
    assert "no preset named 'nope'" in str(error(GOOD + "include: [nope]\n"))


def test_include_presets_and_override_one_rule() -> None:
    text = GOOD.replace("id: co-high", "id: smoke") + "include: [smoke, gas]\n"
    ids = [r.id for r in load(text).resolved()]
    assert ids == ["fire-confirmed", "gas-lel", "smoke"]


def test_every_shipped_preset_is_valid() -> None:
    from rules import load_preset

    assert set(preset_names()) >= {
        "co-ul2034",
        "co-en50291",
        "heat-a1r",
        "gas",
        "smoke",
        "electrical",
        "flood",
        "lockers",
        "elder-care",
        "device-health",
    }
    for name in preset_names():
        assert load_preset(name).resolved()


def test_durations_and_hours() -> None:
    assert [seconds(x) for x in ("90s", "5min", "12h", "2d", "1.5h", 30, 2.5)] == [
        90,
        300,
        43200,
        172800,
        5400,
        30,
        2.5,
    ]
    assert describe(5400) == "1h30min" and describe(0) == "0s" and describe(90) == "1min30s"
    assert parse_hours("22:00-06:30") == (1320, 390)
    with pytest.raises(ValueError):
        seconds("5 fortnights")


def test_every_example_in_the_docs_loads() -> None:
    from pathlib import Path

    docs = Path(__file__).resolve().parents[3] / "docs" / "rules.md"
    blocks = docs.read_text(encoding="utf-8").split("```yaml\n")[1:]
    assert len(blocks) >= 4
    for number, block in enumerate(blocks, 1):
        ruleset = load_yaml(block.split("```")[0], RuleSet, f"docs/rules.md example {number}")
        assert ruleset.resolved()


# "Not up by": an inactive condition's usual wake time, and the rule set's own per resident.
ELDER = """\
version: 1
rules:
  - id: inactivity
    kind: inactivity
    scope: resident
    create:
      Moderate:
        all:
          - {inactive: [motion], wake: "06:30", margin: 1h}
"""


def test_not_up_by_loads_with_routines_per_resident_and_flat() -> None:
    text = ELDER + "routines:\n"
    text += '  - {resident: grandma-li, wake: "05:30", weekend_wake: "06:15"}\n'
    text += '  - {flat: n1/101, wake: "07:00", margin: 90min}\n'
    ruleset = load(text)
    leaf = ruleset.rules[0].create.Moderate.all[0]  # type: ignore[union-attr,index]
    assert (leaf.wake, leaf.weekend_wake, seconds(leaf.margin or 0)) == ("06:30", None, 3600)
    grandma, flat = ruleset.routines
    assert (grandma.key, grandma.weekend_wake) == ("grandma-li", "06:15")
    assert (flat.key, seconds(flat.margin or 0)) == ("n1/101", 5400)


@pytest.mark.parametrize(
    ("leaf", "words"),
    [
        ('{inactive: [motion], wake: "25:00"}', "wake"),
        ("{inactive: [motion], wake: 6:30}", 'write the time in quotes, wake: "06:30"'),
        ("{inactive: [motion], margin: 1h}", "margin needs wake"),
        ('{inactive: [motion], weekend_wake: "07:00"}', "weekend_wake needs wake"),
        ('{inactive: [motion], wake: "06:30", margin: 13h}', "at most 12h"),
        ('{inactive: [motion], wake: "06:30", margin: 0s}', "more than 0"),
        ('{inactive: [motion], wake: "06:30", wakeup: "06:00"}', "unknown key 'wakeup'"),
        ('{metric: motion, op: "==", value: 0, wake: "06:30"}', "wake goes with inactive"),
    ],
)
def test_not_up_by_mistakes_are_errors_with_the_line(leaf: str, words: str) -> None:
    found = error(ELDER.replace('{inactive: [motion], wake: "06:30", margin: 1h}', leaf))
    assert words in str(found), str(found)
    assert found.line == 9, str(found)


@pytest.mark.parametrize(
    ("routine", "words"),
    [
        ('{resident: li, wake: "05:30", wakeup: "05:00"}', "unknown key 'wakeup'"),
        ("{resident: li, wake: 10:30}", 'write the time in quotes, wake: "10:30"'),
        ('{resident: li, wake: "5:30"}', "wake"),
        ('{resident: li, weekend_wake: "07:00"}', "wake"),
        ('{flat: n1/101/x, wake: "05:30"}', "flat"),
        ('{resident: li, flat: n1/101, wake: "05:30"}', "one resident or one flat"),
        ('{wake: "05:30"}', "one resident or one flat"),
        ('{resident: li, wake: "05:30", margin: 1d}', "at most 12h"),
    ],
)
def test_routines_mistakes_are_errors_with_the_line(routine: str, words: str) -> None:
    found = error(ELDER + 'routines:\n  - {resident: wang, wake: "06:00"}\n  - ' + routine + "\n")
    assert words in str(found), str(found)
    assert found.line == 12, str(found)


def test_a_routine_given_twice_is_an_error() -> None:
    twice = '  - {resident: li, wake: "05:30"}\n  - {resident: li, wake: "06:00"}\n'
    assert "'li' appears twice" in str(error(ELDER + "routines:\n" + twice))


@pytest.mark.parametrize(
    ("level", "words"),
    [
        ("repeat: 3\n        within: 0s", "within must be at least 1s"),
        ("for: 99999999999d", "longer than ten years"),
    ],
)
def test_level_waits_past_what_can_happen_are_errors(level: str, words: str) -> None:
    found = error(GOOD.replace("for: 5min", level))
    assert words in str(found)
