"""Lifecycle stages on hand-made customers whose stage is known."""

import numpy as np
import pytest

from segmentation_pipeline.core.clustering import segment_names
from segmentation_pipeline.core.errors import ProfileBuildError
from segmentation_pipeline.core.lifecycle import LifecycleInputs, LifecycleSettings, lifecycle_stages, typical_gap

NAN = float("nan")


def stages(rows: list[tuple[float, float, float, float, float]]) -> list[str]:
    """rows: (recency days, purchase days, span days, P(alive), CLV)."""
    columns = np.array(rows, dtype=float).T
    return list(lifecycle_stages(LifecycleInputs(*columns), LifecycleSettings()))


# Repeat buyers whose median gap between purchase days is 20 days (spans 40 over 3 days, 20 over 2).
REGULARS = [(5, 3, 40, 0.95, 100), (8, 2, 20, 0.9, 50), (3, 3, 40, 0.97, 80)]


def test_stages_follow_the_customers_own_rhythm_and_p_alive() -> None:
    rows = [
        (NAN, 0, 0, NAN, 0),  # browsed, never bought
        (10, 1, 0, 0.8, 20),  # first purchase 10 days ago, within the usual 20-day wait
        (35, 1, 0, 0.5, 10),  # one purchase, silent past the usual wait, P(alive) 0.5
        (200, 1, 0, 0.1, 1),  # one purchase long ago, P(alive) 0.1
        (12, 6, 100, 0.95, 400),  # six purchase days, in rhythm (gap 20)
        (70, 3, 40, 0.7, 60),  # usual gap 20, silent 70 days: overdue 3.5 gaps
        *REGULARS,
    ]
    assert stages(rows) == ["prospect", "new", "at_risk", "lapsed", "loyal", "at_risk", "loyal", "active", "active"]
    # The top 20% of buyers by CLV are loyal too (here the 400 and the 100).
    assert typical_gap(LifecycleInputs(*np.array(rows, dtype=float).T), LifecycleSettings()) == 20.0


def test_a_long_silence_is_lapsed_whatever_the_model_says() -> None:
    # A model fitted mostly on one-time buyers keeps one silent for 10 usual gaps at P(alive) 0.45.
    assert stages([(200, 1, 0, 0.45, 5), (90, 3, 40, 0.95, 5), *REGULARS])[:2] == ["lapsed", "lapsed"]


def test_without_a_model_silence_in_usual_gaps_decides() -> None:
    rows = [(30, 3, 40, NAN, 5), (50, 3, 40, NAN, 5), (90, 3, 40, NAN, 5), (100, 1, 0, NAN, 5), *REGULARS]
    # Gap 20: 1.5 gaps in rhythm, 2.5 at risk, 4.5 lapsed; a one-time buyer's usual gap is the population's.
    assert stages(rows)[:4] == ["active", "at_risk", "lapsed", "lapsed"]


def test_a_one_time_buyers_risk_rises_with_silence() -> None:
    silences = [5, 15, 25, 45, 95]
    result = stages([(days, 1, 0, NAN, 5) for days in silences] + REGULARS)
    assert result[:5] == ["new", "new", "active", "at_risk", "lapsed"]


def test_thresholds_are_checked() -> None:
    with pytest.raises(ProfileBuildError, match="lapsed .0.7. <= at risk .0.6."):
        LifecycleSettings(lapsed_p_alive=0.7)
    with pytest.raises(ProfileBuildError, match="at risk .5.0. <= lapsed .4.0."):
        LifecycleSettings(at_risk_gaps=5.0)


def test_names_lead_with_the_dominant_stage_and_join_category_words() -> None:
    names = segment_names(
        [["lapsed", "big-basket", "electronics-focused"], ["books-focused", "toys-focused", "social"], []],
        ["S01", "S02", "S03"],
    )
    assert names == [
        "Lapsed big-basket electronics-focused shoppers",
        "Books and toys social shoppers",
        "Typical shoppers",
    ]
