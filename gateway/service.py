"""The embeddings pipeline, once, for every provider alike.

validate against the alias → count tokens where limits need it → split into batches →
route each batch → bring each batch to the requested form → merge in input order →
encode → response and usage.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from gateway.batching import Batch, Budget, merge_results, run_batches, split_batches
from gateway.encoding import encode_rows, normalize_rows, quantize_binary, quantize_int8, truncate_dimensions
from gateway.errors import InvalidRequest, ModelNotFound
from gateway.routing.router import Router, SpacePin
from gateway.runtime import AliasLimits, AliasRuntime, DeploymentRuntime, Runtime
from gateway.schema import ContextualizedRequest, EmbeddingsRequest
from gateway.validation import check_count, check_options, check_output, check_token_ids, check_token_limits
from providers.base import (
    EmbeddingResult,
    EmbedInput,
    EmbedOptions,
    InvalidInput,
    NativeEncoding,
    UpstreamResponseError,
)
from providers.upstream.wire import estimate_tokens

__all__ = ["EmbeddingService", "RequestTrace", "Served"]

#: Batches of one request sent to backends at the same time.
BATCH_CONCURRENCY = 4
#: Requests this size or smaller are counted on the event loop; larger ones in a thread.
_INLINE_COUNT = 16
_INDEX = re.compile(r"input\[(\d+)\]")


@dataclass(slots=True)
class RequestTrace:
    """What a request went through so far, kept even when it fails (for the usage ledger)."""

    attempts: int = 0
    deployments: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)

    def tried(self, deployment: DeploymentRuntime) -> None:
        self.attempts += 1
        if deployment.name not in self.deployments:
            self.deployments.append(deployment.name)
            self.providers.append(deployment.config.provider)


@dataclass(kw_only=True, slots=True)
class Served:
    """An answered request: the pieces the HTTP layer and the usage ledger need.

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

    def usage(self) -> dict[str, Any]:
        usage: dict[str, Any] = {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens}
        if self.cost_usd is not None:
            usage["cost"] = {"input_cost": self.cost_usd, "total_cost": self.cost_usd, "currency": "USD"}
        return usage

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The response headers that tell what served the request (names from the config
        are sent as UTF-8: HTTP headers carry bytes, and a name outside Latin-1 must not
        turn answered requests into errors)."""
        headers = [
            (b"x-gateway-deployment", self.deployment.encode()),
            (b"x-gateway-provider", self.provider.encode()),
            (b"x-gateway-attempts", str(self.attempts).encode()),
        ]
        if self.tokens_estimated:
            headers.append((b"x-gateway-usage-estimated", b"true"))
        return headers


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

    async def count_tokens(self, alias: AliasRuntime, inputs: Sequence[EmbedInput]) -> tuple[list[int], bool]:
        """Token counts: exact where the backend can count, else estimated (flag True)."""
        provider = alias.deployments[0].provider
        if len(inputs) <= _INLINE_COUNT:
            counts = provider.count_tokens(inputs)
        else:
            counts = await asyncio.to_thread(provider.count_tokens, inputs)
        if counts is not None:
            return counts, False
        return [estimate_tokens(item) for item in inputs], True

    async def embed(
        self, request: EmbeddingsRequest, *, request_id: str | None = None, trace: RequestTrace | None = None
    ) -> Served:
        alias = self.resolve(request.model)
        limits = alias.limits()
        inputs = request.inputs
        if limits.max_inputs is not None:
            check_count(alias, len(inputs), limit=limits.max_inputs)
        if request.input_kind == "tokens":
            check_token_ids(alias)
        width = check_output(
            alias, dimensions=request.dimensions, encoding_format=request.encoding_format, limits=limits
        )
        if request.extra_body:
            check_options(alias, request.extra_body)
        max_inputs, max_tokens = limits.batch_inputs, limits.batch_tokens
        budgets: list[Budget] = []
        if self._counting_needed(alias, limits, len(inputs)):
            counts, estimated = await self.count_tokens(alias, inputs)
            check_token_limits(alias, counts, estimated=estimated)
            budgets.append(Budget(counts, max_tokens))
        batches = split_batches(len(inputs), max_items=max_inputs, budgets=budgets)
        return await self._serve(alias, inputs, batches, request, width, request_id, trace or RequestTrace())

    async def embed_contextualized(
        self, request: ContextualizedRequest, *, request_id: str | None = None, trace: RequestTrace | None = None
    ) -> Served:
        alias = self.resolve(request.model)
        if not all(d.capabilities.contextualized for d in alias.deployments):
            able = sorted(
                name for name, a in self.runtime.aliases.items()
                if all(d.ready and d.capabilities.contextualized for d in a.deployments)
            )
            raise InvalidRequest(
                f"model {alias.name!r} does not produce contextualized embeddings; models that do: "
                f"{', '.join(able) or 'none in this config'}",
                param="model",
            )
        documents = request.documents
        capabilities = [d.capabilities for d in alias.deployments]
        max_documents = min(c.max_documents for c in capabilities)
        max_chunks = min(c.max_chunks for c in capabilities)
        chunk_counts = [len(doc) for doc in documents]
        check_count(alias, len(documents), limit=max_documents, what="documents")
        check_count(alias, sum(chunk_counts), limit=max_chunks, what="chunks in all")
        width = check_output(alias, dimensions=request.dimensions, encoding_format=request.encoding_format)
        check_options(alias, request.extra_body)
        tokens = [sum(estimate_tokens(chunk) for chunk in doc) for doc in documents]
        _, max_tokens = alias.batch_limits()
        check_token_limits(alias, tokens, estimated=True)
        batches = split_batches(
            len(documents),
            max_items=max_documents,
            budgets=[Budget(chunk_counts, max_chunks), Budget(tokens, max_tokens)],
        )
        served = await self._serve(alias, documents, batches, request, width, request_id, trace or RequestTrace())
        served.groups = chunk_counts
        return served

    def _counting_needed(self, alias: AliasRuntime, limits: AliasLimits, count: int) -> bool:
        """Counting tokens is not free: only when a token limit could be reached."""
        if alias.config.max_input_tokens is not None:
            return True
        return count * limits.max_input_tokens > min(alias.max_request_tokens, limits.batch_tokens)

    async def _serve(
        self,
        alias: AliasRuntime,
        items: Sequence[Any],
        batches: Sequence[Batch],
        request: EmbeddingsRequest | ContextualizedRequest,
        width: int,
        request_id: str | None,
        trace: RequestTrace,
    ) -> Served:
        target = _native_encoding(request.encoding_format)
        contextualized = isinstance(request, ContextualizedRequest)
        served_by: list[tuple[DeploymentRuntime, int, int]] = []
        pin = SpacePin()
        deadline = self.router.deadline(alias)

        async def run_batch(batch: Batch) -> EmbeddingResult:
            chunk = items[batch.start : batch.stop]

            async def attempt(deployment: DeploymentRuntime) -> EmbeddingResult:
                trace.tried(deployment)
                options = _options(deployment, request, target, request_id)
                if contextualized:
                    result = await deployment.provider.embed_contextualized(chunk, options)
                    expected = sum(len(doc) for doc in chunk)
                else:
                    result = await deployment.provider.embed(chunk, options)
                    expected = len(chunk)
                if result.vectors.shape[0] != expected:
                    raise UpstreamResponseError(
                        f"deployment {deployment.name!r} returned {result.vectors.shape[0]} vectors for {expected} inputs"
                    )
                return result

            try:
                routed = await self.router.run(alias, attempt, pin=pin, deadline=deadline)
            except InvalidInput as exc:
                raise _shifted(exc, batch.start) from None
            served_by.append((routed.deployment, routed.attempts, routed.fallbacks))
            return _finish(routed.result, target, width, requested=request.dimensions, alias=alias.name)

        result = merge_results(await run_batches(batches, run_batch, concurrency=BATCH_CONCURRENCY))
        deployments = [d for d, _, _ in served_by]
        attempts = fallbacks = 0
        for _, tried, moved in served_by:
            attempts += tried
            fallbacks += moved
        deployment, provider, upstream_model = _names(deployments)
        return Served(
            alias=alias.name,
            vectors=encode_rows(result.vectors, request.encoding_format, native=result.encoding),
            prompt_tokens=int(result.prompt_tokens or 0),
            tokens_estimated=result.tokens_estimated,
            cost_usd=_cost(result, deployments),
            deployment=deployment,
            provider=provider,
            upstream_model=upstream_model,
            attempts=attempts,
            fallbacks=fallbacks,
            inputs=len(items),
        )


def _names(deployments: Sequence[DeploymentRuntime]) -> tuple[str, str, str]:
    """The deployment, provider and upstream model that served a request, each joined by
    commas (in the order first used) when its batches went to several deployments."""
    if len(deployments) == 1:
        config = deployments[0].config
        return config.name, config.provider, config.model or ""
    return (
        ",".join(dict.fromkeys(d.config.name for d in deployments)),
        ",".join(dict.fromkeys(d.config.provider for d in deployments)),
        ",".join(dict.fromkeys(d.config.model or "" for d in deployments)),
    )


def _options(
    deployment: DeploymentRuntime,
    request: EmbeddingsRequest | ContextualizedRequest,
    target: NativeEncoding,
    request_id: str | None,
) -> EmbedOptions:
    capabilities = deployment.capabilities
    dimensions = request.dimensions if capabilities.native_dimensions is not None else None
    gateway_truncates = request.dimensions is not None and dimensions is None
    use_native = target in capabilities.native_encodings and not gateway_truncates
    defaults = deployment.config.extra_body
    return EmbedOptions(
        dimensions=dimensions,
        encoding=target if use_native else "float",
        user=request.user,
        extra_body={**defaults, **request.extra_body} if defaults else request.extra_body,
        request_id=request_id,
        timeout_s=deployment.config.timeout_s,
    )


def _shifted(exc: InvalidInput, offset: int) -> InvalidInput:
    """An upstream's ``input[i]`` counts within the batch sent; the client counts from its start."""
    if offset == 0:
        return exc

    def shift(text: str) -> str:
        return _INDEX.sub(lambda m: f"input[{int(m.group(1)) + offset}]", text)

    return InvalidInput(shift(exc.message), param=shift(exc.param) if exc.param else None)


def _finish(
    result: EmbeddingResult, target: NativeEncoding, dimensions: int, *, requested: int | None, alias: str
) -> EmbeddingResult:
    """One batch's vectors in the request's final form, so batches from any backend merge."""
    vectors = result.vectors
    if result.encoding == "int8" and target != "int8":
        vectors, result.encoding = normalize_rows(vectors.astype(np.float32) / 127.0), "float"
    if result.encoding == "binary" and target != "binary":
        raise UpstreamResponseError("a backend returned binary vectors where floats were asked for")
    if result.encoding == "float":
        width = int(vectors.shape[1])
        if dimensions > width:
            if requested is None:
                raise UpstreamResponseError(
                    f"a backend of model {alias!r} returned {width} dimensions, expected {dimensions}"
                )
            # The client asked for more than there is: only found here while a Matryoshka
            # deployment's width was still unknown (check_output knows it afterwards).
            raise InvalidRequest(
                f"dimensions must be between 1 and {width} for model {alias!r}, not {dimensions}",
                param="dimensions",
            )
        if 0 < dimensions < width:
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
    price = deployments[0].config.price_per_million_tokens
    if price is None or any(d.config.price_per_million_tokens != price for d in deployments[1:]):
        return None
    return round((result.prompt_tokens or 0) * price / 1_000_000, 12)
