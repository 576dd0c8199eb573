"""Checks of a request against the alias it names: limits, dimensions, encodings, options."""

from __future__ import annotations

from typing import Any, Sequence

from gateway.errors import InvalidRequest
from gateway.runtime import AliasLimits, AliasRuntime

__all__ = ["check_count", "check_options", "check_output", "check_token_limits", "check_token_ids"]


def check_count(alias: AliasRuntime, count: int, *, limit: int, what: str = "items") -> None:
    if count > limit:
        raise InvalidRequest(
            f"input has {count} {what}; model {alias.name!r} accepts at most {limit} per request",
            param="input",
        )


def check_token_ids(alias: AliasRuntime) -> bool:
    """Whether token-id input can be served by every deployment of the alias, each reading
    the ids in its own ``token_ids`` vocabulary; True when some deployment decodes them as
    cl100k_base (the ids must then be decoded to text)."""
    policies = [d.config.token_ids for d in alias.deployments]
    if "refuse" in policies:
        raise InvalidRequest(
            f"model {alias.name!r} does not accept token ids (its config says token_ids: refuse); "
            "send the text instead",
            param="input",
        )
    for deployment in alias.deployments:
        if deployment.config.token_ids == "native" and not deployment.capabilities.token_ids:
            raise InvalidRequest(
                f"model {alias.name!r} takes text only: its backend does not accept token ids",
                param="input",
            )
    return "cl100k_base" in policies


def check_output(
    alias: AliasRuntime, *, dimensions: int | None, encoding_format: str, limits: AliasLimits | None = None
) -> int:
    """Validate ``dimensions`` and ``encoding_format``; returns the output width.

    ``limits`` are the alias's (:meth:`AliasRuntime.limits`), when the caller has them."""
    limits = limits or alias.limits()
    if dimensions is not None:
        allowed = limits.dimension_range
        if allowed is None:
            raise InvalidRequest(
                f"model {alias.name!r} does not support the dimensions parameter; it returns "
                f"{limits.dimensions} dimensions (leave dimensions out)",
                param="dimensions",
            )
        low, high = allowed
        # high == 0: a Matryoshka deployment whose width is learned from its first answer;
        # the upper bound is checked once the vectors are back (service._finish).
        if dimensions < low or (high and dimensions > high):
            raise InvalidRequest(
                f"dimensions must be between {low} and {high} for model {alias.name!r}, not {dimensions}",
                param="dimensions",
            )
    width = dimensions or limits.dimensions
    if encoding_format == "base64_binary" and width % 8:
        raise InvalidRequest(
            f"base64_binary packs 8 dimensions a byte, so dimensions must be a multiple of 8, not {width}",
            param="dimensions" if dimensions else "encoding_format",
        )
    return width


def check_options(alias: AliasRuntime, extra_body: dict[str, Any]) -> None:
    accepted = alias.accepted_options()
    if accepted is not None:
        unknown = sorted(set(extra_body) - accepted)
        if unknown:
            listing = ", ".join(sorted(accepted)) or "none"
            raise InvalidRequest(
                f"extra_body.{unknown[0]} is not an option of model {alias.name!r}; options it accepts: {listing}",
                param=f"extra_body.{unknown[0]}",
            )
    if "truncate" in extra_body and not isinstance(extra_body["truncate"], bool):
        raise InvalidRequest("extra_body.truncate must be true or false", param="extra_body.truncate")


def check_token_limits(alias: AliasRuntime, counts: Sequence[int], *, estimated: bool) -> None:
    per_input = alias.config.max_input_tokens
    about = "about " if estimated else ""
    if per_input is not None:
        for index, count in enumerate(counts):
            if count > per_input:
                raise InvalidRequest(
                    f"input[{index}] has {about}{count} tokens; model {alias.name!r} accepts at most "
                    f"{per_input} tokens per input",
                    param=f"input[{index}]",
                )
    total = sum(counts)
    if total > alias.max_request_tokens:
        raise InvalidRequest(
            f"input has {about}{total} tokens in total; model {alias.name!r} accepts at most "
            f"{alias.max_request_tokens} tokens per request",
            param="input",
        )
