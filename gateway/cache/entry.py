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
    """Many values at once: the values of one width are joined and read as one matrix (one
    copy, one finiteness check, the headers' token counts and flags as columns); each entry's
    vector is a row of it. A hit path of 32 inputs spent a third of its time decoding."""
    found: list[Entry | None] = [None] * len(raws)
    by_width: dict[int, list[int]] = {}
    for index, raw in enumerate(raws):
        body = len(raw) - _HEADER.size
        if body > 0 and not body % 4 and raw[0] == _VERSION:
            by_width.setdefault(body // 4, []).append(index)
    for width, indices in by_width.items():
        joined = raws[indices[0]] if len(indices) == 1 else b"".join([raws[i] for i in indices])
        rows = np.frombuffer(joined, dtype=np.uint8).reshape(len(indices), _HEADER.size + 4 * width)
        vectors = np.ascontiguousarray(rows[:, _HEADER.size :]).view("<f4").astype(np.float32, copy=False)
        # One sum per vector finds any NaN or infinity (an overflow to infinity only costs a miss).
        finite = np.isfinite(np.add.reduce(vectors, axis=1)).tolist()
        tokens = np.ascontiguousarray(rows[:, 2:6]).view("<u4")[:, 0].tolist()
        flags = rows[:, 1].tolist()
        for row, index in enumerate(indices):
            if finite[row]:
                found[index] = Entry(vector=vectors[row], tokens=tokens[row], estimated=bool(flags[row] & _ESTIMATED))
    return found
