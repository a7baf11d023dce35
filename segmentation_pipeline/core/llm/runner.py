"""Asking for one answer per segment: cache, provider, validation, faithfulness, retry, fallback.

Each question carries its own check (schema, faithfulness, rubric) and its own
fallback (the mock's answer). The runner asks the configured provider, sends
a rejected answer back with what was wrong with it, and after the last attempt
or when the provider stays unreachable, lets the fallback stand in, flagged.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError

from ..schemas import AnswerProvenance
from .cache import AnswerCache, cache_key
from .faithfulness import Statistics
from .prompts import PROMPT_VERSION, retry_messages
from .providers import ChatProvider, LLMSettings, OpenAICompatibleProvider, ProviderUnavailableError

#: Problems named in a fallback reason; the rest are counted.
REASON_PROBLEMS = 3


@dataclass(frozen=True)
class Question:
    """One segment's request: what to ask, how to check the answer, what stands in for it."""

    kind: str
    segment_id: str
    #: Fingerprint of the segment's statistics, stored with the answer.
    statistics_sha256: str
    messages: list[dict[str, str]]
    #: What the answer may quote, and the numeric fields that are its own judgement instead.
    statistics: Statistics
    judged: tuple[str, ...]
    answer_model: type[BaseModel]
    #: Problems beyond the schema (unquoted numbers, a verdict against the rubric); none means accepted.
    check: Callable[[BaseModel], list[str]]
    fallback: Callable[[], BaseModel]


@dataclass(frozen=True)
class Answered:
    segment_id: str
    answer: BaseModel
    provenance: AnswerProvenance

    def row(self) -> dict:
        return {"segment_id": self.segment_id, **self.answer.model_dump(), **self.provenance.model_dump()}


@dataclass
class Usage:
    """What answering cost: the metadata of the asset."""

    requests: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Requests repeated after a transient failure (timeout, lost connection, 408, 409, 429, 5xx).
    retries: int = 0
    #: Answers rejected as invalid JSON, off the schema, unfaithful or against the rubric.
    rejected_answers: int = 0
    fallbacks: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)

    def as_metadata(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if not name.startswith("_")}


class Answerer:
    def __init__(
        self,
        settings: LLMSettings,
        cache: AnswerCache | None,
        provider: ChatProvider | None = None,
        read_cache: bool = True,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.read_cache = read_cache
        if provider is None and settings.provider != "mock":
            provider = OpenAICompatibleProvider(settings)
        self.provider = provider
        self.usage = Usage()
        #: What besides the messages shapes an answer: the server and how it is asked.
        self._sampling = {
            "endpoint": settings.display_url,
            "temperature": settings.temperature,
            "max_tokens": settings.max_tokens,
            "structured_output": settings.structured_output,
        }

    def answer_all(self, questions: Sequence[Question]) -> list[Answered]:
        """The answers in the order of the questions; requests run concurrently up to the configured limit."""
        if self.provider is None or len(questions) <= 1:
            return [self.answer(question) for question in questions]
        workers = min(self.settings.max_concurrent_requests, len(questions))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm") as pool:
            futures = [pool.submit(self.answer, question) for question in questions]
            # A refused request fails the run: as soon as any question fails, ask nothing more.
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((future for future in done if future.exception() is not None), None)
            if failed is not None:
                for future in futures:
                    future.cancel()
                raise failed.exception()
            return [future.result() for future in futures]

    def answer(self, question: Question) -> Answered:
        if self.provider is None:
            return self._answered(question, question.fallback(), "mock")
        schema = question.answer_model.model_json_schema()
        key = cache_key(
            PROMPT_VERSION, self.settings.provider, self.settings.model, question.messages, schema, self._sampling
        )
        cached = self._from_cache(question, key)
        if cached is not None:
            self.usage.add(cache_hits=1)
            return self._answered(question, cached, "llm")
        messages = list(question.messages)
        problems: list[str] = []
        for attempt in range(self.settings.answer_attempts):
            try:
                completion = self.provider.complete(messages, question.kind, schema)
            except ProviderUnavailableError as exc:
                self.usage.add(requests=exc.requests, retries=exc.requests - 1)
                return self._fall_back(question, f"provider unavailable: {exc}")
            self.usage.add(
                requests=completion.requests,
                retries=completion.requests - 1,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
            )
            answer, problems = (
                (None, [completion.problem])
                if completion.problem
                else parse_answer(completion.content, question.answer_model)
            )
            if answer is not None:
                problems = question.check(answer)
            if completion.finish_reason == "length":
                problems = [f"the answer was cut off at max_tokens={self.settings.max_tokens}", *problems]
            if not problems:
                if self.cache is not None:
                    self.cache.put(question.kind, key, answer.model_dump(mode="json"), self.settings.model)
                return self._answered(question, answer, "llm")
            self.usage.add(rejected_answers=1)
            if attempt + 1 < self.settings.answer_attempts:
                messages = messages + retry_messages(completion.content, problems)
        shown = "; ".join(problems[:REASON_PROBLEMS]) + (
            f" (and {len(problems) - REASON_PROBLEMS} more)" if len(problems) > REASON_PROBLEMS else ""
        )
        return self._fall_back(question, f"no valid answer in {self.settings.answer_attempts} attempt(s): {shown}")

    def _from_cache(self, question: Question, key: str) -> BaseModel | None:
        if self.cache is None or not self.read_cache:
            return None
        stored = self.cache.get(question.kind, key)
        if stored is None:
            return None
        try:
            answer = question.answer_model.model_validate(stored)
        except ValidationError:
            return None
        return answer if not question.check(answer) else None

    def _fall_back(self, question: Question, reason: str) -> Answered:
        self.usage.add(fallbacks=1)
        return self._answered(question, question.fallback(), "fallback", reason)

    def _answered(self, question: Question, answer: BaseModel, source: str, reason: str | None = None) -> Answered:
        provenance = AnswerProvenance(
            source=source,
            provider=self.settings.provider,
            model=self.settings.answering_model,
            prompt_version=PROMPT_VERSION,
            fallback_reason=reason,
            statistics_sha256=question.statistics_sha256,
        )
        return Answered(question.segment_id, answer, provenance)


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_answer(content: str, model: type[BaseModel]) -> tuple[BaseModel | None, list[str]]:
    """The answer as the model, or the problems: not JSON, or not the schema (field by field)."""
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    if not text:
        return None, ["the answer was empty"]
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, [f"the answer is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]
    try:
        return model.model_validate(document), []
    except ValidationError as exc:
        return None, [
            f"{'.'.join(str(part) for part in error['loc']) or 'answer'}: {error['msg']}" for error in exc.errors()
        ]
