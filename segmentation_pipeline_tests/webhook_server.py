"""A webhook receiver on 127.0.0.1: real HTTP, scripted answers, and the dedupe a receiver does.

Each request takes the next behaviour of the script (then `otherwise`):
"200", any other status ("500", "400", ...), "429:<seconds>" (with Retry-After),
"stall" (processes the batch, then answers only after `stall_seconds`, past the
client's timeout), "long-400" (a 300-character refusal), "echo-401" (a receiver that quotes the secret, the query
string and the headers back in its refusal) and "302" (a redirect). A batch is
processed on "200" and "stall": a key seen before is counted as a duplicate,
as a receiver that dedupes by Idempotency-Key would.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from .llm_server import serving


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    #: time.monotonic() when the request arrived.
    at: float
    behaviour: str

    @property
    def key(self) -> str:
        return self.headers["idempotency-key"]


@dataclass
class WebhookServer:
    secret: str = ""
    script: deque[str] = field(default_factory=deque)
    otherwise: str = "200"
    stall_seconds: float = 1.0
    received: list[Received] = field(default_factory=list)
    #: Keys processed once, and the keys of repeats the receiver recognised.
    processed: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hooks/segments") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def queue(self, behaviours: Iterable[str]) -> None:
        with self._lock:
            self.script.extend(behaviours)

    def take(self, path: str, headers: dict[str, str], body: bytes) -> Received:
        with self._lock:
            behaviour = self.script.popleft() if self.script else self.otherwise
            request = Received(path, headers, body, time.monotonic(), behaviour)
            self.received.append(request)
            if behaviour in ("200", "stall"):
                key = headers.get("idempotency-key", "")
                (self.duplicates if key in self.processed else self.processed).append(key)
            return request


def _handler(state: WebhookServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            request = state.take(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            behaviour = request.behaviour
            if behaviour == "stall":
                time.sleep(state.stall_seconds)
                self._send(200, b'{"ok":true}')
            elif behaviour.startswith("429:"):
                self._send(429, b"slow down", {"Retry-After": behaviour.removeprefix("429:")})
            elif behaviour == "302":
                self._send(302, b"", {"Location": state.url("/elsewhere")})
            elif behaviour == "long-400":
                self._send(400, ("x" * 199 + "|" + "y" * 100).encode())
            elif behaviour == "echo-401":
                echo = f"bad signature; expected one made with {state.secret!r} for {self.path} {request.headers}"
                self._send(401, echo.encode())
            else:
                status = int(behaviour)
                self._send(status, b'{"ok":true}' if status < 300 else f"answer {status}".encode())

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the stall)

    return Handler


class running_webhook(serving):
    """Context manager: a WebhookServer listening on 127.0.0.1 in a background thread."""

    def __init__(self, state: WebhookServer) -> None:
        super().__init__(state, _handler)
