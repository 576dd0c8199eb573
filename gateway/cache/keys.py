"""Cache keys: everything that decides a vector, hashed.

A vector is decided by the deployment that computes it (its vector space, upstream model,
provider kind and the provider's own settings), by what is asked of that backend (native
dimensions, ``input_type``, every ``extra_body`` option that reaches it) and by the input
itself, after token-id decoding. A :class:`Namespace` holds the digest of everything but the
input, computed once per request and deployment; :meth:`Namespace.key` adds one input.

An option the cache cannot reason about makes the request uncacheable (``namespace`` returns
``None``) rather than risking a wrong hit: a value that has no single canonical form (not
JSON-like, a non-finite float, a non-string mapping key), or an option that changes the form
of the answer rather than the vector (the cache stores full-width float32 vectors).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import orjson

from providers.base import EmbedInput

__all__ = ["FORM_OPTIONS", "KEY_BYTES", "Namespace", "namespace"]

#: Digest size of a key (BLAKE2b): 256 bits, so two inputs never share a key in practice.
KEY_BYTES = 32
#: ``extra_body`` options that change what an answer looks like (its encoding or width):
#: a vector stored under them would not be the full-width float32 vector the cache holds.
FORM_OPTIONS = frozenset(
    {
        "encoding_format", "embedding_types", "output_dtype", "output_dimension",
        "outputDimensionality", "dimensions", "embedding_type",
    }
)
_VERSION = b"egw-cache-1"
_TEXT, _TOKENS = b"s", b"t"


@dataclass(frozen=True, slots=True)
class Namespace:
    """One deployment asked one way: every input's key is derived from this digest."""

    digest: bytes
    #: The deployment whose vectors live here (for logs and the response headers).
    deployment: str
    #: The hasher state after the digest and the text marker: a text's key copies it and adds
    #: only the text (the same bytes hashed as from scratch; a third less time per key).
    _text: hashlib.blake2b = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_text", hashlib.blake2b(self.digest + _TEXT, digest_size=KEY_BYTES))

    def key(self, item: EmbedInput) -> bytes:
        if isinstance(item, str):
            hasher = self._text.copy()
            hasher.update(item.encode("utf-8", "surrogatepass"))
        else:
            hasher = hashlib.blake2b(self.digest, digest_size=KEY_BYTES)
            hasher.update(_TOKENS)
            hasher.update(orjson.dumps(item))
        return hasher.digest()


def namespace(
    *,
    deployment: str,
    provider: str,
    model: str | None,
    space: str,
    settings: Mapping[str, Any],
    dimensions: int | None,
    input_type: str | None,
    options: Mapping[str, Any],
    scope: str | None = None,
) -> Namespace | None:
    """The namespace of one deployment asked one way, or ``None`` when uncacheable.

    ``settings`` are the deployment's settings that may decide its vectors (the provider's
    own keys, its configured width); ``options`` the ``extra_body`` that reaches the backend;
    ``scope`` the key id under ``scope: key`` (tenants never share a namespace).
    """
    if any(name in FORM_OPTIONS for name in options):
        return None
    described = {
        "provider": provider,
        "model": model,
        "space": space,
        "settings": settings,
        "dimensions": dimensions,
        "input_type": input_type,
        "options": options,
        "scope": scope,
    }
    if not _canonical(described):
        return None
    try:
        text = orjson.dumps(described, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    return Namespace(digest=hashlib.blake2b(_VERSION + text, digest_size=KEY_BYTES).digest(), deployment=deployment)


def _canonical(value: Any) -> bool:
    """True when ``value`` has exactly one JSON form (so equal forms mean equal values)."""
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_canonical(item) for item in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _canonical(v) for k, v in value.items())
    return False
