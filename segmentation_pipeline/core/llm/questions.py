"""The two questions asked about every segment, each with its check and its fallback."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
from pydantic import BaseModel

from ..business import Business
from ..errors import PipelineError
from ..schemas import ACTIONABILITY, EXPLANATIONS, ActionabilityAnswer, ExplanationAnswer
from .actionability import DIMENSIONS, Rubric, measured_by, mock_actionability, verdict_problems
from .explainer import allowed_channels, mock_explanation
from .facts import SegmentFacts
from .faithfulness import Statistics, unfaithful
from .prompts import (
    actionability_messages,
    actionability_statistics,
    explanation_messages,
    explanation_statistics,
)
from .runner import Answered, Answerer, Question

#: Numeric fields that are the answer's own judgement, not quotes of the statistics.
JUDGED_FIELDS = tuple(f"{dimension}_score" for dimension in DIMENSIONS)
#: Difference from the statistics' expected ROI still read as the same number.
ROI_TOLERANCE = 0.005


def actionability_question(facts: SegmentFacts, rubric: Rubric) -> Question:
    statistics = Statistics([actionability_statistics(facts, rubric)])
    measured = measured_by(facts, rubric.owned_channels)

    def check(answer: ActionabilityAnswer) -> list[str]:
        return unfaithful(answer, statistics, judged=JUDGED_FIELDS) + verdict_problems(
            answer, rubric, measured, facts.viability.approved
        )

    return Question(
        kind="actionability",
        segment_id=facts.segment_id,
        statistics_sha256=facts.sha256,
        messages=actionability_messages(facts, rubric),
        statistics=statistics,
        judged=JUDGED_FIELDS,
        answer_model=ActionabilityAnswer,
        check=check,
        fallback=lambda: mock_actionability(facts, rubric),
    )


def explanation_question(
    facts: SegmentFacts, actionability: ActionabilityAnswer, business: Business | None = None
) -> Question:
    """`business`: that of the rubric the actionability answer was judged by (its currency and time zone,
    and the owned channels campaigns may always go through)."""
    business = business or Business()
    statistics = Statistics([explanation_statistics(facts, actionability, business)])

    def check(answer: ExplanationAnswer) -> list[str]:
        return unfaithful(answer, statistics) + explanation_problems(
            answer, facts, actionability, business.owned_channels
        )

    return Question(
        kind="explanation",
        segment_id=facts.segment_id,
        statistics_sha256=facts.sha256,
        messages=explanation_messages(facts, actionability, business),
        statistics=statistics,
        judged=(),
        answer_model=ExplanationAnswer,
        check=check,
        fallback=lambda: mock_explanation(facts, actionability, business),
    )


def explanation_problems(
    answer: ExplanationAnswer,
    facts: SegmentFacts,
    actionability: ActionabilityAnswer,
    owned_channels: Sequence[str] = Business().owned_channels,
) -> list[str]:
    """What an explanation must agree with beyond quoting real numbers."""
    problems = []
    expected, given = facts.viability.expected_roi, answer.expected_roi
    if (expected is None) != (given is None) or (expected is not None and abs(given - expected) > ROI_TOLERANCE):
        problems.append(
            f"expected_roi {answer.expected_roi} is not the viability's expected ROI {facts.viability.expected_roi}"
        )
    targeted = facts.viability.approved and actionability.actionable
    if answer.recommendations and not targeted:
        problems.append(
            "recommends campaigns for a segment that is "
            + ("not approved by viability" if not facts.viability.approved else "not actionable")
        )
    allowed = allowed_channels(facts, list(owned_channels))
    for index, recommendation in enumerate(answer.recommendations):
        channel = recommendation.channel.strip().lower()
        if facts.channels and allowed and channel not in allowed:
            problems.append(
                f"recommendations[{index}].channel {recommendation.channel!r} is one the segment does not use more "
                f"than the whole base (lift above 1) and not an owned channel; use one of {sorted(allowed)}"
            )
        if recommendation.audience_size > facts.customers:
            problems.append(
                f"recommendations[{index}].audience_size {recommendation.audience_size} exceeds the segment's "
                f"{facts.customers} customers"
            )
    return problems


def evaluate_actionability(facts: Sequence[SegmentFacts], rubric: Rubric, answerer: Answerer) -> list[Answered]:
    return answerer.answer_all([actionability_question(item, rubric) for item in facts])


def explain_segments(
    facts: Sequence[SegmentFacts],
    evaluations: dict[str, ActionabilityAnswer],
    answerer: Answerer,
    business: Business | None = None,
) -> list[Answered]:
    return answerer.answer_all([explanation_question(item, evaluations[item.segment_id], business) for item in facts])


def answers_table(answered: Sequence[Answered], kind: str) -> pa.Table:
    spec = ACTIONABILITY if kind == "actionability" else EXPLANATIONS
    return pa.Table.from_pylist([item.row() for item in answered], schema=spec.schema)


def stored_answers(table: pa.Table, answer_model: type[BaseModel]) -> dict[str, BaseModel]:
    """The answers of a stored actionability or explanations table, by segment."""
    fields = set(answer_model.model_fields)
    return {row["segment_id"]: answer_model(**{name: row[name] for name in fields}) for row in table.to_pylist()}


def stored_evaluations(table: pa.Table) -> dict[str, ActionabilityAnswer]:
    return stored_answers(table, ActionabilityAnswer)


def stale_answers(facts: Sequence[SegmentFacts], answers: pa.Table) -> list[str]:
    """What is wrong with stored answers for this snapshot: segments without one, or answers made from
    other statistics (a stage upstream re-ran after them)."""
    given = dict(zip(answers["segment_id"].to_pylist(), answers["statistics_sha256"].to_pylist()))
    problems = []
    for item in facts:
        if item.segment_id not in given:
            problems.append(f"{item.segment_id}: no answer")
        elif given[item.segment_id] != item.sha256:
            problems.append(f"{item.segment_id}: answered on other statistics than the stored snapshot's")
    return problems


def current_evaluations(facts: Sequence[SegmentFacts], table: pa.Table) -> dict[str, ActionabilityAnswer]:
    """The stored actionability answers, if they were made from these statistics."""
    problems = stale_answers(facts, table)
    if problems:
        raise PipelineError(
            f"actionability does not match the snapshot ({'; '.join(problems)}); "
            "materialize actionability for this day again first"
        )
    return stored_evaluations(table)


def answers_faithful(
    facts: Sequence[SegmentFacts], answers: pa.Table, kind: str, rubric: Rubric, evaluations: pa.Table
) -> list[str]:
    """Every quoted number of stored answers that the snapshot's statistics do not hold, as '<segment>: ...'.

    Each answer is read against the question it answered; explanations against the stored
    actionability answers they were given, with the rubric's owned channels.
    """
    if kind == "actionability":
        model: type[BaseModel] = ActionabilityAnswer
        questions = {item.segment_id: actionability_question(item, rubric) for item in facts}
    else:
        model = ExplanationAnswer
        given = stored_evaluations(evaluations)
        questions = {
            item.segment_id: explanation_question(item, given[item.segment_id], rubric.business)
            for item in facts
            if item.segment_id in given
        }
    problems = stale_answers(facts, answers)
    for segment_id, answer in stored_answers(answers, model).items():
        question = questions.get(segment_id)
        if question is None:
            problems.append(f"{segment_id}: no statistics for this segment in the snapshot")
            continue
        problems += [f"{segment_id}: {problem}" for problem in unfaithful(answer, question.statistics, question.judged)]
    return problems
