"""Per-key token buckets, on a fake clock: no test sleeps."""

from __future__ import annotations

import pytest

from gateway.config import KeyConfig
from gateway.errors import RateLimited, error_response
from gateway.ratelimit import RateLimiter, format_reset


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> RateLimiter:
    return RateLimiter(clock=clock)


RPM = KeyConfig(id="rpm", key="k1", rpm=60)
TPM = KeyConfig(id="tpm", key="k2", tpm=600)
BOTH = KeyConfig(id="both", key="k3", rpm=2, tpm=1000)
FREE = KeyConfig(id="free", key="k4")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"), (-1, "0s"), (0.0004, "1ms"), (0.02, "20ms"), (0.999, "999ms"), (1, "1s"),
        (1.5, "1.5s"), (8.64, "8.64s"), (59.9999, "1m0s"), (60, "1m0s"), (360, "6m0s"),
        (361.25, "6m1.25s"), (3600, "1h0m0s"), (3723, "1h2m3s"),
    ],
)
def test_format_reset_writes_durations_like_openai(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def test_no_key_or_no_limits_means_no_headers(limiter: RateLimiter) -> None:
    assert limiter.check(None, 10**9).headers == {}
    for _ in range(1000):
        assert limiter.check(FREE, 10**9).headers == {}


def test_requests_per_minute(limiter: RateLimiter, clock: FakeClock) -> None:
    first = limiter.check(RPM, 0)
    assert first.headers == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
    }
    for _ in range(59):
        limiter.check(RPM, 0)
    with pytest.raises(RateLimited) as caught:
        limiter.check(RPM, 0)
    error = caught.value
    assert error.retry_after == 1
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert error.headers["retry-after-ms"] == "1000"
    assert "60 requests per minute" in error.message and "'rpm'" in error.message
    response = error_response(error)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.headers["x-ratelimit-limit-requests"] == "60"
    # The refill is continuous: one request's worth comes back every second.
    clock.advance(0.5)
    with pytest.raises(RateLimited) as caught:
        limiter.check(RPM, 0)
    assert caught.value.headers["retry-after-ms"] == "500"
    clock.advance(0.5)
    assert limiter.check(RPM, 0).headers["x-ratelimit-remaining-requests"] == "0"


def test_a_refused_request_costs_nothing(limiter: RateLimiter, clock: FakeClock) -> None:
    for _ in range(60):
        limiter.check(RPM, 0)
    for _ in range(10):
        with pytest.raises(RateLimited):
            limiter.check(RPM, 0)
    clock.advance(1)
    limiter.check(RPM, 0)


def test_buckets_refill_to_capacity_and_no_further(limiter: RateLimiter, clock: FakeClock) -> None:
    limiter.check(RPM, 0)
    clock.advance(3600)
    decision = limiter.check(RPM, 0)
    assert decision.headers["x-ratelimit-remaining-requests"] == "59"


def test_tokens_per_minute(limiter: RateLimiter, clock: FakeClock) -> None:
    decision = limiter.check(TPM, 450)
    assert decision.headers == {
        "x-ratelimit-limit-tokens": "600",
        "x-ratelimit-remaining-tokens": "150",
        "x-ratelimit-reset-tokens": "45s",
    }
    with pytest.raises(RateLimited) as caught:
        limiter.check(TPM, 300)
    error = caught.value
    # 150 tokens missing at 10 tokens a second.
    assert error.headers["retry-after-ms"] == "15000"
    assert error.retry_after == 15
    assert "600 tokens per minute (this request needs 300, 150 are available now)" in error.message
    clock.advance(15)
    assert limiter.check(TPM, 300).headers["x-ratelimit-remaining-tokens"] == "0"


def test_a_request_larger_than_the_bucket_is_refused_for_good(limiter: RateLimiter, clock: FakeClock) -> None:
    with pytest.raises(RateLimited) as caught:
        limiter.check(TPM, 601)
    error = caught.value
    assert error.retry_after is None
    assert "retry-after-ms" not in error.headers
    assert "can never be admitted" in error.message and "601 tokens" in error.message
    assert error.param == "input"
    assert "retry-after" not in error_response(error).headers
    # It cost nothing: the whole minute's tokens are still there.
    assert limiter.check(TPM, 600).headers["x-ratelimit-remaining-tokens"] == "0"


def test_both_limits_must_admit_and_only_then_both_pay(limiter: RateLimiter, clock: FakeClock) -> None:
    decision = limiter.check(BOTH, 100)
    assert decision.headers == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "30s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "900",
        "x-ratelimit-reset-tokens": "6s",
    }
    # Too many tokens: refused, and the request bucket is not charged for it.
    with pytest.raises(RateLimited, match="tokens per minute"):
        limiter.check(BOTH, 950)
    assert limiter.check(BOTH, 100).headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(RateLimited) as caught:
        limiter.check(BOTH, 950)
    error = caught.value
    assert "2 requests per minute and 1000 tokens per minute" in error.message
    # The longer wait wins: 30 s for a request vs 15 s for 150 more tokens.
    assert error.retry_after == 30
    assert error.headers["retry-after-ms"] == "30000"


def test_keys_have_their_own_buckets(limiter: RateLimiter) -> None:
    for _ in range(60):
        limiter.check(RPM, 0)
    other = KeyConfig(id="rpm-2", key="k5", rpm=60)
    assert limiter.check(other, 0).headers["x-ratelimit-remaining-requests"] == "59"


def test_adjust_tokens_charges_or_refunds_the_difference(limiter: RateLimiter) -> None:
    limiter.check(TPM, 100)
    limiter.adjust_tokens(TPM, 50)
    assert limiter.check(TPM, 0).headers["x-ratelimit-remaining-tokens"] == "450"
    limiter.adjust_tokens(TPM, -1000)
    assert limiter.check(TPM, 0).headers["x-ratelimit-remaining-tokens"] == "600"
    limiter.adjust_tokens(RPM, 10)
    limiter.adjust_tokens(None, 10)
