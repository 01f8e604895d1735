"""Elder care: SOS, fall with a cancel window, vital signs held, inactivity against the learned
routine, night wandering, not back home. Times: T0 is Monday 10:00 in Beijing (+08:00)."""

from __future__ import annotations

from tests.unit.rules.support import Sim, device

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
