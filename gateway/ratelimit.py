"""Per-key rate limits: token buckets for requests and tokens per minute.

Each bucket holds up to a minute's allowance and refills continuously, so a key may burst
to its limit and then proceeds at the steady rate. A request is admitted only when every
bucket of its key can pay for it, and then pays all of them at once; a refused request
pays nothing. Responses carry the ``x-ratelimit-*`` headers OpenAI clients read.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from gateway.config import KeyConfig
from gateway.errors import RateLimited

__all__ = [
    "Limiter", "RateDecision", "RateLimiter", "bucket_headers", "format_reset", "refuse", "snapshot_bucket",
]

Clock = Callable[[], float]


@dataclass(kw_only=True, slots=True)
class RateDecision:
    """An admitted request; ``headers`` go on its response."""

    headers: dict[str, str] = field(default_factory=dict)


class Limiter(Protocol):
    """Admits requests against a key's rpm/tpm: in memory (one process) or in shared state."""

    async def admit(self, key: KeyConfig | None, tokens: int) -> RateDecision: ...

    def adjust_tokens(self, key: KeyConfig | None, delta: int) -> None: ...


class _Bucket:
    __slots__ = ("capacity", "rate", "level", "updated")

    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, amount: float) -> float:
        return max(0.0, (amount - self.level) / self.rate)

    def headers(self, unit: str) -> dict[str, str]:
        return {
            f"x-ratelimit-limit-{unit}": str(int(self.capacity)),
            f"x-ratelimit-remaining-{unit}": str(max(0, math.floor(self.level))),
            f"x-ratelimit-reset-{unit}": format_reset((self.capacity - self.level) / self.rate),
        }


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI's headers (Go's ``time.Duration``) write it: ``20ms``, ``1.5s``, ``6m0s``."""
    ms = math.ceil(round(max(0.0, seconds) * 1000.0, 6))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class RateLimiter:
    """Token buckets in this process's memory: the limits of one process."""

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        """Buckets for every key that has ``rpm`` or ``tpm``, made on first use; ``clock`` is in seconds.

        Not thread-safe: call it from the event loop (each check is a few arithmetic steps).
        """
        self._clock = clock
        self._buckets: dict[str, tuple[_Bucket | None, _Bucket | None]] = {}

    def check(self, key: KeyConfig | None, tokens: int) -> RateDecision:
        """Admits (and charges) one request of ``tokens`` tokens, or raises :class:`RateLimited`."""
        if key is None or (key.rpm is None and key.tpm is None):
            return RateDecision()
        requests, token_bucket = self._for(key)
        now = self._clock()
        for bucket in (requests, token_bucket):
            if bucket is not None:
                bucket.refill(now)
        refusal = refuse(key, tokens, requests, token_bucket)
        if refusal is not None:
            raise refusal
        if requests is not None:
            requests.level -= 1
        if token_bucket is not None:
            token_bucket.level -= tokens
        return RateDecision(headers=bucket_headers(requests, token_bucket))

    async def admit(self, key: KeyConfig | None, tokens: int) -> RateDecision:
        """:meth:`check`, as every :class:`Limiter` offers it."""
        return self.check(key, tokens)

    def adjust_tokens(self, key: KeyConfig | None, delta: int) -> None:
        """Charges ``delta`` more tokens (or refunds, if negative) once the real count is known."""
        if key is None or key.tpm is None:
            return
        _, token_bucket = self._for(key)
        if token_bucket is not None:
            token_bucket.refill(self._clock())
            token_bucket.level = min(token_bucket.capacity, token_bucket.level - delta)

    def _for(self, key: KeyConfig) -> tuple[_Bucket | None, _Bucket | None]:
        buckets = self._buckets.get(key.id)
        if buckets is None:
            now = self._clock()
            buckets = (
                _Bucket(key.rpm, now) if key.rpm is not None else None,
                _Bucket(key.tpm, now) if key.tpm is not None else None,
            )
            self._buckets[key.id] = buckets
        return buckets


def bucket_headers(requests: _Bucket | None, tokens: _Bucket | None) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers of a key's buckets."""
    headers: dict[str, str] = {}
    if requests is not None:
        headers.update(requests.headers("requests"))
    if tokens is not None:
        headers.update(tokens.headers("tokens"))
    return headers


def refuse(key: KeyConfig, tokens: int, requests: _Bucket | None, token_bucket: _Bucket | None) -> RateLimited | None:
    """The refusal of a request of ``tokens`` tokens by buckets at their current (refilled)
    levels, or ``None`` when they can pay for it. Shared by the in-memory and Redis limiters,
    so both refuse with the same words and headers."""
    if token_bucket is not None and tokens > token_bucket.capacity:
        return RateLimited(
            f"this request has {tokens} tokens, more than gateway key {key.id!r} may use in a minute "
            f"({key.tpm} tokens per minute), so it can never be admitted; split the input into "
            f"smaller requests",
            param="input",
            headers=bucket_headers(requests, token_bucket),
        )
    waits: list[tuple[float, str]] = []
    if requests is not None and requests.level < 1:
        waits.append((requests.wait_for(1), f"{key.rpm} requests per minute"))
    if token_bucket is not None and token_bucket.level < tokens:
        waits.append((
            token_bucket.wait_for(tokens),
            f"{key.tpm} tokens per minute (this request needs {tokens}, "
            f"{max(0, math.floor(token_bucket.level))} are available now)",
        ))
    if not waits:
        return None
    wait = max(seconds for seconds, _ in waits)
    limits = " and ".join(text for _, text in waits)
    headers = bucket_headers(requests, token_bucket)
    headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
    return RateLimited(
        f"rate limit reached for gateway key {key.id!r}: {limits}; retry in {format_reset(wait)}",
        retry_after=float(max(1, math.ceil(wait))),
        headers=headers,
    )


def snapshot_bucket(per_minute: int, level: float) -> _Bucket:
    """A bucket at ``level`` (as another store reported it), for :func:`refuse` and the headers."""
    bucket = _Bucket(per_minute, 0.0)
    bucket.level = level
    return bucket
