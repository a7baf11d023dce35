"""A chat-completions server on 127.0.0.1 that stands in for an OpenAI-compatible LLM provider.

It speaks the API's wire format over real HTTP. By default it answers like a
careful model would: it reads the statistics from the prompt and answers with
the mock's judgement, reworded so the answer is recognisably its own. A test
scripts misbehaviour per request: invalid JSON, a schema error, an invented
number, a slow answer, 429 and 500 answers.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from segmentation_pipeline.core.business import Business
from segmentation_pipeline.core.llm.actionability import Rubric, mock_actionability
from segmentation_pipeline.core.llm.explainer import mock_explanation
from segmentation_pipeline.core.llm.facts import SegmentFacts
from segmentation_pipeline.core.llm.prompts import statistics_of
from segmentation_pipeline.core.schemas import ActionabilityAnswer

#: What the server does with a request.
VALID = "valid"
FENCED = "fenced"  # a valid answer inside a Markdown code fence, as local models often write
INVALID_JSON = "invalid_json"
SCHEMA_ERROR = "schema_error"
INVENTED_NUMBER = "invented_number"
#: Campaigns through the segment's channel with the lowest lift (one it uses less than the whole base).
UNDER_INDEXED_CHANNEL = "under_indexed_channel"
SLOW = "slow"  # answers after `slow_seconds`, longer than the client's timeout
RATE_LIMITED = "429"
SERVER_ERROR = "500"
REQUEST_TIMEOUT = "408"
UNAUTHORIZED = "401"  # and the message repeats the key it was sent, as some servers do
NO_MESSAGE = "no_message"  # a choice without a message
REFUSAL = "refusal"  # no content, a refusal instead
CONTENT_PARTS = "content_parts"  # the answer as a list of text parts

INVENTED = "12,345"
#: Marks the server's own wording, so a test can tell its answers from the mock's.
MODEL_VOICE = "In the model's view: "


def model_answer(user_message: str) -> dict:
    """What a faithful model answers: the mock's judgement in its own words."""
    statistics = statistics_of(user_message)
    facts = SegmentFacts.model_validate(statistics["segment"])
    if "rubric" in statistics:
        answer = mock_actionability(facts, Rubric(**statistics["rubric"])).model_dump()
        answer["reason"] = MODEL_VOICE + answer["reason"]
    else:
        evaluation = ActionabilityAnswer.model_validate(statistics["actionability"])
        business = Business(
            currency=statistics["business"]["currency"],
            timezone=statistics["business"]["timezone"],
            owned_channels=tuple(statistics["owned_channels"]),
        )
        answer = mock_explanation(facts, evaluation, business).model_dump()
        answer["executive_summary"] = MODEL_VOICE + answer["executive_summary"]
    return answer


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict

    @property
    def user_message(self) -> str:
        return next(message["content"] for message in self.body["messages"] if message["role"] == "user")


@dataclass
class ChatServer:
    """The server's script and what it saw. `script` is consumed one behaviour per request."""

    script: deque[str] = field(default_factory=deque)
    #: When the script is empty: VALID, or a behaviour repeated for ever (a server that always fails).
    otherwise: str = VALID
    slow_seconds: float = 1.5
    requests: list[Request] = field(default_factory=list)
    #: Requests being answered right now, and the most there ever were at once.
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def queue(self, behaviours: Iterable[str]) -> None:
        with self._lock:
            self.script.extend(behaviours)

    def next_behaviour(self, request: Request) -> str:
        with self._lock:
            self.requests.append(request)
            return self.script.popleft() if self.script else self.otherwise

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def reset(self, otherwise: str = VALID) -> None:
        with self._lock:
            self.script.clear()
            self.requests.clear()
            self.otherwise = otherwise
            self.max_in_flight = 0


def _handler(server_state: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            request = Request(
                self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(self.rfile.read(length))
            )
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                return
            behaviour = server_state.next_behaviour(request)
            server_state.enter()
            try:
                self._answer(behaviour, request)
            finally:
                server_state.leave()

        def _answer(self, behaviour: str, request: Request) -> None:
            if behaviour == RATE_LIMITED:
                self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}}, {"retry-after": "0"})
                return
            if behaviour == SERVER_ERROR:
                self._send(500, {"error": {"message": "internal error", "type": "server_error"}})
                return
            if behaviour == REQUEST_TIMEOUT:
                self._send(408, {"error": {"message": "request timeout", "type": "timeout"}})
                return
            if behaviour == UNAUTHORIZED:
                key = request.headers.get("authorization", "").removeprefix("Bearer ")
                message = f"Incorrect API key provided: {key}"
                self._send(
                    401, {"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}}
                )
                return
            if behaviour == SLOW:
                time.sleep(server_state.slow_seconds)
            self._send(200, _completion(request, _content(behaviour, request), behaviour))

        def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

    return Handler


def _content(behaviour: str, request: Request) -> str:
    if behaviour == INVALID_JSON:
        return '{"what_score": 0.7, "executive_summary": "unterminated'
    answer = model_answer(request.user_message)
    if behaviour == SCHEMA_ERROR:
        answer.pop(next(iter(answer)))
        return json.dumps(answer)
    if behaviour == INVENTED_NUMBER:
        key = "reason" if "reason" in answer else "executive_summary"
        answer[key] += f" About {INVENTED} customers respond to campaigns like this."
    if behaviour == UNDER_INDEXED_CHANNEL and answer.get("recommendations"):
        facts = SegmentFacts.model_validate(statistics_of(request.user_message)["segment"])
        weakest = min(facts.channels, key=lambda item: item.lift or 0.0)
        for recommendation in answer["recommendations"]:
            recommendation["channel"] = weakest.label
    text = json.dumps(answer)
    return f"```json\n{text}\n```" if behaviour == FENCED else text


def _completion(request: Request, content: str, behaviour: str = VALID) -> dict:
    prompt_tokens = sum(len(message["content"]) for message in request.body["messages"]) // 4
    message: dict | None = {"role": "assistant", "content": content}
    if behaviour == NO_MESSAGE:
        message = None
    elif behaviour == REFUSAL:
        message = {"role": "assistant", "content": None, "refusal": "I cannot help with that."}
    elif behaviour == CONTENT_PARTS:
        half = len(content) // 2
        message = {
            "role": "assistant",
            "content": [{"type": "text", "text": content[:half]}, {"type": "text", "text": content[half:]}],
        }
    choice = {"index": 0, "finish_reason": "stop"} | ({"message": message} if message is not None else {})
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.body.get("model", ""),
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(content) // 4,
            "total_tokens": prompt_tokens + len(content) // 4,
        },
    }


class serving:
    """Context manager: an HTTP server on 127.0.0.1 (a free port, set on `state.port`) in a background thread,
    its requests answered by `handler(state)`; stopped on exit. The test servers of this folder use it."""

    def __init__(self, state, handler) -> None:
        self.state, self._handler = state, handler

    def __enter__(self):
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(self.state))
        self._http.daemon_threads = True
        self.state.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self.state

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)


class running_server(serving):
    """Context manager: a ChatServer listening on 127.0.0.1 in a background thread, stopped on exit."""

    def __init__(self, state: ChatServer | None = None) -> None:
        super().__init__(state or ChatServer(), _handler)
