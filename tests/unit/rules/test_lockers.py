"""Parcel lockers: door ajar, forced open, PIN brute force, cold chain, parcel overdue."""

from __future__ import annotations

from tests.unit.rules.support import Sim, device

LOCKER = device("locker-1", "locker", unit=None, room="lobby")
CLOSED = {
    "door_1_temp_c": 4.0,
    "door_open": 0.0,
    "unlock_authorised": 1.0,
    "tamper": 0.0,
    "pin_failures": 0.0,
    "temp_c": 4.0,
    "parcel_age_h": 2.0,
}


def test_door_ajar_after_5_min_and_clears_when_shut() -> None:
    sim = Sim("lockers")
    sim.run(LOCKER, lambda t: {**CLOSED, "door_open": 1.0 if 60 <= t < 600 else 0.0}, 0, 900, 30)
    assert [c for c in sim.changes() if c[1] == "locker-door-ajar"] == [
        (360, "locker-door-ajar", "raised", "Minor"),
        (600, "locker-door-ajar", "cleared", "Minor"),
    ]


def test_an_authorised_opening_is_not_forced() -> None:
    sim = Sim("lockers")
    sim.run(LOCKER, lambda t: {**CLOSED, "door_open": 1.0 if 60 <= t < 120 else 0.0}, 0, 600, 30)
    assert sim.log == []


def test_forced_open_at_once_and_clear_after_shut() -> None:
    sim = Sim("lockers")

    def forced(t: float) -> dict[str, float]:
        opened = 60 <= t < 120
        return {**CLOSED, "door_open": float(opened), "unlock_authorised": 0.0}

    sim.run(LOCKER, forced, 0, 600, 30)
    assert [c for c in sim.changes() if c[1] == "locker-forced"] == [
        (60, "locker-forced", "raised", "Severe"),
        (180, "locker-forced", "cleared", "Severe"),
    ]


def test_tamper_alone_is_forced() -> None:
    sim = Sim("lockers")
    sim.feed(0, LOCKER, **{**CLOSED, "tamper": 1.0})
    assert [c[1] for c in sim.changes()] == ["locker-forced"]


def test_pin_brute_force_counts_failures_in_a_window() -> None:
    sim = Sim("lockers")
    # 1 failure a minute: 5 within 10 min at t=240; then quiet, cleared when the window is empty
    sim.run(LOCKER, lambda t: {**CLOSED, "pin_failures": 1.0 if t < 300 else 0.0}, 0, 1200, 60)
    assert [c for c in sim.changes() if c[1] == "locker-pin-brute-force"] == [
        (240, "locker-pin-brute-force", "raised", "Moderate"),
        (840, "locker-pin-brute-force", "cleared", "Moderate"),
    ]


def test_occasional_typos_are_not_an_attack() -> None:
    sim = Sim("lockers")
    sim.run(LOCKER, lambda t: {**CLOSED, "pin_failures": 1.0 if t % 600 == 0 else 0.0}, 0, 7200, 60)
    assert sim.log == []


def test_chilled_compartment_out_of_range_held_then_back() -> None:
    sim = Sim("lockers")
    sim.run(LOCKER, lambda t: {**CLOSED, "door_1_temp_c": 12.0 if t < 1800 else 4.0}, 0, 3600, 60)
    assert [c for c in sim.changes() if c[1] == "locker-chilled-out-of-range"] == [
        (300, "locker-chilled-out-of-range", "raised", "Moderate"),
        (2100, "locker-chilled-out-of-range", "cleared", "Moderate"),
    ]


def test_parcel_overdue_and_collected() -> None:
    sim = Sim("lockers")
    sim.run(LOCKER, lambda t: {**CLOSED, "parcel_age_h": 80.0 if t < 600 else 0.0}, 0, 900, 60)
    assert [c[1:3] for c in sim.changes()] == [
        ("locker-parcel-overdue", "raised"),
        ("locker-parcel-overdue", "cleared"),
    ]
