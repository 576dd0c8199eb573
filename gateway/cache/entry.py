"""One cached vector as bytes: its full-width float32 values and its token count.

Layout: a version byte, a flags byte (bit 0: the token count is an estimate, e.g. a share
of a batch total the upstream reported only as a sum), the token count as a little-endian
uint32, then the vector as little-endian float32. A value that does not parse is treated
as absent, never as a vector.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["Entry", "decode_entries", "decode_entry", "encode_entry"]

_VERSION = 1
_HEADER = struct.Struct("<BBI")
_ESTIMATED = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """A vector as a backend computed it (full width, float32) and what it cost in tokens."""

    vector: npt.NDArray[np.float32]
    tokens: int
    estimated: bool = False


def encode_entry(entry: Entry) -> bytes:
    flags = _ESTIMATED if entry.estimated else 0
    header = _HEADER.pack(_VERSION, flags, max(0, min(int(entry.tokens), 0xFFFFFFFF)))
    return header + np.ascontiguousarray(entry.vector, dtype="<f4").tobytes()


def decode_entry(raw: bytes) -> Entry | None:
    body = len(raw) - _HEADER.size
    if body <= 0 or body % 4:
        return None
    version, flags, tokens = _HEADER.unpack_from(raw)
    if version != _VERSION:
        return None
    vector = np.frombuffer(raw, dtype="<f4", offset=_HEADER.size).astype(np.float32, copy=False)
    if not np.all(np.isfinite(vector)):
        return None
    return Entry(vector=vector, tokens=tokens, estimated=bool(flags & _ESTIMATED))


def decode_entries(raws: Sequence[bytes]) -> list[Entry | None]:
    """Many values at once: one ``frombuffer`` and one finiteness check for all the vectors
    of one width (a hit path of 32 inputs spends a third of the time decoding one by one)."""
    found: list[Entry | None] = [None] * len(raws)
    by_width: dict[int, list[int]] = {}
    for index, raw in enumerate(raws):
        body = len(raw) - _HEADER.size
        if body > 0 and not body % 4 and raw[0] == _VERSION:
            by_width.setdefault(body // 4, []).append(index)
    for indices in by_width.values():
        vectors = [np.frombuffer(raws[i], dtype="<f4", offset=_HEADER.size) for i in indices]
        # One sum per vector finds any NaN or infinity (an overflow to infinity only costs a miss).
        sums = np.add.reduce(vectors, axis=1) if len(vectors) > 1 else np.array([vectors[0].sum()])
        finite: npt.NDArray[np.bool_] = np.asarray(np.isfinite(sums))
        for row, index in enumerate(indices):
            if finite[row]:
                _, flags, tokens = _HEADER.unpack_from(raws[index])
                found[index] = Entry(vector=vectors[row], tokens=tokens, estimated=bool(flags & _ESTIMATED))
    return found
