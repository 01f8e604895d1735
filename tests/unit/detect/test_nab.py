"""NAB scoring (../shared/STANDARDS.md) on hand-made cases."""

from __future__ import annotations

import math

import pytest

from anmin.evaluation import nab

STANDARD, LOW_FP, LOW_FN = nab.PROFILES


def test_profiles_are_the_standards() -> None:
    assert [(p.name, p.tp, p.fn, p.fp) for p in nab.PROFILES] == [
        ("standard", 1.0, 1.0, 0.11),
        ("reward_low_FP", 1.0, 1.0, 0.22),
        ("reward_low_FN", 1.0, 2.0, 0.11),
    ]


def test_sigmoid_is_about_1_at_the_left_edge_and_0_at_the_right() -> None:
    assert nab.scaled_sigmoid(-1.0) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert nab.scaled_sigmoid(0.0) == 0.0
    assert nab.scaled_sigmoid(-0.5) > nab.scaled_sigmoid(-0.1)


def test_probation_is_15_percent_at_most_750_rows() -> None:
    assert nab.probation(1000) == 150
    assert nab.probation(10_000) == 750


def test_windows_are_10_percent_over_the_labels_centred_and_merged() -> None:
    assert nab.windows(1000, [500]) == [(450, 550)]
    assert nab.windows(1000, [300, 700]) == [(275, 325), (675, 725)]
    assert nab.windows(1000, [500, 510]) == [(475, 535)]  # overlapping: merged
    assert nab.windows(1000, [990]) == [(940, 999)]  # clipped
    assert nab.windows(1000, []) == []


def test_first_detection_in_a_window_counts_and_earlier_is_better() -> None:
    spans = nab.windows(1000, [500])
    early = nab.score_series(1000, spans, [450, 460, 470], STANDARD)
    late = nab.score_series(1000, spans, [540], STANDARD)
    assert early.tp == 1 and early.fp == 0 and early.fn == 0
    assert early.score == pytest.approx(nab.scaled_sigmoid(-1.0))
    assert late.score == pytest.approx(nab.scaled_sigmoid(-11 / 101))
    assert early.score > late.score > 0


def test_false_positives_and_misses_cost_their_weights() -> None:
    spans = nab.windows(1000, [500])
    counts = nab.score_series(1000, spans, [200, 300], LOW_FP)
    assert (counts.tp, counts.fp, counts.fn) == (0, 2, 1)
    assert counts.score == pytest.approx(-2 * 0.22 - 1.0)
    assert nab.score_series(1000, spans, [], LOW_FN).score == pytest.approx(-2.0)


def test_detections_in_probation_are_not_scored() -> None:
    spans = nab.windows(1000, [500])
    assert nab.score_series(1000, spans, [10, 149], STANDARD).fp == 0
    assert nab.score_series(1000, spans, [150], STANDARD).fp == 1


def test_normalised_0_for_silence_100_for_perfect() -> None:
    series = [nab.SeriesInput(1000, [500], []), nab.SeriesInput(2000, [400, 1500], [])]
    assert nab.normalised(series, STANDARD) == 0.0
    perfect = [
        nab.SeriesInput(
            s.length, s.labels, nab.perfect_detections(s.length, nab.windows(s.length, s.labels))
        )
        for s in series
    ]
    assert nab.normalised(perfect, STANDARD) == pytest.approx(100.0)
    one = [nab.SeriesInput(1000, [500], [450]), nab.SeriesInput(2000, [400, 1500], [])]
    # one of three windows found at its left edge: a third of the way from null to perfect
    assert nab.normalised(one, STANDARD) == pytest.approx(100 / 3)
