"""Typed outputs of retrieval upstreams (Cohere, Voyage, Jina, Gemini), made the gateway's.

Two things differ between those providers and the gateway's own encodings (README,
"Encodings, exactly"):

* **Bit order.** Their ``ubinary`` packs one bit a dimension, 1 where the value is
  positive (0 for zero and below), most significant bit first, as ``numpy.packbits`` does
  by default; the gateway's ``base64_binary`` has the same bits packed least significant
  bit first. :func:`lsb_first` reverses the bits of each byte (a 256-entry table), so the
  same bits come out in the gateway's order. (Their ``binary`` is the same bytes minus
  128: "offset binary".) Checked against each provider (2026-12):

  - Voyage, https://docs.voyageai.com/docs/flexible-dimensions-and-quantization: "values
    less than or equal to zero will be quantized to a binary zero, and positive values to
    a binary one", eight bits "packed into a single 8-bit integer ... with the leftmost
    bit as the most significant bit" (its example: 0,1,0,0,1,1,0,1 -> ``ubinary`` 77,
    ``binary`` 77 - 128 = -51); its own example code packs with ``np.packbits(v > 0)``.
  - Cohere, https://docs.cohere.com/docs/embeddings ("Compression Levels", "A Note on
    Bits and Bytes"): unpacks ``ubinary`` with ``np.unpackbits`` (most significant bit
    first) and maps a set bit to +1, a clear one to -1 (``2 * bits - 1``).
  - Jina, https://jina.ai/embeddings/ (``embedding_type: ubinary``) publishes no packing
    example; LlamaIndex's Jina integration (llama-index-embeddings-jinaai) unpacks its
    ``ubinary`` with ``np.unpackbits`` (most significant bit first) and its ``binary``
    as ``value + 128``, the same scheme as Voyage's and Cohere's.
* **Matryoshka sizes.** Cohere and Voyage take only a few ``output_dimension`` values.
  :func:`size_to_ask` picks the smallest one at least as large as the size wanted and
  :func:`cut` keeps the leading dimensions (re-normalised), which for a Matryoshka model
  is the embedding of that size; sign bits, being unchanged by re-normalising, are cut
  as whole bytes.

Their ``int8`` is not the gateway's: each scales by a calibrated range, not by every
vector's own largest value, so a provider never passes it off as ``base64_int8``; it
asks for floats and lets the gateway quantise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from providers.upstream.wire import decode_rows, malformed

__all__ = ["byte_rows", "cut", "lsb_first", "normalised", "packed_rows", "size_to_ask"]

_REVERSED = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], dtype=np.uint8)


def lsb_first(packed: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Bytes packed most significant bit first, re-packed least significant bit first."""
    reordered: npt.NDArray[np.uint8] = _REVERSED[packed]
    return reordered


def size_to_ask(wanted: int | None, sizes: Sequence[int]) -> int | None:
    """The ``output_dimension`` to ask for: ``wanted`` when the upstream takes it, else the
    smallest larger size it takes (None: ask for nothing, the full width)."""
    if wanted is None or not sizes:
        return None
    return min((s for s in sizes if s >= wanted), default=None)


def cut(vectors: npt.NDArray[Any], dimensions: int, *, binary: bool) -> npt.NDArray[Any]:
    """The leading ``dimensions`` of each row: re-normalised floats, or whole bytes of bits."""
    if binary:
        return np.ascontiguousarray(vectors[:, : -(-dimensions // 8)])
    if vectors.shape[1] == dimensions:
        return vectors
    return normalised(vectors[:, :dimensions])


def normalised(vectors: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """A float32 copy of the rows, each scaled to unit length (zero rows left as they are)."""
    out = np.array(vectors, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    norms[norms == 0] = 1
    out /= norms
    return out


def byte_rows(values: Any, width: int, *, where: str) -> npt.NDArray[np.uint8]:
    """Rows of JSON integers 0..255 (an ``ubinary`` answer) as a uint8 matrix of ``width``
    bytes a row; anything else is a malformed answer."""
    if not isinstance(values, list) or not all(isinstance(row, list) for row in values):
        raise malformed(where, "the packed embeddings are not lists of integers")
    try:
        matrix = np.asarray(values)
    except ValueError:
        matrix = np.empty(0)
    if matrix.ndim != 2 or matrix.dtype.kind not in "iu":
        raise malformed(where, "the packed embeddings are not rows of integers of one length")
    if matrix.shape[1] != width:
        raise malformed(where, f"the packed embeddings have {matrix.shape[1]} bytes, expected {width}")
    if matrix.size and (matrix.min() < 0 or matrix.max() > 255):
        raise malformed(where, "the packed embeddings hold values outside 0..255")
    return matrix.astype(np.uint8)


def packed_rows(values: Any, width: int, *, where: str) -> npt.NDArray[np.uint8]:
    """An ``ubinary`` answer as a uint8 matrix of ``width`` bytes a row, whether its rows
    came as base64 strings (Voyage with ``encoding_format: base64``) or JSON integers."""
    if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
        rows: npt.NDArray[np.uint8] = decode_rows(values, "binary", width=width, where=where)
        return rows
    return byte_rows(values, width, where=where)
