"""What a campaign is built from when the data lacks categories, channels or times of day.

A transaction log (customer, date, amount) says nothing of products, channels or
hours, yet a campaign can still be aimed at its customers:

- WHAT: the lifecycle offer of the segment's largest lifecycle stage (a lapsed
  segment gets a win-back, new one-time buyers a second-purchase nudge);
- HOW: the channels the business owns (email by default), which reach its
  customers whatever the data records;
- WHEN: the purchase rhythm: within a few days of the usual reorder day, or now
  for customers already past it.

The actionability mock scores these, the explainer writes them into campaigns,
and the prompt hands the same rules to a language model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .facts import LabelShare, PurchaseRhythm, SegmentFacts, main_label, percent

#: The offer for a segment whose largest lifecycle stage is the key.
LIFECYCLE_OFFERS: dict[str, str] = {
    "lapsed": "win-back",
    "at_risk": "reactivation",
    "loyal": "loyalty reward",
    "new": "second-purchase nudge",
    "active": "upsell by basket size",
    "prospect": "first-purchase welcome",
}
#: The stage as a marketer says it, in the plural.
STAGE_WORDS: dict[str, str] = {
    "lapsed": "lapsed customers",
    "at_risk": "at-risk customers",
    "loyal": "loyal customers",
    "new": "new customers",
    "active": "active customers",
    "prospect": "prospects who have not bought yet",
}
#: HOW by an owned channel: certain to reach the customers (the business owns it), silent on whether
#: they prefer it. Midway, so it is strong at the default threshold but never more than that.
OWNED_CHANNEL_SCORE = 0.5


def stage_words(stage: str) -> str:
    return STAGE_WORDS.get(stage, stage.replace("_", " ") + " customers")


@dataclass(frozen=True)
class LifecycleOffer:
    """The offer for a segment and the stage it is for; its score is how much of the segment that stage is."""

    stage: LabelShare
    offer: str

    @property
    def score(self) -> float:
        return round(self.stage.share, 2)

    def evidence(self) -> str:
        return (
            f"No product categories in the data: the lifecycle offer is a {self.offer}, for the "
            f"{percent(self.stage.share)} of the segment who are {stage_words(self.stage.label)} "
            f"(population: {percent(self.stage.population_share)})."
        )

    def proposal(self, facts: SegmentFacts) -> str:
        """The offer as a campaign states it."""
        if self.offer == "win-back":
            return "a win-back offer: a reason to come back for customers who have stopped buying"
        if self.offer == "reactivation":
            return "a reactivation offer: a timely incentive before they drift away"
        if self.offer == "loyalty reward":
            return "a loyalty reward: early access or a thank-you perk for their best customers"
        if self.offer == "second-purchase nudge":
            return "a second-purchase nudge: an incentive on their next order to make first-time buyers regulars"
        if self.offer == "upsell by basket size" and facts.avg_order_value is not None:
            return (
                f"an upsell by basket size: a bundle or free delivery above their average order of "
                f"{facts.avg_order_value:,.2f}"
            )
        if self.offer == "first-purchase welcome":
            return "a first-purchase welcome offer"
        return f"a {self.offer} offer"


def lifecycle_offer(facts: SegmentFacts) -> LifecycleOffer | None:
    """The offer of the segment's largest lifecycle stage; None without a lifecycle mix."""
    stage = main_label(facts.lifecycle or [])
    if stage is None:
        return None
    return LifecycleOffer(stage=stage, offer=LIFECYCLE_OFFERS.get(stage.label, f"{stage.label} stage"))


def owned_channel_evidence(channels: Sequence[str]) -> str:
    listed = " and ".join(channels)
    if len(channels) == 1:
        return f"No channel in the data: the owned channel {listed}, which reaches every customer you can contact."
    return f"No channel in the data: the owned channels {listed}, which reach every customer you can contact."


def rhythm_evidence(rhythm: PurchaseRhythm) -> str:
    """The rhythm as the WHEN evidence states it."""
    if rhythm.repeat_buyers:
        text = (
            f"{percent(rhythm.repeat_buyer_share)} of the segment are repeat buyers "
            f"(population: {percent(rhythm.population_repeat_buyer_share)})"
        )
    else:
        text = (
            "Nobody in the segment has bought on a second day, so there is no rhythm of their own "
            f"(population: {percent(rhythm.population_repeat_buyer_share)} repeat buyers)"
        )
    if rhythm.median_days_between_purchases is not None:
        text += f", buying every {rhythm.median_days_between_purchases} days at the median"
    if rhythm.median_days_since_purchase is not None:
        text += f"; {rhythm.median_days_since_purchase} days since their last purchase at the median"
    return text


def rhythm_timing(rhythm: PurchaseRhythm | None) -> str | None:
    """When to send by the purchase rhythm: near the usual reorder day, or now for customers past it.

    Customers without a repeat purchase of their own are timed by the population's rhythm (their
    second purchase is due when repeat buyers usually buy again). None when neither rhythm is known.
    """
    if rhythm is None or rhythm.median_days_since_purchase is None:
        return None
    since, window = rhythm.median_days_since_purchase, rhythm.reorder_window_days
    own = rhythm.median_days_between_purchases
    gap = own if own is not None else rhythm.population_median_days_between_purchases
    if gap is None:
        return None
    day = "their usual reorder day" if own is not None else "the usual second-purchase day"
    rhythm_text = f"they buy every {gap} days" if own is not None else f"repeat buyers buy again every {gap} days"
    if since < gap:
        return f"within {window} days of {day}: {rhythm_text} and last bought {since} days ago (medians)"
    return f"now: {since} days since their last purchase, past {day} ({rhythm_text}; medians)"
