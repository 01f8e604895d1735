"""Elder care: SOS, fall with a cancel window, vital signs held, inactivity against the learned
routine, night wandering, not back home. Times: T0 is Monday 10:00 in Beijing (+08:00)."""

from __future__ import annotations

import pytest

from rules import RuleSet
from rules.language import RoutineTimes
from rules.routine import UpBy
from tests.unit.rules.support import Sim, at, device

HOUR = 3600.0
WEAR = device("wear-1", "wearable", resident="grandma-li")
SOS = device("sos-1", "sos", resident="grandma-li")
PIR = device("pir-1", "pir", room="living", resident="grandma-li")
DOOR = device("door-1", "door", room="entrance", resident="grandma-li")


def test_sos_at_once_then_clears_after_quiet() -> None:
    sim = Sim("elder-care")
    sim.feed(0, SOS, sos=1)
    for t in range(60, 1200, 60):
        sim.feed(t, SOS, sos=0)
    assert [c for c in sim.changes() if c[1] == "sos"] == [
        (0, "sos", "raised", "Extreme"),
        (960, "sos", "cleared", "Extreme"),
    ]
    assert sim.log[0][1].key == "grandma-li"


def test_a_fall_cancelled_within_30_s_is_not_an_alarm() -> None:
    sim = Sim("elder-care")
    sim.feed(0, WEAR, fall=1, heart_rate_bpm=80, spo2_pct=97)
    sim.tick(10)
    sim.feed(20, WEAR, fall=0, heart_rate_bpm=80, spo2_pct=97)
    for t in range(30, 300, 10):
        sim.tick(t)
    assert sim.log == []


def test_an_uncancelled_fall_alarms_after_30_s_even_with_no_more_readings() -> None:
    sim = Sim("elder-care")
    sim.feed(0, WEAR, fall=1, heart_rate_bpm=80, spo2_pct=97)
    for t in range(5, 60, 5):
        sim.tick(t)
    assert sim.changes() == [(30, "fall", "raised", "Severe")]
    for t in range(60, 1500, 60):
        sim.feed(t, WEAR, fall=0, heart_rate_bpm=80, spo2_pct=97)
    assert sim.changes()[-1][1:3] == ("fall", "cleared")


def test_low_heart_rate_held_two_minutes_and_cleared() -> None:
    sim = Sim("elder-care")
    sim.run(
        WEAR, lambda t: {"heart_rate_bpm": 35.0 if t < 600 else 72.0, "spo2_pct": 96.0}, 0, 1500, 30
    )
    assert [c for c in sim.changes() if c[1] == "vital-signs"] == [
        (120, "vital-signs", "raised", "Severe"),
        (900, "vital-signs", "cleared", "Severe"),
    ]


def test_a_removed_wearable_reading_zero_is_not_bradycardia() -> None:
    sim = Sim("elder-care")
    sim.run(WEAR, lambda t: {"heart_rate_bpm": 0.0, "spo2_pct": 0.0}, 0, 1800, 30)
    assert sim.log == []


def test_low_spo2_alarms() -> None:
    sim = Sim("elder-care")
    sim.run(WEAR, lambda t: {"heart_rate_bpm": 80.0, "spo2_pct": 86.0}, 0, 600, 30)
    assert sim.first(rule="vital-signs") == 120


def test_inactivity_uses_the_default_12_h_until_the_routine_is_learned() -> None:
    sim = Sim("elder-care")
    sim.run(PIR, lambda t: {"motion": 1.0 if t < 2 * HOUR else 0.0}, 0, 16 * HOUR, 600)
    raised = [c for c in sim.changes() if c[1] == "inactivity"]
    last_motion = 2 * HOUR - 600
    assert raised and raised[0][2] == "raised"
    assert last_motion + 12 * HOUR <= raised[0][0] <= last_motion + 12 * HOUR + 600


def test_inactivity_against_a_learned_routine_alarms_sooner_by_day() -> None:
    """Three weeks of an active day (motion every 30 min, 07:00-22:00 local) and quiet nights;
    then in week four a Monday morning goes quiet at 10:00: the alarm comes after about 2 h,
    not 12 h, while the usual quiet nights never alarm."""
    sim = Sim("elder-care")

    def routine(t: float) -> dict[str, float]:
        local_hour = (t / HOUR + 10) % 24
        active = 7 <= local_hour < 22 and t % 1800 < 600
        week4_quiet = t >= 21 * 24 * HOUR
        return {"motion": 1.0 if active and not week4_quiet else 0.0}

    sim.run(PIR, routine, 0, 21 * 24 * HOUR + 6 * HOUR, 600)
    raised = [
        t for t, rule, phase, _ in sim.changes() if rule == "inactivity" and phase == "raised"
    ]
    assert len(raised) == 1, sim.changes()
    quiet_from = 21 * 24 * HOUR - 1800  # the last reading with motion, 09:30 local
    assert quiet_from + 2 * HOUR <= raised[0] <= quiet_from + 3 * HOUR


def test_night_wandering_only_at_night() -> None:
    sim = Sim("elder-care")
    sim.feed(0, DOOR, contact_open=1)  # 10:00 local
    sim.feed(60, DOOR, contact_open=0)
    night = 13.5 * HOUR  # 23:30 local
    sim.feed(night, DOOR, contact_open=1)
    sim.feed(night + 60, DOOR, contact_open=1)
    sim.feed(night + 120, DOOR, contact_open=0)
    sim.feed(night + 180, DOOR, contact_open=0)
    wander = [c for c in sim.changes() if c[1] == "night-wandering"]
    assert wander == [
        (night, "night-wandering", "raised", "Moderate"),
        (night + 180, "night-wandering", "cleared", "Moderate"),
    ]


def test_not_back_home_by_night_and_back_clears() -> None:
    sim = Sim("elder-care")
    sim.feed(0, PIR, motion=1)
    sim.feed(60, DOOR, contact_open=1)  # leaves at 10:01 local
    sim.feed(120, DOOR, contact_open=0)
    for t in range(600, int(12 * HOUR), 600):
        sim.feed(t, PIR, motion=0)
    raised = [c for c in sim.changes() if c[1] == "not-back-home"]
    assert [c[0] for c in raised] == [10 * HOUR + 600]  # 10 h out: the first reading after
    sim.feed(12 * HOUR, DOOR, contact_open=1)  # back
    sim.feed(12 * HOUR + 200, PIR, motion=1)
    assert [c[2] for c in sim.changes() if c[1] == "not-back-home"] == ["raised", "cleared"]


def test_an_errand_is_not_an_alarm() -> None:
    sim = Sim("elder-care")
    sim.feed(0, DOOR, contact_open=1)
    sim.feed(60, DOOR, contact_open=0)
    sim.feed(2 * HOUR, DOOR, contact_open=1)
    sim.feed(2 * HOUR + 200, PIR, motion=1)
    for t in range(int(2 * HOUR) + 600, int(8 * HOUR), 600):
        sim.feed(t, PIR, motion=1)
    assert [c for c in sim.changes() if c[1] == "not-back-home"] == []


# "Not up by": no activity since the usual wake time an hour after it. T0 is Monday 10:00.


def local(day: int, hour: float) -> float:
    """Seconds from T0 at ``hour`` local time on ``day`` (0 = that Monday)."""
    return (day * 24 + hour - 10) * HOUR


LI_EARLY = RuleSet(
    include=["elder-care"],
    routines=[RoutineTimes(resident="grandma-li", wake="05:30", weekend_wake="06:15")],
)
BED = device("bed-1", "bed", room="bedroom", resident="grandma-li")


def morning(sim: Sim, day: int, up_at: float | None, until: float = 10.0) -> None:
    """An evening up to 21:00 the day before, a quiet night with a 03:00 bathroom visit, up
    at ``up_at`` local (None: stays in bed); PIR every 5 min, the bed mat too."""

    def values(t: float) -> dict[str, float]:
        hour = (t / HOUR + 10) % 24
        night = hour >= 21 or hour < (up_at if up_at is not None else 24)
        visit = 3.0 <= hour < 3.1
        return {"motion": 1.0 if (not night or visit) else 0.0}

    start, end = local(day - 1, 18), local(day, until)
    sim.run(PIR, values, start, end, 300, tick_every=60)


def not_up(sim: Sim) -> list[tuple[float, str]]:
    return [(t, phase) for t, rule, phase, _ in sim.changes() if rule == "inactivity"]


def test_not_up_by_the_usual_wake_time_plus_an_hour_alarms() -> None:
    sim = Sim(LI_EARLY)
    morning(sim, 1, up_at=None)  # Tuesday, still in bed
    raised = not_up(sim)
    assert raised == [(local(1, 6.5), "raised")]  # 05:30 + 1 h, on the tick
    (alert,) = sim.raised("inactivity")
    assert alert.key == "grandma-li"
    assert alert.evidence["up_by_h"] == 6.5
    assert alert.evidence["inactive_h"] == pytest.approx(6.5 - 3.0 - 5 / 60)  # since 03:00


def test_a_normal_morning_and_an_early_or_late_riser_within_the_hour_are_not() -> None:
    for up_at in (5.0, 5.5, 6.0, 6.4):
        sim = Sim(LI_EARLY)
        morning(sim, 1, up_at=up_at)
        assert not_up(sim) == [], up_at


def test_it_clears_when_the_resident_gets_up() -> None:
    sim = Sim(LI_EARLY)
    morning(sim, 1, up_at=7.25)
    assert not_up(sim) == [(local(1, 6.5), "raised"), (local(1, 7.25), "cleared")]


def test_weekends_use_the_weekend_wake_time() -> None:
    sim = Sim(LI_EARLY)  # Saturday: up by 06:15 + 1 h
    morning(sim, 5, up_at=7.0)
    assert not_up(sim) == []
    sim = Sim(LI_EARLY)
    morning(sim, 5, up_at=None)
    assert not_up(sim)[0] == (local(5, 7.25), "raised")


def test_without_a_routine_of_their_own_the_preset_time_applies() -> None:
    sim = Sim("elder-care")  # 07:00 + 1 h
    morning(sim, 1, up_at=7.5)
    assert not_up(sim) == []
    sim = Sim("elder-care")
    morning(sim, 1, up_at=None)
    assert not_up(sim)[0] == (local(1, 8.0), "raised")


def test_time_is_an_argument_and_local_time_the_rule_sets() -> None:
    """The same quiet morning judged by the times passed in: the check follows the engine's
    UTC offset, not a clock; a utc offset 1 h west moves the alarm an hour later in UTC."""
    east = Sim(LI_EARLY)
    morning(east, 1, up_at=None)
    west = Sim(LI_EARLY, utc_offset_s=7 * 3600)
    morning(west, 1, up_at=None)
    assert not_up(east)[0][0] + HOUR == not_up(west)[0][0]
    engine = Sim(LI_EARLY).engine
    times = engine.scope_times("grandma-li")
    assert times is not None and times.wake == "05:30"
    assert (
        UpBy(330, 375, HOUR).deadline(at(local(1, 3)).timestamp(), 8 * 3600)
        == at(local(1, 6.5)).timestamp()
    )


def test_a_flat_scope_takes_its_residents_times_and_a_bed_alone_never_alarms() -> None:
    """Motion sensors and the door usually name no resident: the rule's flat scope then
    takes the resident's times from the devices that do (the bed mat). The bed mat's own
    resident scope has no motion sensor and is never inactive."""
    pir = device("pir-2", "pir", room="living")
    sim = Sim(LI_EARLY)
    sim.feed(local(0, 20), BED, bed_occupied=0)
    t = local(0, 20)
    while t <= local(1, 9):
        hour = (t / HOUR + 10) % 24
        sim.feed(t, pir, motion=1.0 if 20 <= hour < 21 else 0.0)
        sim.feed(t, BED, bed_occupied=0.0 if 20 <= hour < 21 else 1.0)
        t += 300
    assert sim.engine.scope_times("b1/101") is LI_EARLY.routines[0]
    raised = sim.raised("inactivity")
    assert [(x.key, x.at) for x in raised] == [("b1/101", at(local(1, 6.5)))]


def test_gone_out_early_is_not_in_bed() -> None:
    """The door opened before the usual wake time and nothing moved since: out for a morning
    walk ("not back home" is the rule for that), not "not up"."""
    sim = Sim(LI_EARLY)
    morning(sim, 1, up_at=5.0, until=5.1)
    sim.feed(local(1, 5.2), DOOR, contact_open=1)
    sim.feed(local(1, 5.21), DOOR, contact_open=0)
    for t in range(int(local(1, 5.25)), int(local(1, 9)), 300):
        sim.feed(t, PIR, motion=0)
    assert not_up(sim) == []
