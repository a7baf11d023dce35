"""Language-model providers: the deterministic mock, and any OpenAI-compatible chat-completions server.

The OpenAI-compatible provider goes through the official `openai` client (OpenAI,
vLLM, Ollama and llama.cpp's server all speak its API). Transient failures
(timeouts, lost connections, 429 and 5xx answers) are retried with exponential
backoff, honouring Retry-After; when they persist the caller falls back to the
mock. A misconfiguration (bad key, unknown model, a request the server refuses)
fails the run instead: retrying cannot mend it and a report quietly made of
fallbacks would hide it. The API key is never logged or put in a message.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Literal, Protocol, get_args
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from ..errors import LLMIntegrationError
from ..settings import LLM_PROVIDERS

#: The model name answers of the mock provider carry.
MOCK_MODEL = "rules"
#: How the answer's JSON schema is requested: as a response format the server enforces
#: ("json_schema"), as plain JSON mode ("json_object"), or only in the prompt ("prompt").
StructuredOutput = Literal["json_schema", "json_object", "prompt"]
STRUCTURED_OUTPUTS: tuple[str, ...] = get_args(StructuredOutput)


class LLMSettings(BaseModel):
    """Which provider answers and how patiently."""

    model_config = ConfigDict(frozen=True)

    provider: str = Field(default="mock", description="'mock' (deterministic, no network) or 'openai'.")
    base_url: str = Field(
        default="",
        description="Chat-completions endpoint of an OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1; "
        "empty means the openai client's default.",
    )
    model: str = Field(default="gpt-4o-mini", description="Model name the server knows.")
    api_key: str = Field(default="", repr=False, description="API key; servers that need none accept any value.")
    timeout_seconds: float = Field(default=60.0, gt=0, description="Seconds to wait for one answer.")
    max_retries: int = Field(default=3, ge=0, description="Retries of a request after a timeout, 429 or 5xx answer.")
    backoff_seconds: float = Field(default=1.0, ge=0, description="First wait before a retry; doubles with each retry.")
    max_backoff_seconds: float = Field(default=30.0, ge=0, description="Longest wait before a retry.")
    max_concurrent_requests: int = Field(default=4, ge=1, description="Requests in flight at once.")
    answer_attempts: int = Field(
        default=2,
        ge=1,
        description="Attempts at a valid, faithful answer per segment (a rejected answer is sent back with "
        "what was wrong) before the mock's answer stands in.",
    )
    temperature: float = Field(default=0.0, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int = Field(default=1500, ge=64, description="Longest answer in tokens.")
    structured_output: StructuredOutput = Field(
        default="json_schema",
        description="'json_schema' asks the server to enforce the answer's schema, 'json_object' for servers "
        "with plain JSON mode only, 'prompt' for servers with neither.",
    )

    def model_post_init(self, __context: object) -> None:
        if self.provider not in LLM_PROVIDERS:
            raise LLMIntegrationError(
                f"LLM provider {self.provider!r} is not supported; expected one of {list(LLM_PROVIDERS)}"
            )

    @property
    def answering_model(self) -> str:
        return MOCK_MODEL if self.provider == "mock" else self.model

    @property
    def display_url(self) -> str:
        """The endpoint as it may be shown: without credentials or query string."""
        if not self.base_url:
            return "the openai client's default endpoint"
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class Completion:
    content: str
    prompt_tokens: int
    completion_tokens: int
    #: HTTP requests sent for this completion, retries included.
    requests: int
    #: Why the answer stopped ("stop", "length", ...).
    finish_reason: str
    #: What made the reply unusable before its text was read (no answer in it, a refusal).
    problem: str | None = None


class ProviderUnavailableError(LLMIntegrationError):
    """The provider failed transiently on every attempt; the caller falls back."""

    def __init__(self, message: str, requests: int) -> None:
        super().__init__(message)
        self.requests = requests


class ChatProvider(Protocol):
    def complete(self, messages: list[dict[str, str]], schema_name: str, schema: dict) -> Completion: ...


class OpenAICompatibleProvider:
    """Chat completions over HTTP through the `openai` client; retries are ours, so they can be counted."""

    def __init__(self, settings: LLMSettings, sleep=time.sleep, jitter=random.random) -> None:
        self.settings = settings
        self._sleep = sleep
        self._jitter = jitter
        # Imported here, not with the module: the mock never needs it, and every run's process
        # imports this module (the client and its types take a third of a second).
        import openai

        self._client = openai.OpenAI(
            api_key=settings.api_key or "not-needed",
            base_url=settings.base_url or None,
            timeout=settings.timeout_seconds,
            max_retries=0,
        )

    def complete(self, messages: list[dict[str, str]], schema_name: str, schema: dict) -> Completion:
        import openai

        settings = self.settings
        last_error, retry_after = "", None
        for attempt in range(settings.max_retries + 1):
            if attempt:
                self._sleep(self._backoff(attempt, retry_after))
            refused = None
            try:
                response = self._client.chat.completions.create(
                    model=settings.model,
                    messages=messages,
                    temperature=settings.temperature,
                    max_tokens=settings.max_tokens,
                    **self._response_format(schema_name, schema),
                )
            except openai.APIError as exc:
                if not _is_transient(exc):
                    refused = _describe(exc)
                else:
                    last_error, retry_after = _describe(exc), _retry_after(exc)
                    continue
            if refused is not None:
                # Raised outside the handler, so the client's exception (whose message may echo
                # the server's body, and servers echo keys) is not chained into the run's log.
                raise LLMIntegrationError(
                    f"the LLM server at {settings.display_url} refused the request for model {settings.model!r}: "
                    f"{refused}; check base_url, model, the API key variable and structured_output"
                )
            return _completion(response, requests=attempt + 1)
        raise ProviderUnavailableError(
            f"no answer after {settings.max_retries + 1} request(s); last: {last_error}", settings.max_retries + 1
        )

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff, each wait drawn from its upper half so that requests turned away
        together do not return together; a server's Retry-After is honoured up to the longest wait."""
        wait = self.settings.backoff_seconds * 2 ** (attempt - 1) * (0.5 + 0.5 * self._jitter())
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.settings.max_backoff_seconds)

    def _response_format(self, schema_name: str, schema: dict) -> dict:
        if self.settings.structured_output == "json_schema":
            return {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": schema_name, "schema": schema, "strict": False},
                }
            }
        if self.settings.structured_output == "json_object":
            return {"response_format": {"type": "json_object"}}
        return {}


def _completion(response: object, requests: int) -> Completion:
    """The answer's text, read defensively: servers differ in what they leave out."""
    usage = getattr(response, "usage", None)
    tokens = {
        "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
        "completion_tokens": getattr(usage, "completion_tokens", 0) or 0,
    }
    choices = getattr(response, "choices", None) or []
    message = getattr(choices[0], "message", None) if choices else None
    if message is None:
        return Completion("", **tokens, requests=requests, finish_reason="", problem="the reply held no answer")
    refusal = getattr(message, "refusal", None)
    if refusal:
        return Completion("", **tokens, requests=requests, finish_reason="", problem=f"the model refused: {refusal}")
    content = getattr(message, "content", None) or ""
    if isinstance(content, list):  # content parts: keep the text ones
        content = "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return Completion(
        content=str(content),
        **tokens,
        requests=requests,
        finish_reason=getattr(choices[0], "finish_reason", "") or "",
    )


def _is_transient(exc: Exception) -> bool:
    """Worth another request: timeouts, lost connections, 408, 409, 429 and 5xx."""
    import openai

    if isinstance(exc, openai.APIConnectionError):  # timeouts included
        return True
    status = getattr(exc, "status_code", None)
    return status is not None and (status in (408, 409, 429) or status >= 500)


def _describe(exc: Exception) -> str:
    """Status, class and error code: never the server's message, which may echo the key."""
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "code", None)
    text = f"HTTP {status}: {type(exc).__name__}" if status else type(exc).__name__
    return f"{text} ({code})" if isinstance(code, str) and code.isidentifier() else text


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    header = response.headers.get("retry-after") if response is not None else None
    try:
        return float(header) if header else None
    except ValueError:
        return None
