"""What a fake upstream received, kept for tests to assert on."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RecordedRequest", "RequestLog"]


@dataclass
class RecordedRequest:
    """One request as received: header names are lower-cased, ``json`` is the parsed
    body (``None`` when it was not valid JSON) and ``fault`` the injected fault mode."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    raw: bytes = field(repr=False)
    fault: str | None = None
    #: The URL's query string, as sent (``api-version=...``).
    query: str = ""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "json": self.json,
            "fault": self.fault,
        }


class RequestLog:
    """The last ``maxlen`` requests, plus counters that cover every request.

    Safe to read from the test thread while the server thread appends.
    """

    def __init__(self, *, maxlen: int = 1000) -> None:
        self._entries: deque[RecordedRequest] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.count = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def append(self, entry: RecordedRequest) -> None:
        with self._lock:
            self._entries.append(entry)
            self.count += 1

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._entries)

    @property
    def last(self) -> RecordedRequest:
        with self._lock:
            if not self._entries:
                raise LookupError("no request was received")
            return self._entries[-1]

    def for_path(self, path: str) -> list[RecordedRequest]:
        return [entry for entry in self.requests if entry.path == path]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.count = 0
            self.max_in_flight = self.in_flight

    def to_json(self, limit: int | None = None) -> dict[str, Any]:
        entries = self.requests
        if limit is not None:
            entries = entries[-limit:] if limit > 0 else []
        return {
            "count": self.count,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "requests": [entry.to_json() for entry in entries],
        }
