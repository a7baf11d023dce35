"""Explanations: a segment in business language, with the campaign to run and how sure we are.

The mock fills templates with the segment's own statistics, so every number
it writes passes the faithfulness check by construction (a test holds it to that).
Where the data has no channel, no category or no time of day, a campaign goes
out through the owned channels with the lifecycle offer at the time the
purchase rhythm gives (core.llm.campaigns), as actionability judged it.
"""

from __future__ import annotations

from ..business import Business
from ..schemas import ActionabilityAnswer, CampaignRecommendation, ExplanationAnswer
from .actionability import local_hours, measured_by
from .campaigns import lifecycle_offer, owned_channel_evidence, rhythm_timing, stage_words
from .facts import DayPart, LabelShare, SegmentFacts, main_label, percent

#: The weakest robustness test a segment needs for each confidence level: Hennig's (2007) bands of a
#: cluster's Jaccard stability, 0.85 highly stable and 0.75 stable, applied to the test that disturbs the
#: segment most rather than to the weighted mean (a segment is as sure as its weakest evidence: on the
#: demo data the mean put 18 of 21 segments in "highly stable", the weakest tests spread from 0.55 to 0.93).
HIGH_CONFIDENCE_ROBUSTNESS = 0.85
MEDIUM_CONFIDENCE_ROBUSTNESS = 0.75
#: A secondary channel is recommended when it carries at least this share of the segment's events.
SECONDARY_CHANNEL_SHARE = 0.2
#: A day part, or weekends or weekdays, is a timing preference only this much above the population.
TIMING_LIFT = 1.2


def weakest_of(
    time_window: float | None, feature_drop: float | None, bootstrap: float | None
) -> tuple[str, float] | None:
    """The robustness test that disturbs a segment most, and its score; None when none was run.
    The answers and the report judge confidence and stability by it."""
    scores = [
        (name, score)
        for name, score in (("time window", time_window), ("feature drop", feature_drop), ("bootstrap", bootstrap))
        if score is not None
    ]
    return min(scores, key=lambda item: item[1]) if scores else None


def weakest_test(facts: SegmentFacts) -> tuple[str, float] | None:
    """The robustness test that disturbs the segment most, and its score; None when none was run."""
    robustness = facts.robustness
    return weakest_of(robustness.time_window, robustness.feature_drop, robustness.bootstrap)


def confidence_level(facts: SegmentFacts) -> str:
    """By the weakest robustness test: high from HIGH_CONFIDENCE_ROBUSTNESS (and production-ready), medium
    from MEDIUM_CONFIDENCE_ROBUSTNESS, low below it or when no test could be run."""
    weakest = weakest_test(facts)
    if weakest is None:
        return "low"
    if facts.robustness.production_ready and weakest[1] >= HIGH_CONFIDENCE_ROBUSTNESS:
        return "high"
    if weakest[1] >= MEDIUM_CONFIDENCE_ROBUSTNESS:
        return "medium"
    return "low"


def mock_explanation(
    facts: SegmentFacts, actionability: ActionabilityAnswer, business: Business | None = None
) -> ExplanationAnswer:
    business = business or Business()
    targeted = facts.viability.approved and actionability.actionable
    return ExplanationAnswer(
        executive_summary=_summary(facts, actionability, targeted, business),
        recommendations=_recommendations(facts, business) if targeted else [],
        expected_roi=facts.viability.expected_roi,
        confidence_level=confidence_level(facts),
        confidence_justification=_justification(facts),
    )


def roi_percent(roi: float) -> str:
    """A net ROI as a percentage of the cost: 11.91 -> '1,191%' (the number a marketer reads)."""
    return f"{roi * 100:,.0f}%"


def _summary(facts: SegmentFacts, actionability: ActionabilityAnswer, targeted: bool, business: Business) -> str:
    sentences = [
        f"{facts.name}: {facts.customers:,} customers ({percent(facts.share_of_customers)} of "
        f"{facts.population_customers:,}) with a mean CLV of {business.money(facts.mean_clv, 2)} "
        + (
            f"({facts.clv_vs_population:.2f}x the average of {business.money(facts.population_mean_clv, 2)})."
            if facts.clv_vs_population is not None
            else "."
        )
    ]
    habits = [
        text
        for text in (
            _label_phrase(main_label(facts.categories), "buy mostly", "of their activity"),
            _lifecycle_phrase(facts),
            _label_phrase(main_label(facts.channels), "come through", "of their events"),
            _day_part_phrase(_preferred_day_part(facts), facts, business),
            _rhythm_phrase(facts),
            _days_phrase(facts),
        )
        if text
    ]
    if habits:
        sentences.append("They " + "; ".join(habits) + ".")
    roi = facts.viability.expected_roi
    if targeted:
        sentences.append(
            f"Worth a campaign: an expected return of {roi_percent(roi)} on its cost of "
            f"{business.money(facts.viability.cost_per_customer, 2)} per customer."
        )
    elif not facts.viability.approved:
        sentences.append("Not worth a campaign now: " + "; ".join(facts.viability.reasons) + ".")
    else:
        sentences.append(actionability.reason)
    return " ".join(sentences)


def _label_phrase(main: LabelShare | None, verb: str, what: str) -> str:
    if main is None:
        return ""
    return f"{verb} {main.label} ({percent(main.share)} {what} against {percent(main.population_share)} overall)"


def _lifecycle_phrase(facts: SegmentFacts) -> str:
    """Where the segment's customers are in their life, when that stands in for the categories."""
    offer = lifecycle_offer(facts) if facts.categories_in_population < 2 else None
    if offer is None:
        return ""
    stage = offer.stage
    return (
        f"are {'mostly' if stage.share >= 0.5 else 'most often'} {stage_words(stage.label)} "
        f"({percent(stage.share)} against {percent(stage.population_share)} overall)"
    )


def _rhythm_phrase(facts: SegmentFacts) -> str:
    """How often they buy and how long ago, when the data has no time of day to tell their habits by."""
    rhythm = facts.rhythm
    if facts.day_parts or rhythm is None or rhythm.median_days_since_purchase is None:
        return ""
    since = f"last bought {rhythm.median_days_since_purchase} days ago at the median"
    if rhythm.median_days_between_purchases is None:
        return f"have not bought twice; {since}"
    return (
        f"{since}, and the repeat buyers among them ({percent(rhythm.repeat_buyer_share)}) buy every "
        f"{rhythm.median_days_between_purchases} days"
    )


def _preferred_day_part(facts: SegmentFacts) -> DayPart | None:
    """The day part the segment is most active in, if that is clearly more than the population."""
    peak = main_label(facts.day_parts)
    return peak if isinstance(peak, DayPart) and (peak.lift or 0.0) >= TIMING_LIFT else None


def _preferred_days(facts: SegmentFacts) -> str | None:
    """'weekends' or 'weekdays' where the segment clearly prefers them over the population."""
    if facts.weekend_lift is not None and facts.weekend_lift >= TIMING_LIFT:
        return "weekends"
    if facts.weekday_lift is not None and facts.weekday_lift >= TIMING_LIFT:
        return "weekdays"
    return None


def _day_part_phrase(peak: DayPart | None, facts: SegmentFacts, business: Business) -> str:
    if peak is None:
        return ""
    return (
        f"are most active in the {peak.label}, {local_hours(peak, facts, business)} ({percent(peak.share)} of "
        "their activity "
        f"against {percent(peak.population_share)} overall)"
    )


def _days_phrase(facts: SegmentFacts) -> str:
    days = _preferred_days(facts)
    if days is None:
        return ""
    if days == "weekends":
        share, population = facts.weekend_share, facts.population_weekend_share
    else:
        share, population = facts.weekday_share, facts.population_weekday_share
    return f"prefer {days} ({percent(share)} of their activity against {percent(population)} overall)"


def _timing(facts: SegmentFacts, business: Business) -> str:
    """Days and day parts the segment prefers, in the business's time zone; without times of day, the
    purchase rhythm first."""
    peak = _preferred_day_part(facts)
    parts = [_preferred_days(facts), f"{peak.label}, {local_hours(peak, facts, business)}" if peak else None]
    days = ", ".join(part for part in parts if part)
    rhythm = None if facts.day_parts else rhythm_timing(facts.rhythm)
    if rhythm:
        return f"{rhythm}; {days}" if days else rhythm
    return days or "any time"


#: With product categories, the offer of a segment most of whose customers are in one lifecycle stage
#: is that stage's, on the range they buy (active customers get the value-led offers below).
RANGE_OFFERS: dict[str, str] = {
    "win-back": "a win-back offer on {range}: a reason to come back",
    "reactivation": "a reactivation offer on {range} before they drift away",
    "second-purchase nudge": "a second-purchase nudge on {range}",
    "first-purchase welcome": "a first-purchase welcome offer on {range}",
    "loyalty reward": "a loyalty reward: early access to {range}",
}
#: The share of a segment one stage must hold for its offer to be the stage's.
STAGE_LEADS_FROM = 0.6


def _offer(facts: SegmentFacts) -> str:
    lifecycle = lifecycle_offer(facts)
    if lifecycle is not None and facts.categories_in_population < 2:
        return lifecycle.proposal(facts)
    category = main_label(facts.categories)
    range_ = f"the {category.label} range" if category else "the range they buy"
    if lifecycle is not None and lifecycle.stage.share >= STAGE_LEADS_FROM and lifecycle.offer in RANGE_OFFERS:
        return RANGE_OFFERS[lifecycle.offer].format(range=range_)
    ratio = facts.clv_vs_population
    if ratio is not None and ratio >= 1.5:
        return f"early access and premium bundles from {range_}"
    at_risk = (
        facts.churn_risk is not None
        and facts.population_churn_risk is not None
        and facts.churn_risk > facts.population_churn_risk
    )
    if at_risk:
        return f"a win-back discount on {range_}"
    return f"a cross-sell offer from {range_}"


def over_indexed_channels(facts: SegmentFacts) -> list[LabelShare]:
    """The segment's channels it uses more than the whole base does (lift above 1), largest share first."""
    return sorted(
        (item for item in facts.channels if item.lift is not None and item.lift > 1.0),
        key=lambda item: (-item.share, item.label),
    )


def allowed_channels(facts: SegmentFacts, owned_channels: tuple[str, ...] | list[str]) -> set[str]:
    """Channels a campaign for the segment may use: those it over-indexes on, and the owned ones."""
    return {item.label.lower() for item in over_indexed_channels(facts)} | {
        channel.lower() for channel in owned_channels
    }


def _recommendations(facts: SegmentFacts, business: Business) -> list[CampaignRecommendation]:
    owned_channels = business.owned_channels
    channels = over_indexed_channels(facts)
    if measured_by(facts, owned_channels)["how"] == "owned channels" or (facts.channels and not channels):
        # No channel in the data, or none the segment uses more than the whole base: the owned channels.
        return [
            CampaignRecommendation(
                channel=channel,
                timing=_timing(facts, business),
                offer=_offer(facts),
                audience_size=facts.customers,
                rationale=" ".join(
                    [
                        owned_channel_evidence([channel])
                        if not facts.channels
                        else f"No channel stands out for the segment: the owned channel {channel}.",
                        *_offer_and_timing_rationale(facts),
                    ]
                ),
            )
            for channel in owned_channels
        ]
    if not channels:
        return [
            CampaignRecommendation(
                channel="the channel the customer last bought through",
                timing=_timing(facts, business),
                offer=_offer(facts),
                audience_size=facts.customers,
                rationale="The source records no channels; timing and offer follow the segment's purchases.",
            )
        ]
    recommendations = []
    for channel in channels[:2]:
        if recommendations and channel.share < SECONDARY_CHANNEL_SHARE:
            break
        lift = f", {channel.lift:.2f}x the population's rate" if channel.lift is not None else ""
        recommendations.append(
            CampaignRecommendation(
                channel=channel.label,
                timing=_timing(facts, business),
                offer=_offer(facts),
                audience_size=facts.customers,
                rationale=f"{percent(channel.share)} of the segment's events come through {channel.label}{lift}.",
            )
        )
    return recommendations


def _offer_and_timing_rationale(facts: SegmentFacts) -> list[str]:
    """Why this offer and this timing, where they come from the lifecycle and the rhythm."""
    sentences = []
    lifecycle = lifecycle_offer(facts) if facts.categories_in_population < 2 else None
    if lifecycle is not None:
        sentences.append(
            f"The {lifecycle.offer} fits the {percent(lifecycle.stage.share)} who are "
            f"{stage_words(lifecycle.stage.label)}."
        )
    rhythm = facts.rhythm
    if not facts.day_parts and rhythm is not None and rhythm_timing(rhythm) is not None:
        sentences.append(
            f"Timed by their purchase rhythm: {percent(rhythm.repeat_buyer_share)} of them are repeat buyers."
        )
    return sentences


def _justification(facts: SegmentFacts) -> str:
    robustness = facts.robustness
    tests = [
        f"{name} {score:.2f}"
        for name, score in (
            ("bootstrap", robustness.bootstrap),
            ("time window", robustness.time_window),
            ("feature drop", robustness.feature_drop),
        )
        if score is not None
    ]
    if robustness.overall is None:
        return f"No robustness test could be run on the segment; {facts.customers:,} customers."
    ready = "production-ready" if robustness.production_ready else "not production-ready"
    return (
        f"Robustness {robustness.overall:.2f} ({robustness.band.replace('_', ' ')}, {ready}): "
        + ", ".join(tests)
        + f"; {facts.customers:,} customers."
    )
