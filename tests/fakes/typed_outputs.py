"""What the fakes of Cohere, Voyage and Jina share: their typed outputs and row faults.

Typed outputs, from one float32 matrix ``m`` (rows L2-normalised):

    float     the floats
    int8      ``provider_int8(m)``: a fixed-range quantisation (every value scaled by the
              same 127 / ``INT8_RANGE`` and clipped), as calibrated quantisers do; it is
              NOT the gateway's per-vector max-abs int8, so a gateway that passed it
              through as ``base64_int8`` would be caught
    uint8     ``provider_int8(m) + 128``
    ubinary   ``msb_packed(m)``: one bit a dimension (1 where positive), most significant
              bit first, as Voyage documents it and Cohere's and Jina's clients unpack it
              (sources in ``providers.upstream.typed``)
    binary    the same bytes as signed int8 (``ubinary - 128``, "offset binary")
    base64    base64 of the floats as little-endian float32
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from starlette.responses import Response

from .base import JSONBytes

from .faults import Fault, arrange
from .vectors import msb_packed

__all__ = ["INT8_RANGE", "TYPES", "answer", "faulted_rows", "provider_int8", "typed_rows"]

F32 = npt.NDArray[np.float32]
#: The float magnitude that maps to 127 in the providers' int8 (larger values clip).
INT8_RANGE = 0.1
TYPES = ("float", "int8", "uint8", "binary", "ubinary", "base64")


def provider_int8(m: F32) -> npt.NDArray[np.int8]:
    scaled = np.clip(np.round(m / INT8_RANGE * 127), -128, 127)
    return scaled.astype(np.int8)


def typed_rows(m: F32, kind: str, *, as_base64: bool = False) -> list[Any]:
    """The rows of ``m`` as a provider sends them for output type ``kind``: JSON lists,
    or (``as_base64``, or kind ``base64``) base64 strings of the rows' bytes."""
    values: npt.NDArray[Any]
    if kind in ("float", "base64"):
        values = m.astype("<f4")
    elif kind == "int8":
        values = provider_int8(m)
    elif kind == "uint8":
        values = (provider_int8(m).astype(np.int16) + 128).astype(np.uint8)
    elif kind == "ubinary":
        values = msb_packed(m)
    elif kind == "binary":
        values = (msb_packed(m).astype(np.int16) - 128).astype(np.int8)
    else:
        raise ValueError(f"unknown output type {kind!r}")
    if as_base64 or kind == "base64":
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in values]
    if kind == "float":
        return [row for row in values]  # orjson writes numpy rows itself
    return values.tolist()


def faulted_rows(m: F32, fault: Fault | None) -> tuple[F32, list[tuple[int, int]]]:
    """``m`` after the ``wrong_dims`` / ``nan`` faults, and the ``(index, row)`` pairs
    after the count, index and order faults (see ``faults.arrange``)."""
    mode = fault.mode if fault is not None else None
    if mode == "wrong_dims" and m.shape[1] > 8:
        # A whole byte short, so packed bit types are short too.
        m = np.ascontiguousarray(m[:, :-8])
    if mode == "nan":
        m = m.copy()
        m[0, 0] = np.nan
    return m, arrange(fault, int(m.shape[0]))


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def answer(payload: Any, fault: Fault | None, status: int = 200) -> Response:
    """``payload`` as JSON; under the ``nan`` fault a literal ``NaN`` is written, as a
    careless server does (orjson would write ``null``)."""
    if fault is not None and fault.mode == "nan":
        return JSONBytes(json.dumps(_plain(payload)).encode(), status_code=status)
    return JSONBytes(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status)
