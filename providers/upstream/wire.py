"""Reading an upstream's embedding answer: structure, indices, vectors and usage.

Nothing an upstream sends is passed on unchecked: ``data`` must hold exactly one item per
input, every ``index`` must be an integer in range that appears once (items are put in
index order), every vector must decode to the same width (the expected one, when the
caller knows it) and float vectors must be finite. Anything else raises
``UpstreamResponseError`` naming what was wrong, so a bad answer fails over instead of
reaching a client.
"""

from __future__ import annotations

import pybase64
import binascii
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import numpy.typing as npt

from providers.base import EmbedInput, UpstreamResponseError

__all__ = [
    "RowFormat",
    "Usage",
    "answer_object",
    "decode_rows",
    "estimate_tokens",
    "malformed",
    "ordered_items",
    "read_usage",
]

#: ``float``: JSON numbers or base64 little-endian float32; ``int8`` / ``binary``: base64 bytes.
RowFormat = Literal["float", "int8", "binary"]
#: How each format's bytes are read: little-endian float32, signed bytes, packed bits.
_DTYPES: dict[str, np.dtype[Any]] = {"float": np.dtype("<f4"), "int8": np.dtype("i1"), "binary": np.dtype("u1")}
_NATIVE: dict[str, type[np.generic]] = {"float": np.float32, "int8": np.int8, "binary": np.uint8}


def malformed(where: str, problem: str) -> UpstreamResponseError:
    return UpstreamResponseError(f"{where} answered badly: {problem}")


def answer_object(payload: Any, *, where: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise malformed(where, f"the answer is a JSON {type(payload).__name__}, not an object")
    return payload


def ordered_items(data: Any, expected: int, *, where: str, what: str = "data") -> list[dict[str, Any]]:
    """The ``expected`` objects of ``data``, in the order of their ``index`` fields."""
    if not isinstance(data, list):
        raise malformed(where, f"{what} is missing or not a list")
    if len(data) != expected:
        raise malformed(where, f"{what} holds {len(data)} items, expected {expected}")
    if expected == 1:
        item = data[0]
        if isinstance(item, dict) and item.get("index") == 0 and type(item["index"]) is int:
            return data
    slots: list[dict[str, Any] | None] = [None] * expected
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            raise malformed(where, f"{what}[{position}] is not an object")
        index = item.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise malformed(where, f"{what}[{position}] has no integer index")
        if not 0 <= index < expected:
            raise malformed(where, f"{what}[{position}] has index {index}, outside 0..{expected - 1}")
        if slots[index] is not None:
            raise malformed(where, f"{what} repeats index {index}")
        slots[index] = item
    return [item for item in slots if item is not None]


def decode_rows(
    values: Sequence[Any], fmt: RowFormat, *, width: int | None, where: str
) -> npt.NDArray[Any]:
    """One row per value: float32 for ``float``, int8 for ``int8``, packed uint8 for ``binary``.

    ``width`` is the row length expected in the returned array's elements (bytes for
    ``binary``); ``None`` accepts any width common to all rows.
    """
    if not values:
        return np.empty((0, width or 0), dtype=_NATIVE[fmt])
    if all(isinstance(v, str) for v in values):
        matrix = _base64_rows(values, fmt, where)
    elif fmt == "float" and all(isinstance(v, list) for v in values):
        matrix = _number_lists(values, where)
    else:
        kinds = "arrays of numbers or base64 strings" if fmt == "float" else "base64 strings"
        raise malformed(where, f"embeddings are not all {kinds}")
    got = int(matrix.shape[1])
    if got == 0:
        raise malformed(where, "the embeddings are empty")
    if width is not None and got != width:
        unit = "bytes" if fmt == "binary" else "dimensions"
        raise malformed(where, f"the embeddings have {got} {unit}, expected {width}")
    if fmt == "float" and not np.isfinite(matrix).all():
        finite = np.isfinite(matrix).all(axis=1)
        raise malformed(where, f"embedding {int(np.argmin(finite))} holds NaN or infinity")
    return matrix


def _number_lists(values: Sequence[Any], where: str) -> npt.NDArray[np.float32]:
    try:
        matrix = np.asarray(values)
    except ValueError:
        matrix = np.empty(0)
    if matrix.ndim != 2:
        first = len(values[0])
        odd = next((i for i, v in enumerate(values) if len(v) != first), None)
        if odd is None:
            raise malformed(where, "the embeddings are not flat arrays of numbers")
        raise malformed(where, f"embedding {odd} has {len(values[odd])} values, embedding 0 has {first}")
    if matrix.dtype.kind not in "fiu":
        raise malformed(where, "the embeddings hold values that are not numbers")
    # Values past float32's range become inf here and are refused by the finite check.
    with np.errstate(over="ignore"):
        return matrix.astype(np.float32)


def _base64_rows(values: Sequence[str], fmt: RowFormat, where: str) -> npt.NDArray[Any]:
    """The rows as one array over the decoded bytes (read-only: nothing writes into vectors)."""
    raws: list[bytes] = []
    for index, value in enumerate(values):
        try:
            raws.append(pybase64.b64decode(value, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise malformed(where, f"embedding {index} is not valid base64") from exc
    size = len(raws[0])
    if len(raws) > 1:
        odd = next((i for i, raw in enumerate(raws) if len(raw) != size), None)
        if odd is not None:
            raise malformed(where, f"embedding {odd} has {len(raws[odd])} bytes, embedding 0 has {size}")
    dtype = _DTYPES[fmt]
    if size % dtype.itemsize:
        raise malformed(where, f"embeddings of {size} bytes are not whole float32 values")
    joined = b"".join(raws)
    matrix = np.frombuffer(joined, dtype=dtype).reshape(len(raws), size // dtype.itemsize)
    # Little-endian float32 is already native on little-endian machines: no copy there.
    return matrix if matrix.dtype.isnative else matrix.astype(_NATIVE[fmt])


@dataclass(slots=True)
class Usage:
    """What an answer's ``usage`` says; ``None`` where it says nothing usable."""

    prompt_tokens: int | None = None
    cost_usd: float | None = None


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _money(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value >= 0:
        return float(value)
    return None


def read_usage(payload: dict[str, Any]) -> Usage:
    """``prompt_tokens`` (else ``total_tokens``) and the cost in USD (``cost.total_cost``,
    else ``cost.input_cost``, or ``cost`` itself when it is a number). A malformed usage
    counts as absent: the vectors are still good, and the tokens get estimated."""
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return Usage()
    tokens = _count(usage.get("prompt_tokens"))
    if tokens is None:
        tokens = _count(usage.get("total_tokens"))
    cost = usage.get("cost")
    if isinstance(cost, dict):
        currency = cost.get("currency", "USD")
        total = _money(cost.get("total_cost"))
        amount = total if total is not None else _money(cost.get("input_cost"))
        return Usage(tokens, amount if currency == "USD" else None)
    return Usage(tokens, _money(cost))


def estimate_tokens(item: EmbedInput) -> int:
    """Token ids count exactly; a text is estimated high (a token per 3 UTF-8 bytes)."""
    if isinstance(item, list):
        return len(item)
    return max(1, -(-len(item.encode("utf-8")) // 3))
