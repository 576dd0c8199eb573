"""How long to wait before trying the same deployment again: exponential, full jitter.

Full jitter (a uniform draw between zero and the exponential ceiling) spreads the
retries of many clients that failed at the same moment, so they do not return together
(see AWS's "Exponential Backoff And Jitter").
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff", "DEFAULT_BACKOFF_BASE_S", "DEFAULT_BACKOFF_CAP_S"]

DEFAULT_BACKOFF_BASE_S = 0.05
DEFAULT_BACKOFF_CAP_S = 2.0


@dataclass(frozen=True, kw_only=True)
class Backoff:
    base_s: float = DEFAULT_BACKOFF_BASE_S
    cap_s: float = DEFAULT_BACKOFF_CAP_S

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (0 for the first retry)."""
        return min(self.cap_s, self.base_s * 2.0 ** min(retry, 32))

    def delay(self, retry: int, rng: random.Random, *, retry_after: float | None = None) -> float:
        """Seconds to wait; never less than the deployment's own ``Retry-After``."""
        jittered = rng.uniform(0.0, self.ceiling(retry))
        return max(jittered, retry_after or 0.0)
