"""Actionability: can a campaign say WHAT to offer, WHEN, HOW to reach them and WHO they are worth?

The rubric is written once here. The prompt hands it to the language model,
the mock applies it to the statistics, and every answer's verdict is held to
it (an answer whose verdict contradicts its own scores is rejected).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..schemas import ACTIONABILITY_DIMENSIONS, ActionabilityAnswer
from .facts import LabelShare, SegmentFacts, main_label, percent

DIMENSIONS = ACTIONABILITY_DIMENSIONS


class Rubric(BaseModel):
    """When a dimension counts as strong and how many strong ones make a segment actionable."""

    model_config = ConfigDict(frozen=True)

    strong_score: float = Field(
        default=0.5, ge=0, le=1, description="A dimension scoring at least this is clear enough to act on."
    )
    min_strong_dimensions: int = Field(
        default=3,
        ge=1,
        le=4,
        description="A segment is actionable when at least this many of WHAT/WHEN/HOW/WHO are strong.",
    )

    def verdict(self, scores: dict[str, float]) -> bool:
        return len(self.strong(scores)) >= self.min_strong_dimensions

    def strong(self, scores: dict[str, float]) -> list[str]:
        return [dimension for dimension in DIMENSIONS if scores[dimension] >= self.strong_score]

    def describe(self) -> str:
        return (
            f"A dimension is strong when its score is at least {self.strong_score}. The segment is actionable "
            f"when at least {self.min_strong_dimensions} of the 4 dimensions are strong, and not otherwise."
        )


def scores_of(answer: ActionabilityAnswer) -> dict[str, float]:
    return {dimension: getattr(answer, f"{dimension}_score") for dimension in DIMENSIONS}


def verdict_problems(answer: ActionabilityAnswer, rubric: Rubric) -> list[str]:
    expected = rubric.verdict(scores_of(answer))
    if answer.actionable != expected:
        strong = rubric.strong(scores_of(answer))
        return [
            f"actionable is {str(answer.actionable).lower()} but {len(strong)} dimension(s) score at least "
            f"{rubric.strong_score} ({', '.join(strong) or 'none'}); the rubric makes it {str(expected).lower()}"
        ]
    return []


# ---------------------------------------------------------------- the mock's judgement

#: Lift at which a label's over-representation counts in full: three times as common as
#: overall for categories and channels, twice for a day part or the weekend.
FULL_LIFT_LABELS = 3.0
FULL_LIFT_TIMING = 2.0
#: Share at which one label's concentration counts in full: half of all activity.
FULL_SHARE = 0.5
#: The weaker timing pattern (day part or weekend) adds this much of its score to the stronger one.
SECOND_PATTERN_WEIGHT = 0.25


def _clamp(value: float) -> float:
    return max(0.0, min(1.0, value))


def preference_strength(labels: list[LabelShare], n_labels: int, full_lift: float) -> tuple[float, LabelShare | None]:
    """How clearly the segment prefers its main label: half concentration, half distinctiveness.

    Concentration: the main label's share above an even spread over n_labels, full at
    FULL_SHARE. Distinctiveness: its lift over the population, full at `full_lift`.
    """
    main = main_label(labels)
    if main is None or n_labels < 2:
        return 0.0, None
    even = 1.0 / n_labels
    full = FULL_SHARE if even < FULL_SHARE else 1.0
    concentration = _clamp((main.share - even) / (full - even))
    distinct = _clamp(((main.lift or 1.0) - 1.0) / (full_lift - 1.0))
    return round(0.5 * concentration + 0.5 * distinct, 2), main


def mock_actionability(facts: SegmentFacts, rubric: Rubric) -> ActionabilityAnswer:
    """The deterministic judgement: every score and sentence follows from the statistics."""
    what, category = preference_strength(facts.categories, facts.categories_in_population, FULL_LIFT_LABELS)
    how, channel = preference_strength(facts.channels, facts.channels_in_population, FULL_LIFT_LABELS)
    when, when_evidence = _timing(facts)
    who, who_evidence = _value(facts)
    scores = {"what": what, "when": when, "how": how, "who": who}
    strong = rubric.strong(scores)
    weak = [dimension for dimension in DIMENSIONS if dimension not in strong]
    actionable = rubric.verdict(scores)
    reason = (
        f"{len(strong)} of 4 dimensions are strong ({', '.join(d.upper() for d in strong) or 'none'})"
        + (f"; weak: {', '.join(d.upper() for d in weak)}" if weak else "")
        + (
            ": a campaign can be aimed at it."
            if actionable
            else f": fewer than {rubric.min_strong_dimensions} strong dimensions, so no campaign can be aimed at it."
        )
    )
    return ActionabilityAnswer(
        what_score=what,
        what_evidence=_label_evidence(category, "of their activity is in", "no product categories in the source"),
        when_score=when,
        when_evidence=when_evidence,
        how_score=how,
        how_evidence=_label_evidence(channel, "of their events come through", "no channels in the source"),
        who_score=who,
        who_evidence=who_evidence,
        actionable=actionable,
        reason=reason,
    )


def _label_evidence(main: LabelShare | None, verb: str, missing: str) -> str:
    if main is None:
        return f"Nothing to go on: {missing}."
    lift = f", {main.lift:.2f}x" if main.lift is not None else ""
    return f"{percent(main.share)} {verb} {main.label} (population: {percent(main.population_share)}{lift})."


def _timing(facts: SegmentFacts) -> tuple[float, str]:
    """Day parts and weekend against the population: one clear pattern is enough to time a campaign."""
    day_part_score, peak = preference_strength(facts.day_parts, len(facts.day_parts), FULL_LIFT_TIMING)
    weekend_score, weekend_text = 0.0, ""
    if facts.weekend_share is not None and facts.population_weekend_share:
        weekend, overall = facts.weekend_share, facts.population_weekend_share
        on_weekend = weekend >= overall
        lift = weekend / overall if on_weekend else (1 - weekend) / (1 - overall) if overall < 1 else 1.0
        weekend_score = round(_clamp((lift - 1.0) / (FULL_LIFT_TIMING - 1.0)), 2)
        weekend_text = f"{percent(weekend)} of their activity falls on weekends (population: {percent(overall)})"
    if peak is None and not weekend_text:
        return 0.0, "Nothing to go on: no timestamps beyond the purchase dates."
    stronger, weaker = max(day_part_score, weekend_score), min(day_part_score, weekend_score)
    score = round(_clamp(stronger + SECOND_PATTERN_WEIGHT * weaker), 2)
    parts = []
    if peak is not None:
        parts.append(
            f"{percent(peak.share)} of their activity is in the {peak.label} ({peak.hours} UTC; "
            f"population: {percent(peak.population_share)})"
        )
    if weekend_text:
        parts.append(weekend_text)
    return score, "; ".join(parts) + "."


def _value(facts: SegmentFacts) -> tuple[float, str]:
    """Mean CLV against the population's: r / (1 + r), so the average customer scores 0.5."""
    ratio = facts.clv_vs_population
    if ratio is None:
        return 0.0, "Nothing to go on: no customer lifetime value for the population."
    score = round(ratio / (1.0 + ratio), 2)
    text = (
        f"Mean CLV {facts.mean_clv:,.2f} against {facts.population_mean_clv:,.2f} for all customers "
        f"({ratio:.2f}x); {percent(facts.share_of_total_clv)} of all CLV from {percent(facts.share_of_customers)} "
        "of the customers"
    )
    if facts.churn_risk is not None and facts.population_churn_risk is not None:
        text += f"; churn risk {facts.churn_risk:.2f} (population: {facts.population_churn_risk:.2f})"
    return score, text + "."
