"""What one request has gathered, as it learns it: the record the pipeline fills and the
access log, the metrics and the usage ledger read once the answer has gone out.

One slotted record per request (``RequestRecord``), made by the front door; the pipeline's
own results (``Served``, ``RequestTrace``) hang off it. Nothing here knows HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Attempted", "BatchTrace", "RequestRecord", "RequestTrace", "Served"]


@dataclass(slots=True)
class Attempted:
    """One call of a deployment: who, and how it ended (as :func:`gateway.routing.router.outcome_of` says)."""

    deployment: str
    provider: str
    outcome: str


@dataclass(slots=True)
class BatchTrace:
    """One batch's routing: its inputs ``[start, stop)`` and each attempt, in order."""

    start: int
    stop: int
    attempts: list[Attempted] = field(default_factory=list)


@dataclass(slots=True)
class RequestTrace:
    """What a request went through so far, kept even when it fails (for the usage ledger).

    ``batches[i].attempts`` answers "how many attempts did batch i make, and where".
    """

    batches: list[BatchTrace] = field(default_factory=list)

    def batch(self, start: int, stop: int) -> BatchTrace:
        trace = BatchTrace(start, stop)
        self.batches.append(trace)
        return trace

    @property
    def attempts(self) -> int:
        return sum(len(batch.attempts) for batch in self.batches)

    def _tried(self) -> dict[str, str]:
        return {a.deployment: a.provider for batch in self.batches for a in batch.attempts}

    @property
    def deployments(self) -> list[str]:
        """Every deployment tried, in the order first tried."""
        return list(self._tried())

    @property
    def providers(self) -> list[str]:
        """Their providers, each once, in the same order."""
        return list(dict.fromkeys(self._tried().values()))


@dataclass(kw_only=True, slots=True)
class Served:
    """An answered request: the pieces the answer and the usage ledger need.

    ``deployment``, ``provider`` and ``upstream_model`` name what served it: one name, or
    several joined by commas (in the order first used) when its batches went to several.
    """

    alias: str
    vectors: list[Any]
    prompt_tokens: int
    tokens_estimated: bool
    cost_usd: float | None
    deployment: str
    provider: str
    upstream_model: str
    attempts: int
    fallbacks: int
    inputs: int
    #: Chunks per document, for the contextualized endpoint's nested answer.
    groups: list[int] = field(default_factory=list)
    #: The embedding cache's part: ``hit``, ``partial``, ``miss`` or ``off``; the inputs no
    #: backend computed for this request, their tokens, and what they would have cost.
    cache: str = "off"
    cached_inputs: int = 0
    cached_tokens: int = 0
    cost_saved: float | None = None

    def usage(self) -> dict[str, Any]:
        usage: dict[str, Any] = {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens}
        if self.cost_usd is not None:
            usage["cost"] = {"input_cost": self.cost_usd, "total_cost": self.cost_usd, "currency": "USD"}
        return usage


@dataclass(kw_only=True, slots=True)
class RequestRecord:
    """The facts of one request, filled in as they are learned.

    ``billed``: the route's requests are accounted (usage ledger and request metrics), once
    ``authenticated`` (a request refused before that is only counted: no usage row).
    ``rate_headers``: the key's rate-limit headers, for the answer.
    """

    request_id: str
    method: str
    path: str
    billed: bool = False
    authenticated: bool = False
    key_id: str | None = None
    alias: str | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    inputs: int = 0
    trace: RequestTrace | None = None
    served: Served | None = None
    rate_headers: dict[str, str] | None = None
