"""The openai provider against a real chat-completions server on 127.0.0.1, started by each test."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import pytest

from segmentation_pipeline.core.business import Business
from segmentation_pipeline.core.errors import LLMIntegrationError
from segmentation_pipeline.core.llm.actionability import Rubric, mock_actionability
from segmentation_pipeline.core.llm.cache import AnswerCache
from segmentation_pipeline.core.llm.facts import (
    DAY_PART_HOURS,
    DayPart,
    LabelShare,
    RobustnessFacts,
    SegmentFacts,
    ViabilityFacts,
)
from segmentation_pipeline.core.llm.prompts import RETRY
from segmentation_pipeline.core.llm.providers import LLMSettings, OpenAICompatibleProvider
from segmentation_pipeline.core.llm.questions import actionability_question, evaluate_actionability, explain_segments
from segmentation_pipeline.core.llm.runner import Answerer
from segmentation_pipeline.core.schemas import ActionabilityAnswer

from .llm_server import (
    CONTENT_PARTS,
    FENCED,
    INVALID_JSON,
    INVENTED,
    INVENTED_NUMBER,
    MODEL_VOICE,
    NO_MESSAGE,
    RATE_LIMITED,
    REFUSAL,
    REQUEST_TIMEOUT,
    SCHEMA_ERROR,
    SERVER_ERROR,
    SLOW,
    UNAUTHORIZED,
    UNDER_INDEXED_CHANNEL,
    VALID,
    ChatServer,
    model_answer,
    running_server,
)

API_KEY = "sk-test-0123456789"


def _labels(shares: dict[str, tuple[float, float]]) -> list[LabelShare]:
    return [
        LabelShare(label=label, share=share, population_share=overall, lift=round(share / overall, 2))
        for label, (share, overall) in shares.items()
    ]


def segment(segment_id: str, focused: bool, approved: bool = True) -> SegmentFacts:
    """A segment with a clear category, channel and day part (focused) or none (diffuse)."""
    category, channel, evening = (0.6, 0.7, 0.7) if focused else (0.2, 0.3, 0.3)
    rest = (1 - evening) / 3
    return SegmentFacts(
        segment_id=segment_id,
        name=f"Segment {segment_id}",
        as_of="2025-12-31",
        traits=[],
        customers=1200 if focused else 3400,
        share_of_customers=0.261 if focused else 0.739,
        population_customers=4600,
        segments_in_snapshot=2,
        mean_clv=310.5 if focused else 80.25,
        population_mean_clv=140.37,
        clv_vs_population=2.21 if focused else 0.57,
        total_clv=372600.0 if focused else 272850.0,
        share_of_total_clv=0.577 if focused else 0.423,
        mean_orders=3.1,
        mean_net_revenue=120.4,
        avg_order_value=38.84,
        mean_days_since_purchase=40.2,
        churn_risk=0.12,
        population_churn_risk=0.2,
        categories=_labels({"books": (category, 0.2), "toys": (1 - category, 0.8)}),
        categories_in_population=2 + 3,
        channels=_labels({"email": (channel, 0.3), "web": (1 - channel, 0.7)}),
        channels_in_population=2,
        weekend_share=0.29,
        population_weekend_share=0.29,
        weekend_lift=1.0,
        weekday_share=0.71,
        population_weekday_share=0.71,
        weekday_lift=1.0,
        day_parts=[
            DayPart(hours=hours, **_labels({part: (evening if part == "evening" else rest, 0.3)})[0].model_dump())
            for part, hours in DAY_PART_HOURS.items()
        ],
        robustness=RobustnessFacts(
            overall=0.91,
            band="highly_stable",
            production_ready=True,
            feature_drop=0.9,
            time_window=0.88,
            bootstrap=0.95,
        ),
        viability=ViabilityFacts(
            approved=approved,
            expected_roi=4.2 if approved else -0.3,
            campaign_cost=2400.0,
            cost_per_customer=2.0,
            incremental_profit=12480.0,
            strategic_tier="high" if approved else "low",
            reasons=["meets every viability criterion (expected ROI 4.20, overall robustness 0.91)"]
            if approved
            else ["expected ROI -0.30 is below the minimum of 0.50"],
        ),
    )


SEGMENTS = [segment("S01", focused=True), segment("S02", focused=False, approved=False)]


@pytest.fixture
def server():
    with running_server(ChatServer()) as state:
        yield state


def settings(server: ChatServer, **overrides: object) -> LLMSettings:
    fields = {
        "provider": "openai",
        "base_url": server.base_url,
        "model": "test-model",
        "api_key": API_KEY,
        "timeout_seconds": 5.0,
        "backoff_seconds": 0.01,
        "max_concurrent_requests": 1,
    }
    return LLMSettings(**(fields | overrides))


def answerer(server: ChatServer, tmp_path: Path, **overrides: object) -> Answerer:
    return Answerer(settings(server, **overrides), AnswerCache(tmp_path / "llm_cache"))


def test_valid_answers_are_used_as_the_model_gave_them(server: ChatServer, tmp_path: Path) -> None:
    asking = answerer(server, tmp_path)
    answered = evaluate_actionability(SEGMENTS, Rubric(), asking)
    assert [item.provenance.source for item in answered] == ["llm", "llm"]
    assert [item.provenance.model for item in answered] == ["test-model", "test-model"]
    for item, request in zip(answered, server.requests):
        assert item.answer.model_dump() == model_answer(request.user_message)
        assert item.answer.reason.startswith(MODEL_VOICE)
    assert len(server.requests) == 2
    usage = asking.usage
    assert (usage.requests, usage.retries, usage.rejected_answers, usage.fallbacks, usage.cache_hits) == (2, 0, 0, 0, 0)
    assert usage.prompt_tokens == sum(
        sum(len(message["content"]) for message in request.body["messages"]) // 4 for request in server.requests
    )
    assert usage.completion_tokens > 0
    # The focused segment is actionable and the diffuse one is not, as the server judged them.
    assert [item.answer.actionable for item in answered] == [True, False]


def test_the_request_is_a_chat_completion_with_the_answer_schema_and_the_key(
    server: ChatServer, tmp_path: Path
) -> None:
    evaluate_actionability(SEGMENTS[:1], Rubric(), answerer(server, tmp_path))
    (request,) = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    body = request.body
    assert body["model"] == "test-model"
    assert body["temperature"] == 0.0
    assert [message["role"] for message in body["messages"]] == ["system", "user"]
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "actionability"
    assert response_format["json_schema"]["schema"] == ActionabilityAnswer.model_json_schema()


@pytest.mark.parametrize(("mode", "expected"), [("json_object", {"type": "json_object"}), ("prompt", None)])
def test_servers_without_schema_enforcement_get_what_they_understand(
    server: ChatServer, tmp_path: Path, mode: str, expected: dict | None
) -> None:
    answered = evaluate_actionability(SEGMENTS[:1], Rubric(), answerer(server, tmp_path, structured_output=mode))
    assert answered[0].provenance.source == "llm"
    assert server.requests[0].body.get("response_format") == expected


def test_invalid_json_is_sent_back_and_the_next_valid_answer_is_used(server: ChatServer, tmp_path: Path) -> None:
    server.queue([INVALID_JSON, VALID])
    asking = answerer(server, tmp_path)
    (answered,) = evaluate_actionability(SEGMENTS[:1], Rubric(), asking)
    assert answered.provenance.source == "llm"
    assert answered.provenance.fallback_reason is None
    assert (asking.usage.requests, asking.usage.rejected_answers, asking.usage.fallbacks) == (2, 1, 0)
    retry = server.requests[1].body["messages"]
    assert len(retry) == 4
    assert retry[2]["role"] == "assistant" and retry[2]["content"].startswith('{"what_score": 0.7')
    assert retry[3]["content"].startswith(RETRY.split("\n")[0])
    assert "not valid JSON" in retry[3]["content"]


def test_a_schema_error_is_sent_back_naming_the_field(server: ChatServer, tmp_path: Path) -> None:
    server.queue([SCHEMA_ERROR, VALID])
    (answered,) = evaluate_actionability(SEGMENTS[:1], Rubric(), answerer(server, tmp_path))
    assert answered.provenance.source == "llm"
    assert "what_score: Field required" in server.requests[1].body["messages"][3]["content"]


def test_an_answer_in_a_code_fence_is_accepted(server: ChatServer, tmp_path: Path) -> None:
    server.queue([FENCED])
    (answered,) = evaluate_actionability(SEGMENTS[:1], Rubric(), answerer(server, tmp_path))
    assert answered.provenance.source == "llm"
    assert answered.answer.model_dump() == model_answer(server.requests[0].user_message)


def test_an_invented_number_is_rejected_like_invalid_json(server: ChatServer, tmp_path: Path) -> None:
    server.queue([INVENTED_NUMBER, VALID])
    asking = answerer(server, tmp_path)
    (answered,) = evaluate_actionability(SEGMENTS[:1], Rubric(), asking)
    assert answered.provenance.source == "llm"
    assert INVENTED not in answered.answer.reason
    assert f"'{INVENTED}' is not in the statistics" in server.requests[1].body["messages"][3]["content"]
    assert asking.usage.rejected_answers == 1


def test_an_answer_that_stays_unfaithful_is_replaced_by_the_mock_and_flagged(
    server: ChatServer, tmp_path: Path
) -> None:
    server.reset(otherwise=INVENTED_NUMBER)
    asking = answerer(server, tmp_path, answer_attempts=3)
    (answered,) = evaluate_actionability(SEGMENTS[:1], Rubric(), asking)
    assert answered.provenance.source == "fallback"
    assert "no valid answer in 3 attempt(s)" in answered.provenance.fallback_reason
    assert INVENTED in answered.provenance.fallback_reason
    assert answered.answer == mock_actionability(SEGMENTS[0], Rubric())
    assert (asking.usage.requests, asking.usage.rejected_answers, asking.usage.fallbacks) == (3, 3, 1)


def test_a_timeout_is_retried(server: ChatServer, tmp_path: Path) -> None:
    server.slow_seconds = 1.0
    server.queue([SLOW, VALID])
    asking = answerer(server, tmp_path, timeout_seconds=0.3)
    (answered,) = evaluate_actionability(SEGMENTS[:1], Rubric(), asking)
    assert answered.provenance.source == "llm"
    assert (asking.usage.requests, asking.usage.retries) == (2, 1)


def test_429_and_500_are_retried_with_growing_backoff(server: ChatServer) -> None:
    server.queue([RATE_LIMITED, SERVER_ERROR, VALID])
    waits: list[float] = []
    provider = OpenAICompatibleProvider(settings(server, backoff_seconds=0.05), sleep=waits.append, jitter=lambda: 1.0)
    asking = Answerer(provider.settings, None, provider=provider)
    (answered,) = evaluate_actionability(SEGMENTS[:1], Rubric(), asking)
    assert answered.provenance.source == "llm"
    assert waits == [0.05, 0.1]
    assert (asking.usage.requests, asking.usage.retries, asking.usage.fallbacks) == (3, 2, 0)


def test_a_server_that_always_fails_ends_in_the_fallback_with_the_flag_set(server: ChatServer, tmp_path: Path) -> None:
    server.reset(otherwise=SERVER_ERROR)
    asking = answerer(server, tmp_path, max_retries=2)
    answered = evaluate_actionability(SEGMENTS, Rubric(), asking)
    assert [item.provenance.source for item in answered] == ["fallback", "fallback"]
    for item, facts in zip(answered, SEGMENTS):
        assert item.answer == mock_actionability(facts, Rubric())
        assert item.provenance.fallback_reason == (
            "provider unavailable: no answer after 3 request(s); last: HTTP 500: InternalServerError"
        )
    assert (asking.usage.requests, asking.usage.retries, asking.usage.fallbacks) == (6, 4, 2)
    # A fallback is not cached: the next run asks again.
    server.reset()
    again = evaluate_actionability(SEGMENTS, Rubric(), answerer(server, tmp_path))
    assert [item.provenance.source for item in again] == ["llm", "llm"]
    assert len(server.requests) == 2


def test_a_second_run_is_served_from_the_cache_without_a_request(server: ChatServer, tmp_path: Path) -> None:
    first = answerer(server, tmp_path)
    evaluations = evaluate_actionability(SEGMENTS, Rubric(), first)
    explained = explain_segments(SEGMENTS, {item.segment_id: item.answer for item in evaluations}, first)
    assert len(server.requests) == 4
    server.reset()
    second = answerer(server, tmp_path)
    evaluations_again = evaluate_actionability(SEGMENTS, Rubric(), second)
    explained_again = explain_segments(SEGMENTS, {item.segment_id: item.answer for item in evaluations_again}, second)
    assert server.requests == []
    assert (second.usage.requests, second.usage.cache_hits) == (0, 4)
    assert [item.row() for item in evaluations_again] == [item.row() for item in evaluations]
    assert [item.row() for item in explained_again] == [item.row() for item in explained]
    # Another model, or the same asked otherwise, is another question.
    evaluate_actionability(SEGMENTS, Rubric(), answerer(server, tmp_path, model="other-model"))
    assert len(server.requests) == 2
    evaluate_actionability(SEGMENTS, Rubric(), answerer(server, tmp_path, temperature=0.7))
    assert len(server.requests) == 4


def test_requests_in_flight_stay_within_the_limit(server: ChatServer, tmp_path: Path) -> None:
    server.slow_seconds = 0.2
    server.reset(otherwise=SLOW)
    many = [segment(f"S{index:02d}", focused=index % 2 == 0) for index in range(1, 7)]
    answered = evaluate_actionability(many, Rubric(), answerer(server, tmp_path, max_concurrent_requests=2))
    assert [item.segment_id for item in answered] == [item.segment_id for item in many]
    assert all(item.provenance.source == "llm" for item in answered)
    assert server.max_in_flight == 2


def test_a_refused_request_fails_the_run_without_showing_the_key(server: ChatServer, tmp_path: Path) -> None:
    wrong_path = settings(server).base_url.removesuffix("/v1") + "/wrong"
    with pytest.raises(LLMIntegrationError, match="refused the request for model 'test-model'") as raised:
        evaluate_actionability(SEGMENTS[:1], Rubric(), answerer(server, tmp_path, base_url=wrong_path))
    assert "HTTP 404" in str(raised.value)
    assert API_KEY not in repr(settings(server))


def test_a_server_that_echoes_the_key_does_not_put_it_in_the_error(server: ChatServer, tmp_path: Path) -> None:
    server.queue([UNAUTHORIZED])
    with pytest.raises(LLMIntegrationError) as raised:
        evaluate_actionability(SEGMENTS[:1], Rubric(), answerer(server, tmp_path))
    assert "HTTP 401: AuthenticationError (invalid_api_key)" in str(raised.value)
    # Nothing chained either: the whole error as Dagster would log it holds no key.
    logged = "".join(traceback.format_exception(raised.value))
    assert "Incorrect API key" not in logged
    assert API_KEY not in logged
    assert raised.value.__cause__ is None and raised.value.__context__ is None


def test_credentials_in_the_base_url_are_not_shown(server: ChatServer) -> None:
    shown = settings(server, base_url=f"http://user:{API_KEY}@127.0.0.1:{server.port}/v1?api-key={API_KEY}").display_url
    assert shown == f"http://127.0.0.1:{server.port}/v1"


def test_a_408_is_retried(server: ChatServer, tmp_path: Path) -> None:
    server.queue([REQUEST_TIMEOUT, VALID])
    asking = answerer(server, tmp_path)
    (answered,) = evaluate_actionability(SEGMENTS[:1], Rubric(), asking)
    assert answered.provenance.source == "llm"
    assert (asking.usage.requests, asking.usage.retries) == (2, 1)


def test_an_answer_in_text_parts_is_read_whole(server: ChatServer, tmp_path: Path) -> None:
    server.queue([CONTENT_PARTS])
    (answered,) = evaluate_actionability(SEGMENTS[:1], Rubric(), answerer(server, tmp_path))
    assert answered.provenance.source == "llm"
    assert answered.answer.model_dump() == model_answer(server.requests[0].user_message)


@pytest.mark.parametrize(
    ("behaviour", "problem"),
    [(NO_MESSAGE, "the reply held no answer"), (REFUSAL, "the model refused: I cannot help with that.")],
)
def test_a_reply_without_an_answer_is_rejected_and_asked_again(
    server: ChatServer, tmp_path: Path, behaviour: str, problem: str
) -> None:
    server.queue([behaviour, behaviour])
    asking = answerer(server, tmp_path)
    (answered,) = evaluate_actionability(SEGMENTS[:1], Rubric(), asking)
    assert answered.provenance.source == "fallback"
    assert answered.provenance.fallback_reason == f"no valid answer in 2 attempt(s): {problem}"
    assert asking.usage.rejected_answers == 2


def test_explanations_are_checked_against_the_verdicts_they_were_given(server: ChatServer, tmp_path: Path) -> None:
    evaluations = {item.segment_id: mock_actionability(item, Rubric()) for item in SEGMENTS}
    answered = explain_segments(SEGMENTS, evaluations, answerer(server, tmp_path))
    assert [item.provenance.source for item in answered] == ["llm", "llm"]
    focused, diffuse = (item.answer for item in answered)
    assert focused.recommendations and focused.recommendations[0].audience_size == 1200
    assert focused.expected_roi == 4.2
    assert diffuse.recommendations == []
    statistics = json.loads(server.requests[1].user_message.split("<statistics>")[1].split("</statistics>")[0])
    assert statistics["actionability"] == evaluations["S02"].model_dump()


def test_backoff_waits_are_spread_over_the_upper_half(server: ChatServer) -> None:
    server.queue([SERVER_ERROR, SERVER_ERROR, VALID])
    waits: list[float] = []
    provider = OpenAICompatibleProvider(settings(server, backoff_seconds=0.05), sleep=waits.append, jitter=lambda: 0.0)
    Answerer(provider.settings, None, provider=provider).answer_all([actionability_question(SEGMENTS[0], Rubric())])
    assert waits == [0.025, 0.05]


def test_a_refused_request_stops_the_questions_not_yet_asked(server: ChatServer, tmp_path: Path) -> None:
    server.queue([UNAUTHORIZED])
    server.slow_seconds = 0.3
    server.otherwise = SLOW
    many = [segment(f"S{index:02d}", focused=True) for index in range(1, 9)]
    with pytest.raises(LLMIntegrationError):
        evaluate_actionability(many, Rubric(), answerer(server, tmp_path, max_concurrent_requests=2))
    # The first request was refused; the one already in flight ends, the queued ones are never sent.
    assert len(server.requests) <= 3


def test_a_campaign_through_a_channel_the_segment_under_uses_is_sent_back(server: ChatServer, tmp_path: Path) -> None:
    """S01 sends 30% of its events through web against the whole base's 70% (0.43x): a campaign there is
    rejected with the channels it may use; the next answer, through email (2.33x), is kept."""
    server.queue([UNDER_INDEXED_CHANNEL, VALID])
    evaluations = {"S01": mock_actionability(SEGMENTS[0], Rubric(owned_channels=[]))}
    asking = answerer(server, tmp_path)
    (answered,) = explain_segments(SEGMENTS[:1], evaluations, asking, Business(owned_channels=()))
    assert answered.provenance.source == "llm"
    assert [item.channel for item in answered.answer.recommendations] == ["email"]
    assert asking.usage.rejected_answers == 1
    sent_back = server.requests[1].body["messages"][3]["content"]
    assert (
        "recommendations[0].channel 'web' is one the segment does not use more than the whole base (lift above 1) "
        "and not an owned channel; use one of ['email']" in sent_back
    )


def test_an_owned_channel_is_always_allowed(server: ChatServer, tmp_path: Path) -> None:
    """The same web campaign passes when web is an owned channel of the business."""
    server.queue([UNDER_INDEXED_CHANNEL])
    evaluations = {"S01": mock_actionability(SEGMENTS[0], Rubric(owned_channels=["web"]))}
    asking = answerer(server, tmp_path)
    (answered,) = explain_segments(SEGMENTS[:1], evaluations, asking, Business(owned_channels=("web",)))
    assert answered.provenance.source == "llm"
    assert [item.channel for item in answered.answer.recommendations] == ["web"]
    assert asking.usage.rejected_answers == 0


def test_a_rejected_segment_called_actionable_is_sent_back(server: ChatServer, tmp_path: Path) -> None:
    """S02 was rejected by viability; an answer calling it actionable (with scores that would make it so)
    is refused, and the mock's verdict (not actionable) stands in after the last attempt."""
    rejected = segment("S02", focused=True, approved=False)
    server.queue([VALID])
    question = actionability_question(rejected, Rubric())
    clear = mock_actionability(rejected, Rubric()).model_copy(update={"actionable": True})
    assert question.check(clear) == [
        "actionable is true but viability did not approve the segment: a segment not worth a campaign is not "
        "actionable, whatever its scores"
    ]
    (answered,) = evaluate_actionability([rejected], Rubric(), answerer(server, tmp_path))
    assert answered.answer.actionable is False
    assert answered.answer.reason.startswith(MODEL_VOICE + "Not a campaign target now: it is not worth a campaign")
