"""The embeddings pipeline, once, for every provider alike.

validate against the alias → count tokens where limits need it → split into batches →
route each batch → merge in input order → dimensions → encoding → response and usage.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from gateway.batching import Batch, merge_results, run_batches, split_batches
from gateway.encoding import (
    encode_rows,
    normalize_rows,
    quantize_binary,
    quantize_int8,
    truncate_dimensions,
)
from gateway.errors import InvalidRequest, ModelNotFound
from gateway.routing import Router
from gateway.runtime import AliasRuntime, DeploymentRuntime, Runtime
from gateway.schema import EmbeddingsRequest
from gateway.tokens import estimate_tokens
from providers.base import EmbeddingResult, EmbedInput, EmbedOptions, NativeEncoding, UpstreamResponseError

__all__ = ["EmbeddingService", "Served"]

#: Batches of one request sent to backends at the same time.
BATCH_CONCURRENCY = 4
#: Requests this size or smaller are counted on the event loop; larger ones in a thread.
_INLINE_COUNT = 16


@dataclass(kw_only=True)
class Served:
    """An answered request: the pieces the HTTP layer and the usage ledger need."""

    alias: str
    vectors: list[Any]
    prompt_tokens: int
    tokens_estimated: bool
    cost_usd: float | None
    deployments: list[str]
    providers: list[str]
    attempts: int
    inputs: int
    extra_headers: dict[str, str] = field(default_factory=dict)

    def usage(self) -> dict[str, Any]:
        usage: dict[str, Any] = {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens}
        if self.cost_usd is not None:
            usage["cost"] = {"input_cost": self.cost_usd, "total_cost": self.cost_usd, "currency": "USD"}
        return usage

    def headers(self) -> dict[str, str]:
        headers = {
            "x-gateway-deployment": ",".join(dict.fromkeys(self.deployments)),
            "x-gateway-provider": ",".join(dict.fromkeys(self.providers)),
            "x-gateway-attempts": str(self.attempts),
        }
        if self.tokens_estimated:
            headers["x-gateway-usage-estimated"] = "true"
        return {**headers, **self.extra_headers}


class EmbeddingService:
    def __init__(self, runtime: Runtime, router: Router) -> None:
        self.runtime = runtime
        self.router = router

    def resolve(self, model: str) -> AliasRuntime:
        alias = self.runtime.aliases.get(model)
        if alias is None:
            known = ", ".join(sorted(self.runtime.aliases))
            raise ModelNotFound(f"model {model!r} does not exist; available models: {known}", param="model")
        return alias

    async def embed(self, request: EmbeddingsRequest, *, request_id: str | None = None) -> Served:
        alias = self.resolve(request.model)
        inputs = request.inputs
        self._check_shape(alias, request)
        output_dimensions = request.dimensions or alias.dimensions
        counts, estimated = await self._token_counts(alias, inputs)
        if counts is not None:
            self._check_token_limits(alias, counts)
        max_inputs, max_tokens = alias.batch_limits()
        batches = split_batches(
            counts if counts is not None else [1] * len(inputs), max_inputs=max_inputs, max_tokens=max_tokens
        )
        native = _native_encoding(request.encoding_format)
        served_by: list[tuple[DeploymentRuntime, int]] = []

        async def call(batch: Batch) -> EmbeddingResult:
            chunk = inputs[batch.start : batch.stop]
            routed = await self.router.run(
                alias, lambda deployment: self._attempt(deployment, chunk, request, native, request_id)
            )
            served_by.append((routed.deployment, routed.attempts))
            return _finish(routed.result, native, output_dimensions)

        result = merge_results(await run_batches(batches, call, concurrency=BATCH_CONCURRENCY))
        deployments = [d for d, _ in served_by]
        return Served(
            alias=alias.name,
            vectors=encode_rows(result.vectors, request.encoding_format, native=result.encoding),
            prompt_tokens=int(result.prompt_tokens or 0),
            tokens_estimated=result.tokens_estimated,
            cost_usd=_cost(result, deployments),
            deployments=[d.name for d in deployments],
            providers=[d.config.provider for d in deployments],
            attempts=sum(a for _, a in served_by),
            inputs=len(inputs),
        )

    async def _attempt(
        self,
        deployment: DeploymentRuntime,
        chunk: Sequence[EmbedInput],
        request: EmbeddingsRequest,
        native: NativeEncoding,
        request_id: str | None,
    ) -> EmbeddingResult:
        capabilities = deployment.capabilities
        dimensions = request.dimensions if capabilities.native_dimensions is not None else None
        gateway_truncates = request.dimensions is not None and dimensions is None
        use_native = native in capabilities.native_encodings and not gateway_truncates
        encoding: NativeEncoding = native if use_native else "float"
        options = EmbedOptions(
            dimensions=dimensions,
            encoding=encoding,
            user=request.user,
            extra_body={**deployment.config.extra_body, **request.extra_body},
            request_id=request_id,
            timeout_s=deployment.config.timeout_s,
        )
        result = await deployment.provider.embed(chunk, options)
        if result.vectors.shape[0] != len(chunk):
            raise UpstreamResponseError(
                f"deployment {deployment.name!r} returned {result.vectors.shape[0]} vectors for {len(chunk)} inputs"
            )
        return result

    def _check_shape(self, alias: AliasRuntime, request: EmbeddingsRequest) -> None:
        count = len(request.inputs)
        if count > alias.max_inputs:
            raise InvalidRequest(
                f"input has {count} items; model {alias.name!r} accepts at most {alias.max_inputs} per request",
                param="input",
            )
        if request.input_kind == "tokens" and not all(d.capabilities.token_ids for d in alias.deployments):
            raise InvalidRequest(
                f"model {alias.name!r} takes text only: its backend does not accept token ids",
                param="input",
            )
        if request.dimensions is not None:
            allowed = alias.dimension_range()
            if allowed is None:
                raise InvalidRequest(
                    f"model {alias.name!r} does not support the dimensions parameter; it returns "
                    f"{alias.dimensions} dimensions (leave dimensions out)",
                    param="dimensions",
                )
            low, high = allowed
            if not low <= request.dimensions <= high:
                raise InvalidRequest(
                    f"dimensions must be between {low} and {high} for model {alias.name!r}, "
                    f"not {request.dimensions}",
                    param="dimensions",
                )
        output_dimensions = request.dimensions or alias.dimensions
        if request.encoding_format == "base64_binary" and output_dimensions % 8:
            raise InvalidRequest(
                f"base64_binary packs 8 dimensions a byte, so dimensions must be a multiple of 8, "
                f"not {output_dimensions}",
                param="dimensions" if request.dimensions else "encoding_format",
            )
        accepted = alias.accepted_options()
        if accepted is not None:
            unknown = sorted(set(request.extra_body) - accepted)
            if unknown:
                listing = ", ".join(sorted(accepted)) or "none"
                raise InvalidRequest(
                    f"extra_body.{unknown[0]} is not an option of model {alias.name!r}; "
                    f"options it accepts: {listing}",
                    param=f"extra_body.{unknown[0]}",
                )
        if "truncate" in request.extra_body and not isinstance(request.extra_body["truncate"], bool):
            raise InvalidRequest("extra_body.truncate must be true or false", param="extra_body.truncate")

    async def _token_counts(
        self, alias: AliasRuntime, inputs: Sequence[EmbedInput]
    ) -> tuple[list[int] | None, bool]:
        """Token counts when a limit could be reached, else ``None`` (counting is not free)."""
        _, batch_tokens = alias.batch_limits()
        worst_case = len(inputs) * alias.max_input_tokens
        explicit_input_limit = alias.config.max_input_tokens is not None
        if worst_case <= min(alias.max_request_tokens, batch_tokens) and not explicit_input_limit:
            return None, False
        provider = alias.deployments[0].provider
        if len(inputs) <= _INLINE_COUNT:
            counts = provider.count_tokens(inputs)
        else:
            counts = await asyncio.to_thread(provider.count_tokens, inputs)
        if counts is not None:
            return counts, False
        return [estimate_tokens(item) for item in inputs], True

    def _check_token_limits(self, alias: AliasRuntime, counts: Sequence[int]) -> None:
        if alias.config.max_input_tokens is not None:
            for index, count in enumerate(counts):
                if count > alias.config.max_input_tokens:
                    raise InvalidRequest(
                        f"input[{index}] has {count} tokens; model {alias.name!r} accepts at most "
                        f"{alias.config.max_input_tokens} tokens per input",
                        param=f"input[{index}]",
                    )
        total = sum(counts)
        if total > alias.max_request_tokens:
            raise InvalidRequest(
                f"input has {total} tokens in total; model {alias.name!r} accepts at most "
                f"{alias.max_request_tokens} tokens per request",
                param="input",
            )


def _finish(result: EmbeddingResult, target: NativeEncoding, dimensions: int) -> EmbeddingResult:
    """One batch's vectors in the request's final form, so batches from any backend merge."""
    vectors = result.vectors
    if result.encoding == "int8" and target != "int8":
        vectors, result.encoding = normalize_rows(vectors.astype(np.float32) / 127.0), "float"
    if result.encoding == "binary" and target != "binary":
        raise UpstreamResponseError("a backend returned binary vectors where floats were asked for")
    if result.encoding == "float":
        if dimensions < vectors.shape[1]:
            vectors = truncate_dimensions(vectors, dimensions)
        if target == "int8":
            vectors = quantize_int8(vectors)
        elif target == "binary":
            vectors = quantize_binary(vectors)
    result.vectors, result.encoding = vectors, target
    return result


def _native_encoding(encoding_format: str) -> NativeEncoding:
    """What to ask a backend for, so bytes can pass through without conversion."""
    if encoding_format == "base64_int8":
        return "int8"
    if encoding_format == "base64_binary":
        return "binary"
    return "float"


def _cost(result: EmbeddingResult, deployments: Sequence[DeploymentRuntime]) -> float | None:
    if result.cost_usd is not None:
        return result.cost_usd
    prices = {d.config.price_per_million_tokens for d in deployments}
    if len(prices) != 1 or None in prices:
        return None
    price = prices.pop()
    assert price is not None
    return round((result.prompt_tokens or 0) * price / 1_000_000, 12)


