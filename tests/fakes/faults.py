"""Failure injection for the fake upstreams.

A ``FaultPlan`` holds a first-in-first-out queue of faults; each fault is consumed by
one request (``times`` copies of it by ``times`` requests, or every request when
``times`` is ``None``). When the queue holds nothing for a request, a random fault is
injected with probability ``fail_rate``, drawn with a seeded RNG.

Modes and their parameters (defaults in ``DEFAULTS``):

    status        status=500, message, type, code, retry_after, retry_after_ms, body
                  -> that status with an OpenAI-shaped error body (``body`` replaces it);
                  ``retry_after`` / ``retry_after_ms`` set the headers of those names
    delay         seconds=0.5      -> wait, then answer normally
    hang          seconds=3600     -> wait, then answer normally
                  (both stop waiting and close the connection when the client leaves)
    drop          when="before_response" | "mid_body" | "reset"
                  -> close without any response / after half a body / with a TCP RST
    invalid_json  body             -> 200 with a truncated JSON body
    wrong_count   delta=-1         -> ``delta`` embeddings too few (or too many)
    wrong_dims                     -> every vector one dimension short
                                      (one byte short for base64_int8/base64_binary)
    nan                            -> first value of the first vector is NaN
                                      (float: a literal ``NaN`` in the JSON)
    bad_index     kind="duplicate" | "out_of_range"
                  -> the last item repeats the first index / gets index n
    reorder                        -> valid items listed in reverse order

``wrong_count``, ``bad_index`` and ``reorder`` take ``level="chunks" | "documents"``,
used by the contextualized endpoint only (default: the last document's chunks).
Any fault may set ``path`` so only requests to that path consume it.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULTS",
    "DEFAULT_RANDOM_FAULTS",
    "MODES",
    "Fault",
    "FaultPlan",
    "arrange",
]

DEFAULTS: dict[str, dict[str, Any]] = {
    "status": {
        "status": 500,
        "message": None,
        "type": None,
        "code": None,
        "retry_after": None,
        "retry_after_ms": None,
        "body": None,
    },
    "delay": {"seconds": 0.5},
    "hang": {"seconds": 3600.0},
    "drop": {"when": "before_response"},
    "invalid_json": {"body": '{"object": "list", "data": [{"object": "embedding", "ind'},
    "wrong_count": {"delta": -1, "level": "chunks"},
    "wrong_dims": {},
    "nan": {},
    "bad_index": {"kind": "duplicate", "level": "chunks"},
    "reorder": {"level": "chunks"},
}
MODES: tuple[str, ...] = tuple(DEFAULTS)

_CHOICES = {
    "when": ("before_response", "mid_body", "reset"),
    "kind": ("duplicate", "out_of_range"),
    "level": ("chunks", "documents"),
}


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour; see the module docstring for modes and params."""

    mode: str
    params: Mapping[str, Any] = field(default_factory=dict)
    path: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in DEFAULTS:
            raise ValueError(f"unknown fault mode {self.mode!r}; known: {', '.join(MODES)}")
        allowed = DEFAULTS[self.mode]
        for name, value in self.params.items():
            if name not in allowed:
                raise ValueError(f"fault {self.mode!r} takes no parameter {name!r}")
            if name in _CHOICES and value not in _CHOICES[name]:
                raise ValueError(f"{name} must be one of {_CHOICES[name]}, not {value!r}")
        status = self.params.get("status", 500)
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, not {status!r}")
        seconds = self.params.get("seconds", 0)
        if not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError(f"seconds must be a non-negative number, not {seconds!r}")
        delta = self.params.get("delta", -1)
        if not isinstance(delta, int) or delta == 0:
            raise ValueError(f"delta must be a non-zero integer, not {delta!r}")

    def __getitem__(self, name: str) -> Any:
        if name in self.params:
            return self.params[name]
        return DEFAULTS[self.mode][name]

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "path": self.path, **self.params}

    @classmethod
    def from_json(cls, payload: Any) -> Fault:
        if isinstance(payload, str):
            return cls(payload)
        if not isinstance(payload, dict) or "mode" not in payload:
            raise ValueError(f"a fault is a mode name or an object with 'mode': {payload!r}")
        params = dict(payload)
        mode = params.pop("mode")
        path = params.pop("path", None)
        return cls(mode, params, path)


DEFAULT_RANDOM_FAULTS: tuple[Fault, ...] = (
    Fault("status", {"status": 500}),
    Fault("status", {"status": 503}),
    Fault("status", {"status": 429, "retry_after": "0"}),
    Fault("delay", {"seconds": 0.05}),
    Fault("drop"),
    Fault("drop", {"when": "mid_body"}),
    Fault("invalid_json"),
    Fault("wrong_count"),
)


class FaultPlan:
    """The faults a fake upstream will inject, shared by the server and the test.

    Thread-safe: tests program it from their own thread while the server consumes it.
    """

    def __init__(self, *, supported: Iterable[str] = MODES) -> None:
        self.supported = frozenset(supported)
        self._lock = threading.Lock()
        self._queue: list[list[Any]] = []
        self._rng = random.Random(0)
        self._fail_rate = 0.0
        self._random: tuple[Fault, ...] = ()
        self.injected: dict[str, int] = {}

    def _check(self, fault: Fault) -> Fault:
        if fault.mode not in self.supported:
            raise ValueError(f"this upstream cannot inject {fault.mode!r}")
        return fault

    def add(
        self, mode: str, times: int | None = 1, *, path: str | None = None, **params: Any
    ) -> Fault:
        """Queue a fault for the next ``times`` requests (``None``: every request)."""
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1 or None, not {times}")
        fault = self._check(Fault(mode, params, path))
        with self._lock:
            self._queue.append([fault, times])
        return fault

    def set_random(
        self,
        fail_rate: float,
        *,
        seed: int = 0,
        faults: Sequence[Fault | str] = DEFAULT_RANDOM_FAULTS,
    ) -> None:
        """Inject one of ``faults`` (picked uniformly) into a ``fail_rate`` share of
        the requests that the queue leaves alone."""
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be within 0..1, not {fail_rate}")
        chosen = tuple(self._check(f if isinstance(f, Fault) else Fault(f)) for f in faults)
        if fail_rate and not chosen:
            raise ValueError("a fail_rate needs at least one fault to pick from")
        with self._lock:
            self._fail_rate = fail_rate
            self._random = chosen
            self._rng = random.Random(seed)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._fail_rate = 0.0
            self._random = ()
            self.injected = {}

    def take(self, path: str) -> Fault | None:
        """The fault for one request to ``path``, if any; consumes it."""
        with self._lock:
            fault = None
            for slot in self._queue:
                if slot[0].path is None or slot[0].path == path:
                    fault = slot[0]
                    if slot[1] is not None:
                        slot[1] -= 1
                        if slot[1] == 0:
                            self._queue.remove(slot)
                    break
            if fault is None and self._fail_rate and self._rng.random() < self._fail_rate:
                fault = self._rng.choice(self._random)
            if fault is not None:
                self.injected[fault.mode] = self.injected.get(fault.mode, 0) + 1
            return fault

    @property
    def pending(self) -> list[tuple[Fault, int | None]]:
        with self._lock:
            return [(slot[0], slot[1]) for slot in self._queue]

    def configure(self, payload: Any) -> None:
        """Apply a JSON command: a fault object (``mode``, optional ``times`` and
        ``path``, params), a list of them, or ``{"fail_rate", "seed", "faults"}``."""
        commands = payload if isinstance(payload, list) else [payload]
        for command in commands:
            if isinstance(command, dict) and "fail_rate" in command:
                faults = [Fault.from_json(f) for f in command.get("faults", ())]
                self.set_random(
                    float(command["fail_rate"]),
                    seed=int(command.get("seed", 0)),
                    faults=faults or DEFAULT_RANDOM_FAULTS,
                )
                continue
            if not isinstance(command, dict):
                raise ValueError(f"a fault command is an object, not {command!r}")
            command = dict(command)
            times = command.pop("times", 1)
            fault = self._check(Fault.from_json(command))
            self.add(fault.mode, times, path=fault.path, **fault.params)

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "pending": [{**s[0].to_json(), "times": s[1]} for s in self._queue],
                "fail_rate": self._fail_rate,
                "random_faults": [f.to_json() for f in self._random],
                "injected": dict(self.injected),
            }


def arrange(fault: Fault | None, n: int) -> list[tuple[int, int]]:
    """``(reported index, row)`` for each result item after count/index/order faults."""
    pairs = [(i, i) for i in range(n)]
    if fault is None or n == 0:
        return pairs
    if fault.mode == "wrong_count":
        delta: int = fault["delta"]
        if delta < 0:
            del pairs[max(0, n + delta) :]
        else:
            pairs += [(n + k, n - 1) for k in range(delta)]
    elif fault.mode == "bad_index":
        row = pairs[-1][1]
        if fault["kind"] == "duplicate" and n >= 2:
            pairs[-1] = (pairs[0][0], row)
        else:
            pairs[-1] = (n, row)
    elif fault.mode == "reorder":
        pairs.reverse()
    return pairs
