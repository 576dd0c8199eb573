"""Known embedding models: their width, limits and list price, so cost is accounted
without configuring it. Checked 2026-11-30.

A price is the provider's list price in USD per million input tokens, standard (not
batch) tier. Only prices found the same on the provider's pricing page or on several
independent comparison tables were entered; where sources disagreed or none was found,
the price is ``None`` and the gateway reports no cost for that model (never a guess). A
deployment's ``price_per_million_tokens`` overrides this table; a model not listed here
has no cost unless configured. Perplexity reports the cost of each call in its answer,
which wins over any price.

Unconfirmed (``None``): Cohere embed-v4.0 (sources give 0.01, 0.10 and 0.12) and
embed-*-light-v3.0 (0.01 vs 0.02); Voyage voyage-3.5-lite; Jina (sold as token packs);
Perplexity (it reports cost itself). Azure's prices are per region and agreement: an
``azure`` deployment has no cost unless ``price_per_million_tokens`` is set.

Sources: openai.com/api/pricing; docs.voyageai.com/docs/pricing; ai.google.dev pricing
(gemini-embedding-001); docs.cohere.com/docs/cohere-embed and cohere.com/pricing; the
providers' model pages for dimensions and limits (Cohere: 96 texts a call, Gemini: 100
requests a batch, Voyage: 1000 texts a call).

This is the one table of per-model facts: the provider modules read widths, per-text and
per-call token caps, the output sizes they may ask for and whether a model takes a task
type from here (``known``), and keep only per-provider limits themselves. Per-call token
caps: Voyage's API reference (docs.voyageai.com/reference/embeddings-api: 1M for
voyage-4-lite / voyage-3.5-lite, 320K for voyage-4 / voyage-3.5 / voyage-2, 120K for the
large, code, finance and law models; its older text gave voyage-3-lite 1M and voyage-3
320K); Cohere: 96 texts of at most 512 tokens for the v3 models, 128K for embed-v4.0.
Models added only for their limits (voyage-4*, voyage-finance-2, voyage-law-2, voyage-2,
text-embedding-004, embedding-001, jina-embeddings-v2-base-en) have no price entered.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CATALOG_DATE", "KnownModel", "MODELS", "known", "list_price", "models", "widths"]

CATALOG_DATE = "2026-11-30"


@dataclass(frozen=True, kw_only=True)
class KnownModel:
    """One model as its provider publishes it."""

    provider: str
    model: str
    dimensions: int
    max_input_tokens: int
    #: USD per million input tokens; None: not confirmed (no cost is reported).
    price_per_million_tokens: float | None
    #: Output sizes the provider produces natively (Matryoshka), as (min, max); None: full only.
    native_dimensions: tuple[int, int] | None = None
    #: The only sizes the provider takes within that range (Cohere's and Voyage's
    #: ``output_dimension``); empty: any size in the range.
    output_sizes: tuple[int, ...] = ()
    #: Tokens one call may carry in all; None: the provider's own default.
    max_request_tokens: int | None = None
    #: False: the model takes no task type, so a provider that maps ``input_type`` sends
    #: none for it (Gemini embedding-001, Jina v2).
    task_types: bool = True


def _m(provider: str, model: str, dimensions: int, tokens: int, price: float | None,
       native: tuple[int, int] | None = None, *, sizes: tuple[int, ...] = (), request: int | None = None,
       task_types: bool = True) -> KnownModel:
    return KnownModel(provider=provider, model=model, dimensions=dimensions, max_input_tokens=tokens,
                      price_per_million_tokens=price, native_dimensions=native, output_sizes=sizes,
                      max_request_tokens=request, task_types=task_types)


#: Cohere embed-v4.0's ``output_dimension`` values; Voyage's flexible models'.
COHERE_V4_SIZES = (256, 512, 1024, 1536)
VOYAGE_SIZES = (256, 512, 1024, 2048)
#: Cohere's v3 models: 96 texts a call of at most 512 tokens each.
COHERE_V3_CALL = 96 * 512


MODELS: tuple[KnownModel, ...] = (
    _m("openai", "text-embedding-3-small", 1536, 8192, 0.02, (1, 1536)),
    _m("openai", "text-embedding-3-large", 3072, 8192, 0.13, (1, 3072)),
    _m("openai", "text-embedding-ada-002", 1536, 8192, 0.10),
    _m("perplexity", "pplx-embed-v1-0.6b", 1024, 32_768, None, (128, 1024)),
    _m("perplexity", "pplx-embed-v1-4b", 2560, 32_768, None, (128, 2560)),
    _m("perplexity", "pplx-embed-context-v1-0.6b", 1024, 32_768, None, (128, 1024)),
    _m("perplexity", "pplx-embed-context-v1-4b", 2560, 32_768, None, (128, 2560)),
    _m("cohere", "embed-v4.0", 1536, 128_000, None, (256, 1536), sizes=COHERE_V4_SIZES, request=128_000),
    _m("cohere", "embed-english-v3.0", 1024, 512, 0.10, request=COHERE_V3_CALL),
    _m("cohere", "embed-multilingual-v3.0", 1024, 512, 0.10, request=COHERE_V3_CALL),
    _m("cohere", "embed-english-light-v3.0", 384, 512, None, request=COHERE_V3_CALL),
    _m("cohere", "embed-multilingual-light-v3.0", 384, 512, None, request=COHERE_V3_CALL),
    _m("voyage", "voyage-4-large", 1024, 32_000, None, (256, 2048), sizes=VOYAGE_SIZES, request=120_000),
    _m("voyage", "voyage-4", 1024, 32_000, None, (256, 2048), sizes=VOYAGE_SIZES, request=320_000),
    _m("voyage", "voyage-4-lite", 1024, 32_000, None, (256, 2048), sizes=VOYAGE_SIZES, request=1_000_000),
    _m("voyage", "voyage-3.5", 1024, 32_000, 0.06, (256, 2048), sizes=VOYAGE_SIZES, request=320_000),
    _m("voyage", "voyage-3.5-lite", 1024, 32_000, None, (256, 2048), sizes=VOYAGE_SIZES, request=1_000_000),
    _m("voyage", "voyage-3-large", 1024, 32_000, 0.18, (256, 2048), sizes=VOYAGE_SIZES, request=120_000),
    _m("voyage", "voyage-code-3", 1024, 32_000, 0.18, (256, 2048), sizes=VOYAGE_SIZES, request=120_000),
    _m("voyage", "voyage-3", 1024, 32_000, 0.06, request=320_000),
    _m("voyage", "voyage-3-lite", 512, 32_000, 0.02, request=1_000_000),
    _m("voyage", "voyage-finance-2", 1024, 32_000, None, request=120_000),
    _m("voyage", "voyage-law-2", 1024, 16_000, None, request=120_000),
    _m("voyage", "voyage-2", 1024, 4_000, None, request=320_000),
    _m("gemini", "gemini-embedding-001", 3072, 2048, 0.15, (128, 3072)),
    _m("gemini", "text-embedding-004", 768, 2048, None, (1, 768)),
    _m("gemini", "embedding-001", 768, 2048, None, task_types=False),
    _m("jina", "jina-embeddings-v3", 1024, 8192, None, (32, 1024)),
    _m("jina", "jina-embeddings-v4", 2048, 32_768, None, (128, 2048)),
    _m("jina", "jina-embeddings-v2-base-en", 768, 8192, None, task_types=False),
)

_BY_KEY: dict[tuple[str, str], KnownModel] = {(m.provider, m.model): m for m in MODELS}


def known(provider: str, model: str | None) -> KnownModel | None:
    """The provider's published facts about ``model``, if this table has them."""
    return _BY_KEY.get((provider, model)) if model else None


def list_price(provider: str, model: str | None) -> float | None:
    """USD per million input tokens; None for a model not listed or not confirmed."""
    entry = known(provider, model)
    return entry.price_per_million_tokens if entry is not None else None


def widths(provider: str) -> dict[str, int]:
    """Model -> full width, for one provider."""
    return {m.model: m.dimensions for m in MODELS if m.provider == provider}


def models(provider: str) -> dict[str, KnownModel]:
    """Model -> its facts, for one provider."""
    return {m.model: m for m in MODELS if m.provider == provider}
