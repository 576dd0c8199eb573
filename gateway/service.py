"""The embeddings pipeline, once, for every provider alike, in one direction.

resolve the alias → cheap checks (counts, token ids, output) → count tokens once, where a
limit or the key's token rate needs it → admit (rate limits, with that count) → split into
batches → route each batch → bring each batch to the requested form → merge in input
order → encode → ``Served`` (what the answer and the usage ledger need).
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

import numpy as np

from gateway.batching import Batch, Budget, merge_results, run_batches, split_batches
from gateway.caching import CacheDirective, Caching
from gateway.config import KeyConfig
from gateway.encoding import encode_rows, normalize_rows, quantize_binary, quantize_int8, truncate_dimensions
from gateway.errors import InvalidRequest, ModelNotFound
from gateway.ratelimit import Limiter, RateLimiter
from gateway.record import RequestRecord, RequestTrace, Served
from gateway.routing.router import Router, SpacePin
from gateway.runtime import AliasLimits, AliasRuntime, DeploymentRuntime, Runtime
from gateway.schema import ContextualizedRequest, EmbeddingsRequest
from gateway.tokens import CL100K
from gateway.validation import check_count, check_options, check_output, check_token_ids, check_token_limits
from providers.base import (
    EmbeddingResult,
    EmbedInput,
    EmbedOptions,
    InputType,
    InvalidInput,
    NativeEncoding,
    UpstreamResponseError,
)
from providers.upstream.wire import estimate_tokens

__all__ = ["EmbeddingService", "RequestTrace", "Served"]

#: Batches of one request sent to backends at the same time.
BATCH_CONCURRENCY = 4
#: Requests of at most this many inputs, and characters (or token ids) in all, are counted
#: on the event loop; larger ones in a thread (a 10 MB string must not stall other clients).
_INLINE_COUNT = 16
_INLINE_SIZE = 16_384

AnyRequest = EmbeddingsRequest | ContextualizedRequest


class EmbeddingService:
    """Serves parsed requests; ``limiter`` admits each one once its tokens are counted."""

    def __init__(
        self, runtime: Runtime, router: Router, *, limiter: Limiter | None = None, caching: Caching | None = None
    ) -> None:
        self.runtime = runtime
        self.router = router
        self.limiter: Limiter = limiter or RateLimiter()
        self.caching = caching

    def resolve(self, model: str) -> AliasRuntime:
        alias = self.runtime.aliases.get(model)
        if alias is None:
            known = ", ".join(sorted(self.runtime.aliases))
            raise ModelNotFound(f"model {model!r} does not exist; available models: {known}", param="model")
        return alias

    async def count_tokens(
        self,
        alias: AliasRuntime,
        inputs: Sequence[EmbedInput],
        input_type: InputType | None = None,
        *,
        decoded: Sequence[str] | None = None,
    ) -> tuple[list[int], bool]:
        """Token counts: exact where the backend can count, else estimated (flag True).

        Token arrays are counted as the first deployment reads them: cl100k_base ids as the
        text they decode to (``decoded``, when the caller has it already)."""
        deployment = alias.deployments[0]
        provider = deployment.provider
        kind = deployment.input_type(input_type)
        if inputs and isinstance(inputs[0], list) and deployment.config.token_ids != "native":
            if deployment.config.token_ids == "refuse":
                return [estimate_tokens(item) for item in inputs], True
            if decoded is None:
                decoded = await CL100K.decode([item for item in inputs if isinstance(item, list)])
            inputs = decoded
        if len(inputs) <= _INLINE_COUNT and sum(len(item) for item in inputs) <= _INLINE_SIZE:
            counts = provider.count_tokens(inputs, input_type=kind)
        else:
            counts = await asyncio.to_thread(provider.count_tokens, inputs, input_type=kind)
        if counts is not None:
            return counts, False
        return [estimate_tokens(item) for item in inputs], True

    async def embed(
        self,
        request: EmbeddingsRequest,
        *,
        record: RequestRecord,
        key: KeyConfig | None = None,
        cache: CacheDirective = "use",
    ) -> Served:
        alias = self.resolve(request.model)
        limits = alias.limits()
        inputs = request.inputs
        if limits.max_inputs is not None:
            check_count(alias, len(inputs), limit=limits.max_inputs)
        decoded: list[str] | None = None
        if request.input_kind == "tokens" and check_token_ids(alias):
            decoded = await CL100K.decode([item for item in inputs if isinstance(item, list)])
        encoding_format = request.encoding_format or alias.config.default_encoding_format or "float"
        width = check_output(alias, dimensions=request.dimensions, encoding_format=encoding_format, limits=limits)
        if request.extra_body:
            check_options(alias, request.extra_body)
        budgets: list[Budget] = []
        counts: list[int] | None = None
        charged = 0
        metered = key is not None and key.tpm is not None
        if metered or self._counting_needed(alias, limits, len(inputs)):
            counts, estimated = await self.count_tokens(alias, inputs, request.input_type, decoded=decoded)
            check_token_limits(alias, counts, estimated=estimated)
            budgets.append(Budget(counts, limits.batch_tokens))
            charged = sum(counts)
        await self._admit(record, key, charged)
        run = _RequestRun(self.router, alias, request, record, width, encoding_format=encoding_format, decoded=decoded)
        cached = self.caching.plan(run, key=key, directive=cache) if self.caching is not None else None
        if cached is not None:
            served = await cached.serve(inputs, decoded=decoded, counts=counts, limits=limits)
        else:
            batches = split_batches(len(inputs), max_items=limits.batch_inputs, budgets=budgets)
            served = await run.serve(inputs, batches)
        self._settle(key, served, charged)
        return served

    async def embed_contextualized(
        self, request: ContextualizedRequest, *, record: RequestRecord, key: KeyConfig | None = None
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
        encoding_format = request.encoding_format or alias.config.default_encoding_format or "base64_int8"
        width = check_output(alias, dimensions=request.dimensions, encoding_format=encoding_format)
        check_options(alias, request.extra_body)
        tokens = [sum(estimate_tokens(chunk) for chunk in doc) for doc in documents]
        _, max_tokens = alias.batch_limits()
        check_token_limits(alias, tokens, estimated=True)
        charged = sum(tokens) if key is not None and key.tpm is not None else 0
        await self._admit(record, key, charged)
        batches = split_batches(
            len(documents),
            max_items=max_documents,
            budgets=[Budget(chunk_counts, max_chunks), Budget(tokens, max_tokens)],
        )
        run = _RequestRun(self.router, alias, request, record, width, encoding_format=encoding_format)
        served = await run.serve(documents, batches)
        served.groups = chunk_counts
        self._settle(key, served, charged)
        return served

    async def _admit(self, record: RequestRecord, key: KeyConfig | None, tokens: int) -> None:
        """The key's rate limits, charged ``tokens`` (the count the checks above made)."""
        if key is not None and (key.rpm is not None or key.tpm is not None):
            record.rate_headers = (await self.limiter.admit(key, tokens)).headers

    def _settle(self, key: KeyConfig | None, served: Served, charged: int) -> None:
        """Charge the key what the backends really counted, now that it is known."""
        if key is not None and key.tpm is not None:
            self.limiter.adjust_tokens(key, served.prompt_tokens - charged)

    def _counting_needed(self, alias: AliasRuntime, limits: AliasLimits, count: int) -> bool:
        """Counting tokens is not free: only when a token limit could be reached."""
        if alias.config.max_input_tokens is not None:
            return True
        return count * limits.max_input_tokens > min(alias.max_request_tokens, limits.batch_tokens)


class _RequestRun:
    """One request on its way through the router: its batches, each routed on its own,
    all held to one vector space and one deadline, every attempt traced.

    ``decoded``: the text of each token-array item, for deployments that read the ids as
    cl100k_base; the others get the items as they are."""

    def __init__(
        self,
        router: Router,
        alias: AliasRuntime,
        request: AnyRequest,
        record: RequestRecord,
        width: int,
        *,
        encoding_format: str,
        decoded: Sequence[str] | None = None,
    ) -> None:
        self.router = router
        self.alias = alias
        self.request = request
        self.request_id = record.request_id
        self.trace = record.trace = RequestTrace()
        self.width = width
        self.encoding_format = encoding_format
        self.decoded = decoded
        self.target = _native_encoding(encoding_format)
        #: What backends are asked for: the target, or full-width floats for the cache.
        self.ask: NativeEncoding = self.target
        self.contextualized = isinstance(request, ContextualizedRequest)
        self.pin = SpacePin()
        self.deadline = router.deadline(alias)

    async def serve(self, items: Sequence[Any], batches: Sequence[Batch]) -> Served:
        routed = await run_batches(
            batches, lambda batch: self._run_batch(items, batch), concurrency=BATCH_CONCURRENCY
        )
        result = merge_results([r for r, _, _, _ in routed])
        deployments = [d for _, d, _, _ in routed]
        deployment, provider, upstream_model = _names(deployments)
        return Served(
            alias=self.alias.name,
            vectors=encode_rows(result.vectors, self.encoding_format, native=result.encoding),
            prompt_tokens=int(result.prompt_tokens or 0),
            tokens_estimated=result.tokens_estimated,
            cost_usd=_cost(result, deployments),
            deployment=deployment,
            provider=provider,
            upstream_model=upstream_model,
            attempts=sum(attempts for _, _, attempts, _ in routed),
            fallbacks=sum(fallbacks for _, _, _, fallbacks in routed),
            inputs=len(items),
        )

    async def _run_batch(
        self, items: Sequence[Any], batch: Batch
    ) -> tuple[EmbeddingResult, DeploymentRuntime, int, int]:
        chunk = items[batch.start : batch.stop]
        texts = self.decoded[batch.start : batch.stop] if self.decoded is not None else None
        result, deployment, attempts, fallbacks = await self.embed_batch(chunk, texts, batch.start)
        return self.finish(result), deployment, attempts, fallbacks

    async def embed_batch(
        self, chunk: Sequence[Any], texts: Sequence[str] | None, start: int
    ) -> tuple[EmbeddingResult, DeploymentRuntime, int, int]:
        """One batch routed to a deployment, as the backend answered it. ``texts``: the
        items' cl100k_base text, if token arrays; ``start``: the first item's position."""
        trace = self.trace.batch(start, start + len(chunk))
        try:
            routed = await self.router.run(
                self.alias, _BatchCall(self, chunk, texts), pin=self.pin, deadline=self.deadline, trace=trace
            )
        except InvalidInput as exc:
            exc.shift(start)  # the backend counted from the batch's start; the client from its own
            raise
        return routed.result, routed.deployment, routed.attempts, routed.fallbacks

    def finish(self, result: EmbeddingResult) -> EmbeddingResult:
        """Vectors brought to the request's width and encoding."""
        return _finish(result, self.target, self.width, requested=self.request.dimensions, alias=self.alias.name)

    def options(self, deployment: DeploymentRuntime) -> EmbedOptions:
        """What ``deployment`` is asked along with the inputs."""
        return _options(deployment, self.request, self.ask, self.request_id)


class _BatchCall:
    """One batch's call of a deployment (the router's ``attempt``), checked for its count."""

    __slots__ = ("run", "chunk", "texts")

    def __init__(self, run: _RequestRun, chunk: Sequence[Any], texts: Sequence[str] | None = None) -> None:
        self.run = run
        self.chunk = chunk
        self.texts = texts

    async def __call__(self, deployment: DeploymentRuntime) -> EmbeddingResult:
        run, chunk = self.run, self.chunk
        options = run.options(deployment)
        if run.contextualized:
            result = await deployment.provider.embed_contextualized(chunk, options)
            expected = sum(len(doc) for doc in chunk)
        else:
            texts = self.texts
            sent = texts if texts is not None and deployment.config.token_ids == "cl100k_base" else chunk
            result = await deployment.provider.embed(sent, options)
            expected = len(chunk)
        if result.vectors.shape[0] != expected:
            raise UpstreamResponseError(
                f"deployment {deployment.name!r} returned {result.vectors.shape[0]} vectors for {expected} inputs"
            )
        return result


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
    request: AnyRequest,
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
        input_type=deployment.input_type(request.input_type),
    )


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
    price = deployments[0].price_per_million_tokens
    if price is None or any(d.price_per_million_tokens != price for d in deployments[1:]):
        return None
    return round((result.prompt_tokens or 0) * price / 1_000_000, 12)
