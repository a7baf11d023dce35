"""Actionability: can a campaign say WHAT to offer, WHEN, HOW to reach them and WHO they are worth?

The rubric is written once here. The prompt hands it to the language model,
the mock applies it to the statistics, and every answer's verdict is held to
it (an answer whose verdict contradicts its own scores is rejected).

A dimension is judged only by what the data can support, and `measured_by`
says by what. Rich event data: WHAT by product categories, WHEN by times of
day and weekends, HOW by channels, WHO by customer lifetime value. Where the
data lacks them (a transaction log), WHAT is the lifecycle offer of the
segment's largest lifecycle stage, HOW the channels the business owns, WHEN
the purchase rhythm (core.llm.campaigns). A dimension with nothing to judge it
by is not measurable from this data: it has no score (never 0), and the
rubric asks for proportionally fewer strong dimensions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from ..business import DEFAULT_CURRENCY, DEFAULT_OWNED_CHANNELS, DEFAULT_TIMEZONE, Business
from ..schemas import ACTIONABILITY, ACTIONABILITY_DIMENSIONS, ActionabilityAnswer
from ..warehouse import Warehouse
from .campaigns import (
    OWNED_CHANNEL_SCORE,
    lifecycle_offer,
    owned_channel_evidence,
    rhythm_evidence,
)
from .facts import DayPart, LabelShare, SegmentFacts, main_label, percent

DIMENSIONS = ACTIONABILITY_DIMENSIONS
#: How a dimension without a score is shown, in the answers and in the report.
NOT_MEASURABLE = "not measurable from this data"
#: How each dimension reads in a sentence.
DIMENSION_WORDS = {
    "what": "what to offer",
    "when": "when to send",
    "how": "how to reach them",
    "who": "what they are worth",
}
#: The actionability partition's key-value metadata holding the rubric its answers were judged by.
RUBRIC_METADATA_KEY = "rubric"


class Rubric(BaseModel):
    """When a dimension counts as strong, how many strong ones make a segment actionable, and the owned channels."""

    model_config = ConfigDict(frozen=True)

    strong_score: float = Field(
        default=0.5, ge=0, le=1, description="A dimension scoring at least this is clear enough to act on."
    )
    min_strong_dimensions: int = Field(
        default=3,
        ge=1,
        le=4,
        description="A segment is actionable when at least this many of WHAT/WHEN/HOW/WHO are strong. When the "
        "data can measure fewer than 4, proportionally fewer: ceil(this x measurable / 4).",
    )
    owned_channels: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]] = Field(
        default=list(DEFAULT_OWNED_CHANNELS),
        description="Channels the business owns and can reach its customers through. When the data records no "
        "channel, HOW is judged by these; empty makes HOW not measurable from such data.",
    )
    #: The business the answers are written for: money in this currency, times of day in this zone.
    currency: str = Field(default=DEFAULT_CURRENCY, description="ISO 4217 code of the money the answers quote.")
    timezone: str = Field(default=DEFAULT_TIMEZONE, description="IANA time zone of the hours the answers quote.")

    @field_validator("currency", "timezone")
    @classmethod
    def _business_field(cls, value: str, info) -> str:
        return getattr(Business(**{info.field_name: value}), info.field_name)

    @property
    def business(self) -> Business:
        return Business(currency=self.currency, timezone=self.timezone, owned_channels=tuple(self.owned_channels))

    def required(self, measurable: int) -> int:
        """Strong dimensions needed when `measurable` of the 4 can be measured: ceil(min x measurable / 4)."""
        return -(-self.min_strong_dimensions * measurable // len(DIMENSIONS))

    def clear(self, scores: Mapping[str, float | None]) -> bool:
        """Clear enough to aim a campaign at: enough strong dimensions among the measurable ones (None: not
        measurable)."""
        measurable = [dimension for dimension in DIMENSIONS if scores[dimension] is not None]
        return bool(measurable) and len(self.strong(scores)) >= self.required(len(measurable))

    def verdict(self, scores: Mapping[str, float | None], approved: bool = True) -> bool:
        """Actionable: clear enough to aim a campaign at, and approved by viability. A segment not worth a
        campaign is never called actionable for one, however clear its data."""
        return approved and self.clear(scores)

    def strong(self, scores: Mapping[str, float | None]) -> list[str]:
        return [
            dimension
            for dimension in DIMENSIONS
            if scores[dimension] is not None and scores[dimension] >= self.strong_score
        ]

    def describe(self) -> str:
        n = len(DIMENSIONS)
        fewer = ", ".join(f"{self.required(m)} of {m}" for m in range(n - 1, 0, -1))
        return (
            f"A dimension is strong when its score is at least {self.strong_score}. With all {n} dimensions "
            f"measurable, the segment is actionable when at least {self.min_strong_dimensions} of them are strong. "
            f"A dimension the data cannot measure has no score (null, never 0) and is left out: of the measurable "
            f"ones at least ceil({self.min_strong_dimensions} x measurable / {n}) must be strong ({fewer}). "
            "With none measurable the segment is not actionable. A segment viability did not approve "
            "(viability.approved false) is not actionable either, whatever its scores: say in the reason that "
            "the data is clear enough but the segment is not worth a campaign now."
        )


def rubric_metadata(rubric: Rubric) -> dict[str, str]:
    """What the actionability partition stores of its rubric (the explanations read the owned channels back)."""
    return {RUBRIC_METADATA_KEY: rubric.model_dump_json()}


def stored_rubric(warehouse: Warehouse, day: date) -> Rubric:
    """The rubric the stored actionability answers of `day` were judged by; the default for older partitions."""
    stored = warehouse.partition_metadata(ACTIONABILITY, day).get(RUBRIC_METADATA_KEY)
    return Rubric.model_validate(json.loads(stored)) if stored else Rubric()


def measured_by(facts: SegmentFacts, owned_channels: Sequence[str]) -> dict[str, str | None]:
    """What the data lets each dimension be judged by; None: not measurable from this data.

    Categories and channels need at least two labels in the data to show a preference.
    """
    what = (
        "product categories" if facts.categories_in_population >= 2 else "lifecycle stage" if facts.lifecycle else None
    )
    when_parts = [
        "time of day" if facts.day_parts else "purchase rhythm" if facts.rhythm is not None else None,
        "weekends" if facts.weekend_share is not None and facts.population_weekend_share else None,
    ]
    how = "channels" if facts.channels_in_population >= 2 else "owned channels" if owned_channels else None
    return {
        "what": what,
        "when": " and ".join(part for part in when_parts if part) or None,
        "how": how,
        "who": "customer lifetime value" if facts.clv_vs_population is not None else None,
    }


def scores_of(answer: ActionabilityAnswer) -> dict[str, float | None]:
    return {dimension: getattr(answer, f"{dimension}_score") for dimension in DIMENSIONS}


def verdict_problems(
    answer: ActionabilityAnswer,
    rubric: Rubric,
    measured: Mapping[str, str | None] | None = None,
    approved: bool = True,
) -> list[str]:
    """What is wrong with an answer's scores and verdict by the rubric.

    With `measured` (from `measured_by`), a dimension must have a score exactly when the data can measure it;
    `approved`: whether viability approved the segment (a rejected one is never actionable).
    """
    scores = scores_of(answer)
    problems = []
    for dimension, basis in (measured or {}).items():
        score = scores[dimension]
        if basis is None and score is not None:
            problems.append(f"{dimension}_score is {score} but {dimension.upper()} is {NOT_MEASURABLE}: answer null")
        elif basis is not None and score is None:
            problems.append(
                f"{dimension}_score is null but {dimension.upper()} can be measured from this data (by {basis})"
            )
    expected = rubric.verdict(scores, approved)
    if answer.actionable and not approved:
        problems.append(
            "actionable is true but viability did not approve the segment: a segment not worth a campaign is "
            "not actionable, whatever its scores"
        )
    elif answer.actionable != expected:
        strong = rubric.strong(scores)
        measurable = sum(1 for score in scores.values() if score is not None)
        among = (
            ""
            if measurable == len(DIMENSIONS)
            else f" of {measurable} measurable, {rubric.required(measurable)} needed"
        )
        problems.append(
            f"actionable is {str(answer.actionable).lower()} but {len(strong)} dimension(s) score at least "
            f"{rubric.strong_score} ({', '.join(strong) or 'none'}){among}; the rubric makes it {str(expected).lower()}"
        )
    return problems


# ---------------------------------------------------------------- the mock's judgement

#: Lift at which a label's over-representation counts in full: three times as common as
#: overall for categories and channels, twice for a day part or the weekend.
FULL_LIFT_LABELS = 3.0
FULL_LIFT_TIMING = 2.0
#: Share at which one label's concentration counts in full: half of all activity.
FULL_SHARE = 0.5
#: The weaker timing pattern (day part or weekend) adds this much of its score to the stronger one.
SECOND_PATTERN_WEIGHT = 0.25


def local_hours(part: DayPart, facts: SegmentFacts, business: Business) -> str:
    """'19:00-01:00 Europe/Berlin': a day part's hours in the business's time zone on the snapshot's day."""
    return f"{business.local_hours(part.hours, date.fromisoformat(facts.as_of))} {business.zone_label}"


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
    measured = measured_by(facts, rubric.owned_channels)
    business = rubric.business
    judged = {
        "what": _what(facts, measured["what"]),
        "when": _timing(facts, business)
        if measured["when"]
        else (None, _not_measurable("no times of day, weekdays or purchase rhythm")),
        "how": _how(facts, measured["how"], rubric.owned_channels),
        "who": _value(facts, facts.clv_vs_population, business)
        if facts.clv_vs_population is not None
        else (None, _not_measurable("no customer lifetime value for the population")),
    }
    scores = {dimension: score for dimension, (score, _) in judged.items()}
    approved = facts.viability.approved
    actionable = rubric.verdict(scores, approved)
    reason = verdict_reason(scores, rubric, approved)
    return ActionabilityAnswer(
        **{f"{dimension}_score": score for dimension, (score, _) in judged.items()},
        **{f"{dimension}_evidence": evidence for dimension, (_, evidence) in judged.items()},
        actionable=actionable,
        reason=reason,
    )


def verdict_reason(scores: Mapping[str, float | None], rubric: Rubric, approved: bool) -> str:
    """The verdict in a plain sentence or two: what is clear, what is not, and whether a campaign goes out."""
    measurable = [dimension for dimension in DIMENSIONS if scores[dimension] is not None]
    strong = rubric.strong(scores)
    weak = [dimension for dimension in measurable if dimension not in strong]
    unmeasured = [dimension for dimension in DIMENSIONS if dimension not in measurable]
    if not measurable:
        return "Not a campaign target: the data says nothing about what to offer, when, how or what they are worth."
    clear_words = _listed([DIMENSION_WORDS[dimension] for dimension in strong])
    weak_words = _listed([DIMENSION_WORDS[dimension] for dimension in weak])
    gaps = (
        f" The data cannot tell {_listed([DIMENSION_WORDS[dimension] for dimension in unmeasured])}."
        if unmeasured
        else ""
    )
    if rubric.clear(scores):
        known = f"The data is clear on {clear_words}" + (f"; less so on {weak_words}" if weak else "")
        if approved:
            return f"A campaign can be aimed at these customers. {known}.{gaps}"
        return f"Not a campaign target now: it is not worth a campaign, although {known[0].lower()}{known[1:]}.{gaps}"
    needed = rubric.required(len(measurable))
    return (
        "Not a campaign target as it stands: "
        + (f"only {clear_words} is clear" if strong else "nothing is clear enough")
        + f", not {weak_words} ({len(strong)} of {len(measurable)} dimensions clear; {needed} of them needed)."
        + gaps
    )


def _listed(words: list[str]) -> str:
    """'a, b and c'."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1] if words else "nothing"


def _not_measurable(why: str) -> str:
    return f"{NOT_MEASURABLE[0].upper()}{NOT_MEASURABLE[1:]}: {why}."


def _what(facts: SegmentFacts, basis: str | None) -> tuple[float | None, str]:
    """Categories where the data has them; else the lifecycle offer, scored by the share of the segment it fits."""
    if basis == "product categories":
        what, category = preference_strength(facts.categories, facts.categories_in_population, FULL_LIFT_LABELS)
        return what, _label_evidence(category, "of their activity is in", "no product categories in the source")
    offer = lifecycle_offer(facts) if basis == "lifecycle stage" else None
    if offer is None:
        return None, _not_measurable("no product categories and no lifecycle stages")
    return offer.score, offer.evidence()


def _how(facts: SegmentFacts, basis: str | None, owned_channels: Sequence[str]) -> tuple[float | None, str]:
    """Channels where the data has them; else the owned channels, certain to reach but with no preference shown."""
    if basis == "channels":
        how, channel = preference_strength(facts.channels, facts.channels_in_population, FULL_LIFT_LABELS)
        return how, _label_evidence(channel, "of their events come through", "no channels in the source")
    if basis == "owned channels":
        return OWNED_CHANNEL_SCORE, owned_channel_evidence(owned_channels)
    return None, _not_measurable("no channels, and no owned channel set")


def _label_evidence(main: LabelShare | None, verb: str, missing: str) -> str:
    if main is None:
        return f"Nothing to go on: {missing}."
    lift = f", {main.lift:.2f}x" if main.lift is not None else ""
    return f"{percent(main.share)} {verb} {main.label} (population: {percent(main.population_share)}{lift})."


def _timing(facts: SegmentFacts, business: Business) -> tuple[float, str]:
    """One clear pattern is enough to time a campaign: the stronger adds a quarter of the weaker.

    The patterns: the day part against the population where the data has times of day, else the purchase
    rhythm (the share of the segment with a rhythm of its own, i.e. repeat buyers); and weekends against
    the population."""
    first_score, first_text = 0.0, ""
    if facts.day_parts:
        first_score, peak = preference_strength(facts.day_parts, len(facts.day_parts), FULL_LIFT_TIMING)
        if peak is not None:
            first_text = (
                f"{percent(peak.share)} of their activity is in the {peak.label} "
                f"({local_hours(peak, facts, business)}; "
                f"population: {percent(peak.population_share)})"
            )
    elif facts.rhythm is not None:
        first_score = round(_clamp(facts.rhythm.repeat_buyer_share), 2)
        first_text = rhythm_evidence(facts.rhythm)
    weekend_score, weekend_text = 0.0, ""
    if facts.weekend_share is not None and facts.population_weekend_share:
        weekend, overall = facts.weekend_share, facts.population_weekend_share
        on_weekend = weekend >= overall
        lift = weekend / overall if on_weekend else (1 - weekend) / (1 - overall) if overall < 1 else 1.0
        weekend_score = round(_clamp((lift - 1.0) / (FULL_LIFT_TIMING - 1.0)), 2)
        weekend_text = f"{percent(weekend)} of their activity falls on weekends (population: {percent(overall)})"
    if not first_text and not weekend_text:
        return 0.0, "Nothing to go on: no timestamps beyond the purchase dates."
    stronger, weaker = max(first_score, weekend_score), min(first_score, weekend_score)
    score = round(_clamp(stronger + SECOND_PATTERN_WEIGHT * weaker), 2)
    return score, "; ".join(text for text in (first_text, weekend_text) if text) + "."


def _value(facts: SegmentFacts, ratio: float, business: Business) -> tuple[float, str]:
    """Mean CLV against the population's (`ratio`): r / (1 + r), so the average customer scores 0.5."""
    score = round(ratio / (1.0 + ratio), 2)
    text = (
        f"Mean CLV {business.money(facts.mean_clv, 2)} against {business.money(facts.population_mean_clv, 2)} "
        "for all customers "
        f"({ratio:.2f}x); {percent(facts.share_of_total_clv)} of all CLV from {percent(facts.share_of_customers)} "
        "of the customers"
    )
    if facts.churn_risk is not None and facts.population_churn_risk is not None:
        text += f"; churn risk {facts.churn_risk:.2f} (population: {facts.population_churn_risk:.2f})"
    return score, text + "."
