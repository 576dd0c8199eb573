"""Output shaping: Matryoshka truncation and the four wire encodings.

- ``float``: JSON numbers.
- ``base64``: little-endian float32 bytes.
- ``base64_int8``: one signed byte per dimension, ``round(v / max|v| * 127)`` per vector
  (symmetric scaling to [-127, 127]; decode as value / 127 and re-normalise).
- ``base64_binary``: one bit per dimension, 1 where ``v > 0``, packed least-significant
  bit first (``numpy.packbits(..., bitorder="little")``), as Perplexity documents.
"""

from __future__ import annotations

import pybase64
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "decode_binary",
    "decode_int8",
    "encode_rows",
    "normalize_rows",
    "quantize_binary",
    "quantize_int8",
    "truncate_dimensions",
]


def normalize_rows(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    normalized: npt.NDArray[np.float32] = (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return normalized


def truncate_dimensions(vectors: npt.NDArray[np.float32], dimensions: int) -> npt.NDArray[np.float32]:
    """Matryoshka: keep the first ``dimensions`` and re-normalise."""
    return normalize_rows(np.ascontiguousarray(vectors[:, :dimensions]))


def quantize_int8(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.int8]:
    scale = np.max(np.abs(vectors), axis=1, keepdims=True)
    scale[scale == 0] = 1.0
    quantized: npt.NDArray[np.int8] = np.clip(np.rint(vectors / scale * 127.0), -127, 127).astype(np.int8)
    return quantized


def quantize_binary(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    return np.packbits(vectors > 0, axis=1, bitorder="little")


def decode_int8(raw: bytes, dimensions: int | None = None) -> npt.NDArray[np.float32]:
    values = np.frombuffer(raw, dtype=np.int8).astype(np.float32) / 127.0
    return values if dimensions is None else values[:dimensions]


def decode_binary(raw: bytes, dimensions: int) -> npt.NDArray[np.uint8]:
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")[:dimensions]


def _b64_rows(matrix: npt.NDArray[Any]) -> list[str]:
    return [pybase64.b64encode(row.tobytes()).decode("ascii") for row in matrix]


def encode_rows(
    vectors: npt.NDArray[Any], encoding_format: str, *, native: str = "float"
) -> list[Any]:
    """One JSON-ready value per row, in ``encoding_format``.

    ``native`` says what ``vectors`` holds: float32 rows, int8 rows or packed bits. Native
    int8/binary rows are passed through untouched when the client asked for exactly that.
    """
    if native == "int8" and encoding_format == "base64_int8":
        return _b64_rows(np.ascontiguousarray(vectors, dtype=np.int8))
    if native == "binary" and encoding_format == "base64_binary":
        return _b64_rows(np.ascontiguousarray(vectors, dtype=np.uint8))
    if native != "float":
        raise ValueError(f"cannot convert native {native} vectors to {encoding_format}")
    if encoding_format == "float":
        if vectors.dtype != np.float32 or not vectors.flags.c_contiguous:
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        return list(vectors)
    if encoding_format == "base64":
        return _b64_rows(np.ascontiguousarray(vectors, dtype="<f4"))
    if encoding_format == "base64_int8":
        return _b64_rows(quantize_int8(vectors))
    if encoding_format == "base64_binary":
        return _b64_rows(quantize_binary(vectors))
    raise ValueError(f"unknown encoding_format {encoding_format!r}")
