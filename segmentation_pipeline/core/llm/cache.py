"""Answers cached on disk, so a re-run or a backfill asks the language model nothing twice.

The key is a hash of the prompt version, provider, model and the request
itself (messages, answer schema, and the endpoint and sampling settings): any
change to the statistics, the wording, the model or the server is a new key. Only validated, faithful answers are
stored; a fallback is not, so the next run asks again.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path


def cache_key(
    prompt_version: str,
    provider: str,
    model: str,
    messages: list[dict[str, str]],
    schema: dict,
    sampling: dict[str, object] | None = None,
) -> str:
    request = {
        "prompt_version": prompt_version,
        "provider": provider,
        "model": model,
        "messages": messages,
        "schema": schema,
        "sampling": sampling or {},
    }
    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class AnswerCache:
    """One JSON file per answer under `folder/<kind>/<key[:2]>/<key>.json`, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, kind: str, key: str) -> Path:
        return self.folder / kind / key[:2] / f"{key}.json"

    def get(self, kind: str, key: str) -> dict | None:
        """The cached answer, or None; an unreadable entry counts as a miss and is replaced later."""
        try:
            entry = json.loads(self.path(kind, key).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        answer = entry.get("answer") if isinstance(entry, dict) else None
        return answer if isinstance(answer, dict) else None

    def put(self, kind: str, key: str, answer: dict, model: str) -> Path:
        path = self.path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            temporary.write_text(
                json.dumps({"model": model, "answer": answer}, indent=1, ensure_ascii=False), encoding="utf-8"
            )
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        return path
