"""The pipeline's cache step: per input, vectors from the cache, the rest from backends.

A request's inputs are made unique (a repeat is embedded once), each unique input is looked
up under every namespace its alias may be served from, and only the inputs found nowhere
(nor in flight for another request) go to the backends, still split into batches they
accept. Backends are asked for full-width float32 vectors, which are what is stored; the
request's width and encoding are applied to the merged rows on the way out, so a vector
stored for a ``float`` request serves a ``base64_binary`` one as well.

Accounting stays honest: ``usage`` counts every input's tokens as the backend would (a hit
carries the token count its vector cost); ``cost`` is only what backends embedded for this
request; ``cost_saved`` is the rest, at the same price.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from gateway.batching import Batch, Budget, run_batches, split_batches
from gateway.cache import Deliver, EmbeddingCache, Entry, Namespace, namespace
from gateway.config import GatewayConfig, KeyConfig
from gateway.encoding import encode_rows, normalize_rows
from gateway.record import Served
from gateway.runtime import AliasLimits, AliasRuntime, DeploymentRuntime
from gateway.schema import EmbeddingsRequest
from providers.base import EmbeddingResult, EmbedInput, EmbedOptions, InvalidInput, UpstreamResponseError
from providers.upstream.wire import estimate_tokens

__all__ = ["CacheDirective", "CachedRequest", "Caching", "cache_directive", "split_tokens"]

#: ``use`` the cache; ``refresh`` it (no-cache: fresh vectors, still stored); ``skip`` it (no-store).
CacheDirective = Literal["use", "refresh", "skip"]
#: Batches of one request's missing inputs sent to backends at the same time.
BATCH_CONCURRENCY = 4

Routed = tuple[EmbeddingResult, DeploymentRuntime, int, int]
_NOT_MADE = object()
#: Namespaces remembered at most (each scope: key id adds its own).
_MEMO_SIZE = 4096


class RequestRun(Protocol):
    """What the cache step needs of the pipeline's run of one request."""

    alias: AliasRuntime
    request: Any
    ask: Any
    encoding_format: str

    async def embed_batch(self, chunk: Sequence[Any], texts: Sequence[str] | None, start: int) -> Routed: ...

    def finish(self, result: EmbeddingResult) -> EmbeddingResult: ...

    def options(self, deployment: DeploymentRuntime) -> EmbedOptions: ...


def cache_directive(header: str | None) -> CacheDirective:
    """A request's ``Cache-Control`` header as a directive (``no-store`` wins over ``no-cache``)."""
    if not header:
        return "use"
    tokens = {part.strip().split("=", 1)[0].lower() for part in header.split(",")}
    if "no-store" in tokens:
        return "skip"
    if "no-cache" in tokens:
        return "refresh"
    return "use"


class Caching:
    """Decides per request whether the cache serves it, and builds its :class:`CachedRequest`."""

    def __init__(self, cache: EmbeddingCache, config: GatewayConfig) -> None:
        self.cache = cache
        self.config = config
        #: Namespaces of requests without extra_body, by what decides them (hashing the
        #: description is a measurable share of a fully cached request).
        self._namespaces: dict[tuple[int, int | None, str | None, str | None], Namespace | None] = {}

    def _namespace(self, deployment: DeploymentRuntime, options: EmbedOptions, scope: str | None) -> Namespace | None:
        if options.extra_body:
            return _namespace(deployment, options, scope)
        memo = (id(deployment), options.dimensions, options.input_type, scope)
        found = self._namespaces.get(memo, _NOT_MADE)
        if found is _NOT_MADE:
            if len(self._namespaces) >= _MEMO_SIZE:
                self._namespaces.clear()
            found = self._namespaces[memo] = _namespace(deployment, options, scope)
        return found if isinstance(found, Namespace) else None

    def plan(self, run: RequestRun, *, key: KeyConfig | None, directive: CacheDirective) -> CachedRequest | None:
        """The cached way to serve ``run``, or None: not cached (no-store, ``cache: false``,
        or an option the cache cannot reason about on every deployment)."""
        alias = run.alias
        if directive == "skip" or not self.config.caches(alias.name) or not isinstance(run.request, EmbeddingsRequest):
            return None
        previous, run.ask = run.ask, "float"
        scope = key.id if key is not None and self.config.cache.scope == "key" else None
        spaces: list[Namespace] = []
        served_at: dict[str, int] = {}
        decodes: list[bool] = []
        for deployment in alias.deployments:
            found = self._namespace(deployment, run.options(deployment), scope)
            if found is not None:
                served_at[deployment.name] = len(spaces)
                spaces.append(found)
                decodes.append(deployment.config.token_ids == "cl100k_base")
        if not spaces:
            run.ask = previous
            return None
        return CachedRequest(self.cache, run, spaces, served_at, decodes, read=directive == "use")


def _namespace(deployment: DeploymentRuntime, options: EmbedOptions, scope: str | None) -> Namespace | None:
    config = deployment.config
    return namespace(
        deployment=config.name,
        provider=config.provider,
        model=config.model,
        space=config.vector_space,
        settings={"options": config.options, "dimensions": config.dimensions},
        dimensions=options.dimensions,
        input_type=options.input_type,
        options=options.extra_body,
        scope=scope,
    )


@dataclass(slots=True)
class _Fresh:
    """One batch a backend embedded for this request."""

    result: EmbeddingResult
    deployment: DeploymentRuntime
    attempts: int
    fallbacks: int


class CachedRequest:
    """One request served through the cache."""

    def __init__(
        self,
        cache: EmbeddingCache,
        run: RequestRun,
        spaces: list[Namespace],
        served_at: dict[str, int],
        decodes: list[bool],
        *,
        read: bool,
    ) -> None:
        self.cache = cache
        self.run = run
        self.spaces = spaces
        self.served_at = served_at
        #: Per namespace: its deployment reads token ids as cl100k_base text, so the key is
        #: the text they decode to (the input as that backend sees it).
        self.decodes = decodes
        self.read = read

    async def serve(
        self,
        items: Sequence[EmbedInput],
        *,
        decoded: Sequence[str] | None,
        counts: Sequence[int] | None,
        limits: AliasLimits,
    ) -> Served:
        unique, first, position_of = _unique(items)
        unique_texts = [decoded[i] for i in first] if decoded is not None else None
        lookups = _lookups(self.spaces, self.decodes, unique, unique_texts)
        unique_counts = [counts[i] for i in first] if counts is not None else None
        fresh: list[_Fresh] = []

        async def compute(positions: list[int], deliver: Deliver) -> None:
            chunk_items = [unique[p] for p in positions]
            chunk_texts = [unique_texts[p] for p in positions] if unique_texts is not None else None
            budgets = []
            if unique_counts is not None:
                budgets.append(Budget([unique_counts[p] for p in positions], limits.batch_tokens))
            batches = split_batches(len(chunk_items), max_items=limits.batch_inputs, budgets=budgets)

            async def one(batch: Batch) -> None:
                chunk = chunk_items[batch.start : batch.stop]
                try:
                    texts = chunk_texts[batch.start : batch.stop] if chunk_texts is not None else None
                    result, deployment, attempts, fallbacks = await self.run.embed_batch(chunk, texts, batch.start)
                except InvalidInput as exc:
                    if exc.index is not None and 0 <= exc.index < len(positions):
                        exc.index = first[positions[exc.index]]  # the client's own position
                    raise
                fresh.append(_Fresh(result, deployment, attempts, fallbacks))
                vectors = _floats(result, len(chunk))
                tokens, estimated = split_tokens(result, chunk)
                entries = [Entry(vector=vectors[i], tokens=tokens[i], estimated=estimated) for i in range(len(chunk))]
                deliver(positions[batch.start : batch.stop], entries, self.served_at.get(deployment.name))

            await run_batches(batches, one, concurrency=BATCH_CONCURRENCY)

        resolved = await self.cache.resolve(lookups, compute, read=self.read)
        entries = [resolved.entries[u] for u in position_of]
        width = int(entries[0].vector.shape[0])
        if any(int(e.vector.shape[0]) != width for e in entries):
            raise UpstreamResponseError(f"vectors of different widths for model {self.run.alias.name!r}")
        tokens = [e.tokens for e in entries]
        finished = self.run.finish(
            EmbeddingResult(vectors=np.stack([e.vector for e in entries]), token_counts=tokens, encoding="float")
        )
        return self._served(finished, entries, [resolved.cached[u] for u in position_of], resolved.found_in, fresh)

    def _served(
        self,
        finished: EmbeddingResult,
        entries: list[Entry],
        cached: list[bool],
        found_in: list[int],
        fresh: list[_Fresh],
    ) -> Served:
        alias = self.run.alias
        prompt_tokens = sum(e.tokens for e in entries)
        cached_inputs = sum(cached)
        cached_tokens = sum(e.tokens for e, c in zip(entries, cached) if c)
        embedded = sum(int(f.result.prompt_tokens or 0) for f in fresh)
        by_name = {d.name: d for d in alias.deployments}
        used = [f.deployment for f in fresh]
        used += [by_name[self.spaces[i].deployment] for i in dict.fromkeys(found_in) if i >= 0]
        if not used:
            used = [alias.deployments[0]]
        cost, unit = _cost(fresh, alias)
        saved = None if unit is None else round(max(0, prompt_tokens - embedded) * unit, 12)
        if not cached_inputs:
            status = "miss"
        elif cached_inputs == len(entries):
            status = "hit"
        else:
            status = "partial"
        return Served(
            alias=alias.name,
            vectors=encode_rows(finished.vectors, self.run.encoding_format, native=finished.encoding),
            prompt_tokens=prompt_tokens,
            tokens_estimated=any(e.estimated for e in entries) or any(f.result.tokens_estimated for f in fresh),
            cost_usd=cost,
            deployment=",".join(dict.fromkeys(d.config.name for d in used)),
            provider=",".join(dict.fromkeys(d.config.provider for d in used)),
            upstream_model=",".join(dict.fromkeys(d.config.model or "" for d in used)),
            attempts=sum(f.attempts for f in fresh),
            fallbacks=sum(f.fallbacks for f in fresh),
            inputs=len(entries),
            cache=status,
            cached_inputs=cached_inputs,
            cached_tokens=cached_tokens,
            cost_saved=saved,
        )


def _lookups(
    spaces: list[Namespace], decodes: list[bool], unique: list[EmbedInput], texts: list[str] | None
) -> list[list[bytes]]:
    """Each unique input's key under every namespace (token ids decoded where that
    deployment reads them as text)."""
    if len(spaces) == 1:  # one deployment: one key per input, no pairing
        key = spaces[0].key
        return [[key(item)] for item in (texts if texts is not None and decodes[0] else unique)]
    return [
        [space.key(texts[u] if texts is not None and decoded else item) for space, decoded in zip(spaces, decodes)]
        for u, item in enumerate(unique)
    ]


def _unique(items: Sequence[EmbedInput]) -> tuple[list[EmbedInput], list[int], list[int]]:
    """The distinct inputs in order of first use, each one's first position, and for every
    position the index of its distinct input."""
    seen: dict[Any, int] = {}
    unique: list[EmbedInput] = []
    first: list[int] = []
    position_of: list[int] = []
    for position, item in enumerate(items):
        marker: Any = item if isinstance(item, str) else ("ids", tuple(item))
        index = seen.get(marker)
        if index is None:
            index = seen[marker] = len(unique)
            unique.append(item)
            first.append(position)
        position_of.append(index)
    return unique, first, position_of


def _floats(result: EmbeddingResult, expected: int) -> npt.NDArray[np.float32]:
    """The batch's vectors as float32 rows (what the cache stores)."""
    vectors = result.vectors
    if result.encoding == "int8":
        vectors = normalize_rows(vectors.astype(np.float32) / 127.0)
    elif result.encoding != "float":
        raise UpstreamResponseError("a backend returned binary vectors where floats were asked for")
    if vectors.shape[0] != expected:
        raise UpstreamResponseError(f"a backend returned {vectors.shape[0]} vectors for {expected} inputs")
    return np.ascontiguousarray(vectors, dtype=np.float32)


def split_tokens(result: EmbeddingResult, chunk: Sequence[EmbedInput]) -> tuple[list[int], bool]:
    """Each input's tokens: the backend's own counts, or its batch total shared out by each
    input's estimated size (largest remainders, so the shares add up to the total exactly).
    The flag says the counts are estimates."""
    if len(result.token_counts) == len(chunk):
        return list(result.token_counts), result.tokens_estimated
    total = int(result.prompt_tokens or 0)
    if len(chunk) == 1:
        return [total], result.tokens_estimated
    # Every input costs at least one token; the rest is shared by estimated size.
    floor = 1 if total >= len(chunk) else 0
    rest_total = total - floor * len(chunk)
    weights = [estimate_tokens(item) for item in chunk]
    scale = rest_total / sum(weights)
    shares = [int(w * scale) for w in weights]
    rest = rest_total - sum(shares)
    by_remainder = sorted(range(len(chunk)), key=lambda i: weights[i] * scale - shares[i], reverse=True)
    for i in by_remainder[:rest]:
        shares[i] += 1
    shares = [share + floor for share in shares]
    return shares, True


def _cost(fresh: list[_Fresh], alias: AliasRuntime) -> tuple[float | None, float | None]:
    """What the backends charged for this request, and the price per token to value the rest."""
    prices = {d.config.price_per_million_tokens for d in alias.deployments}
    price = next(iter(prices)) if len(prices) == 1 else None
    unit = price / 1_000_000 if price is not None else None
    if not fresh:
        return (0.0 if unit is not None else None), unit
    total = 0.0
    tokens = 0
    for f in fresh:
        count = int(f.result.prompt_tokens or 0)
        tokens += count
        if f.result.cost_usd is not None:
            total += f.result.cost_usd
        else:
            price = f.deployment.config.price_per_million_tokens
            if price is None:
                return None, unit
            total += count * price / 1_000_000
    if unit is None and tokens:
        unit = total / tokens
    return round(total, 12), unit
