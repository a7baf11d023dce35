"""The prompts, in one place, with their version.

Change PROMPT_VERSION with any change to the wording below or to the answer
models: the version is part of every cache key, so old answers are not
served for new prompts.
"""

from __future__ import annotations

import json
from datetime import date

from pydantic import BaseModel

from ..business import CURRENCY_SIGNS, Business
from ..schemas import ActionabilityAnswer, ExplanationAnswer
from .actionability import NOT_MEASURABLE, Rubric, measured_by
from .campaigns import LIFECYCLE_OFFERS, OWNED_CHANNEL_SCORE
from .facts import DAY_PART_HOURS, SegmentFacts

PROMPT_VERSION = "2026-12-06.1"

#: The statistics travel between these markers, as one JSON document.
STATISTICS_OPEN = "<statistics>"
STATISTICS_CLOSE = "</statistics>"

SYSTEM = """You are a senior marketing analyst. You judge customer segments for campaign targeting and \
explain them to a marketing team in plain business language.

You see aggregate statistics of one segment and of the whole customer population, never individual \
customers. Shares are fractions of the segment's events (0.25 = 25%), but lifecycle and repeat-buyer \
shares are fractions of its customers; lift is the segment's share divided by the population's, CLV is \
expected revenue per customer, and the rhythm's medians are whole days. Money is in business.currency: \
write every amount with it as business.money_example shows. Day parts are counted in UTC; write their \
hours as business.day_part_hours gives them, in the business's time zone, with its name.

Rules for every answer:
- Quote only numbers that appear in the statistics, as given or a share written as a percentage \
(0.491 -> 49.1%), with their sign. Do not compute new numbers, sums or differences, and do not add \
figures of your own (discounts, durations, prices): every number you write is checked.
- Do not invent customers, products, prices or dates.
- Answer with one JSON object that matches the JSON schema you are given, and nothing else."""

ACTIONABILITY_TASK = """Judge whether this segment is actionable: can a campaign say WHAT to offer, WHEN to \
send it, HOW to reach the customers and WHO they are worth?

Judge each dimension only by what the data supports: measured_by in the statistics names what each \
dimension is measured by. Where measured_by is null the dimension is {not_measurable}: answer its score \
as null (never 0) and its evidence as "{not_measurable_sentence}: " and what the data lacks. Score every \
other dimension from 0 (nothing to act on) to 1 (perfectly clear), with the evidence from the statistics \
behind the score:
- WHAT, by product categories: a category with a large share of the segment's activity and a high lift. \
By lifecycle stage (no categories in the data): the offer of the segment's largest lifecycle stage \
({offers}); the score is that stage's share of the segment.
- WHEN, by time of day and weekends: activity concentrated in a day part or on weekends or weekdays, \
against the population. By purchase rhythm (no time of day in the data): the score is \
rhythm.repeat_buyer_share, the share of the segment with a rhythm of its own to time a campaign by; \
with weekends measured too, the stronger of the two plus a quarter of the weaker, at most 1.
- HOW, by channels: a channel with a large share of the segment's events and a high lift. By owned \
channels (no channel in the data): the rubric's owned_channels reach the customers but show no \
preference; score {owned_score} and say "No channel in the data: the owned channel ..." in the evidence.
- WHO, by customer lifetime value: mean CLV against the population's (clv_vs_population), churn risk.

Rubric for the verdict: {{rubric}}
Give the reason for the verdict in one or two sentences.""".format(
    not_measurable=NOT_MEASURABLE,
    not_measurable_sentence=NOT_MEASURABLE[0].upper() + NOT_MEASURABLE[1:],
    offers=", ".join(f"{stage}: {offer}" for stage, offer in LIFECYCLE_OFFERS.items()),
    owned_score=OWNED_CHANNEL_SCORE,
)

EXPLANATION_TASK = """Explain this segment to the marketing team.

- executive_summary: who these customers are, how many, what they are worth, and whether to target them.
- recommendations: campaigns to run (channel, timing, offer, audience size, rationale). Recommend \
campaigns only if viability.approved and actionability.actionable are both true; otherwise leave \
the list empty and say why in the summary. Timing names days (weekends, weekdays) and day parts \
with their hours from the statistics; the audience size is at most the segment's customers. Where the \
data has no channel (segment.channels_in_population below 2), recommend the owned_channels; where it has \
no categories, offer the lifecycle offer actionability judged WHAT by; where it has no time of day \
(segment.day_parts empty), time the campaign by segment.rhythm: within rhythm.reorder_window_days of the \
usual reorder day (median_days_between_purchases after the last purchase; the population's for customers \
who have not bought twice), or now when median_days_since_purchase is already past it. A campaign uses a \
channel only where the segment over-indexes on it (its lift above 1) or an owned channel; where no channel \
of the segment has a lift above 1, use the owned_channels.
- expected_roi: the viability statistics' expected_roi.
- confidence_level: high, medium or low, from robustness (overall, band, production_ready) and size; \
confidence_justification quotes the numbers behind it."""

RETRY = """Your answer was rejected:
{problems}
Answer again with one JSON object that matches the JSON schema, quoting only numbers from the statistics."""


def business_statistics(facts: SegmentFacts, business: Business) -> dict:
    """The business the answer is written for: its currency, and the day parts' hours in its time zone."""
    on = date.fromisoformat(facts.as_of)
    sign = CURRENCY_SIGNS.get(business.currency)
    return {
        "currency": business.currency,
        "money_example": f"{sign}1,234.50" if sign else f"{business.currency} 1,234.50",
        "timezone": business.zone_label,
        "day_part_hours": {
            part: f"{business.local_hours(hours, on)} {business.zone_label}" for part, hours in DAY_PART_HOURS.items()
        },
    }


def actionability_statistics(facts: SegmentFacts, rubric: Rubric) -> dict:
    return {
        "segment": facts.model_dump(),
        "rubric": rubric.model_dump(),
        "measured_by": measured_by(facts, rubric.owned_channels),
        "business": business_statistics(facts, rubric.business),
    }


def explanation_statistics(facts: SegmentFacts, actionability: ActionabilityAnswer, business: Business) -> dict:
    return {
        "segment": facts.model_dump(),
        "actionability": actionability.model_dump(),
        "owned_channels": list(business.owned_channels),
        "business": business_statistics(facts, business),
    }


def messages(task: str, statistics: dict, answer_model: type[BaseModel]) -> list[dict[str, str]]:
    """The chat messages of one request: the rules, then the task, the statistics and the answer schema."""
    user = "\n\n".join(
        [
            task,
            f"{STATISTICS_OPEN}\n{json.dumps(statistics, indent=1, ensure_ascii=False, allow_nan=False)}\n"
            f"{STATISTICS_CLOSE}",
            "JSON schema of the answer:\n" + json.dumps(answer_model.model_json_schema(), sort_keys=True),
        ]
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def actionability_messages(facts: SegmentFacts, rubric: Rubric) -> list[dict[str, str]]:
    return messages(
        ACTIONABILITY_TASK.format(rubric=rubric.describe()),
        actionability_statistics(facts, rubric),
        ActionabilityAnswer,
    )


def explanation_messages(
    facts: SegmentFacts, actionability: ActionabilityAnswer, business: Business | None = None
) -> list[dict[str, str]]:
    return messages(
        EXPLANATION_TASK, explanation_statistics(facts, actionability, business or Business()), ExplanationAnswer
    )


def retry_messages(answer_text: str, problems: list[str]) -> list[dict[str, str]]:
    """What follows a rejected answer: the answer itself, then what was wrong with it."""
    listed = "\n".join(f"- {problem}" for problem in problems)
    return [{"role": "assistant", "content": answer_text}, {"role": "user", "content": RETRY.format(problems=listed)}]


def statistics_of(user_message: str) -> dict:
    """The statistics document inside a user message (what a provider was given)."""
    start = user_message.index(STATISTICS_OPEN) + len(STATISTICS_OPEN)
    return json.loads(user_message[start : user_message.index(STATISTICS_CLOSE)])
