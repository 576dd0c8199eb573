"""Rate limits in Redis: the same token buckets as :mod:`gateway.ratelimit`, shared by
every process that points at the same ``state``.

One Lua script reads both of a key's buckets, refills them by the time elapsed (Redis's
own clock, so replicas' clocks need not agree), decides, and charges both, all inside
Redis: a script runs atomically, so two processes can never both spend the last request
of a minute (no read-modify-write race). A bucket's hash expires 61 s after its last
change, by when it would be full again anyway, so idle keys cost no memory.

When Redis cannot answer within the client's bound, ``state_failure`` decides: ``open``
admits the request unchecked (counted in ``gateway_ratelimit_unchecked``), ``closed``
refuses it with 503 ``state_unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gateway.config import KeyConfig
from gateway.errors import ServiceOverloaded
from gateway.ratelimit import RateDecision, bucket_headers, refuse, snapshot_bucket
from gateway.state.client import SharedState, StateUnavailable

__all__ = ["SharedRateLimiter"]

logger = logging.getLogger("gateway.state.ratelimit")

# KEYS: the request bucket, the token bucket. ARGV: rpm, tpm (0: no such bucket), tokens,
# mode ("admit" or "adjust"). Returns {admitted (1, 0, or -1: can never fit), request
# level, token level}, the levels refilled but before this request's charge, as strings
# (Lua numbers would come back truncated).
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function level(key, cap)
  if cap <= 0 then return nil end
  local v = redis.call('HMGET', key, 'l', 't')
  local l, ts = tonumber(v[1]), tonumber(v[2])
  if l == nil or ts == nil then return cap end
  if now > ts then l = math.min(cap, l + (now - ts) * cap / 60) end
  return l
end
local function store(key, l)
  redis.call('HSET', key, 'l', string.format('%.6f', l), 't', string.format('%.6f', now))
  redis.call('PEXPIRE', key, 61000)
end
local r, k = level(KEYS[1], rpm), level(KEYS[2], tpm)
local function out(verdict)
  return {verdict, r and string.format('%.6f', r) or '', k and string.format('%.6f', k) or ''}
end
if ARGV[4] == 'adjust' then
  if k then k = math.min(tpm, k - tokens); store(KEYS[2], k) end
  return out(1)
end
if k and tokens > tpm then return out(-1) end
if (r and r < 1) or (k and k < tokens) then return out(0) end
local reply = out(1)
if r then store(KEYS[1], r - 1) end
if k then store(KEYS[2], k - tokens) end
return reply
"""


class SharedRateLimiter:
    """A :class:`gateway.ratelimit.Limiter` whose buckets live in Redis."""

    def __init__(self, state: SharedState) -> None:
        self.state = state
        self._script = state.client.register_script(_SCRIPT)
        self._adjustments: set[asyncio.Task[None]] = set()

    def _keys(self, key: KeyConfig) -> list[str]:
        # One hash tag per gateway key: both buckets land in one Redis Cluster slot.
        base = self.state.key("rl", "{" + key.id + "}")
        return [base + ":requests", base + ":tokens"]

    async def _call(self, key: KeyConfig, tokens: int, mode: str) -> list[Any]:
        args: list[int | str] = [key.rpm or 0, key.tpm or 0, tokens, mode]
        keys = self._keys(key)
        result: list[Any] = await self.state.run(
            "ratelimit", lambda client: self._script(keys=keys, args=args, client=client)
        )
        return result

    async def admit(self, key: KeyConfig | None, tokens: int) -> RateDecision:
        if key is None or (key.rpm is None and key.tpm is None):
            return RateDecision()
        try:
            verdict, request_level, token_level = await self._call(key, tokens, "admit")
        except StateUnavailable as exc:
            if self.state.failure_mode == "closed":
                raise ServiceOverloaded(
                    "rate limits cannot be checked right now (the shared state server is unreachable); "
                    "retry shortly", code="state_unavailable", retry_after=1.0,
                ) from exc
            self.state.unchecked += 1
            return RateDecision()
        requests = snapshot_bucket(key.rpm, float(request_level)) if key.rpm is not None else None
        token_bucket = snapshot_bucket(key.tpm, float(token_level)) if key.tpm is not None else None
        if int(verdict) != 1:
            refusal = refuse(key, tokens, requests, token_bucket)
            if refusal is not None:
                raise refusal
            # Redis refused by less than the printed precision: show the levels it saw.
            if requests is not None and requests.level < 1 + 1e-6:
                requests.level = min(requests.level, 1 - 1e-6)
            if token_bucket is not None and token_bucket.level < tokens + 1e-6:
                token_bucket.level = min(token_bucket.level, tokens - 1e-6)
            raise refuse(key, tokens, requests, token_bucket) or ServiceOverloaded("rate limit state disagrees")
        if requests is not None:
            requests.level -= 1
        if token_bucket is not None:
            token_bucket.level -= tokens
        return RateDecision(headers=bucket_headers(requests, token_bucket))

    def adjust_tokens(self, key: KeyConfig | None, delta: int) -> None:
        """Charges (or refunds) the difference once the real count is known, in the
        background: the answer does not wait for Redis a second time."""
        if key is None or key.tpm is None or delta == 0:
            return
        task = asyncio.get_running_loop().create_task(self._adjust(key, delta))
        self._adjustments.add(task)
        task.add_done_callback(self._adjustments.discard)

    async def _adjust(self, key: KeyConfig, delta: int) -> None:
        try:
            await self._call(key, delta, "adjust")
        except StateUnavailable:
            pass  # counted by the client; a lost adjustment only blurs one estimate
