"""Deterministic fake embeddings, shared by the fake upstreams and the tests.

A vector is keyed by a 64-bit seed taken from ``sha256`` of the input. Element ``j``
of the raw vector is ``T[a, j] + T[b, j] - T[c, j]``, where ``a``, ``b``, ``c`` are
three 11-bit slices of the seed and ``T`` is a fixed table of standard normals whose
column ``j`` never depends on how many columns exist. The first ``dims`` elements are
taken and L2-normalised, so truncating a vector and renormalising it gives exactly the
vector asked for at the smaller size (Matryoshka), whatever the model's native size:

    fake_vector(x, 256) ~= renorm(fake_vector(x, 1024)[:256])   (float32 rounding)

A table lookup instead of one random generator per text keeps a 2048-input request
cheap enough for benchmarks.

Seeds:
    text       sha256(salt_prefix + b"txt:" + utf8(text))
    token ids  sha256(salt_prefix + b"ids:" + int64 little-endian bytes of the ids)
    chunk      sha256(salt_prefix + b"ctx:" + sha256(utf8("\\x1f".join(doc))) + b"\\x1e"
               + utf8(chunk))   -- contextualized: depends on the whole document
where salt_prefix is b"" for the default salt "" and utf8(salt) + b"\\x00" otherwise.

Retrieval providers embed a query and a document differently: ``typed_matrix`` keys the
vectors of one task (``search_query``, ``RETRIEVAL_DOCUMENT``, ...) by the salt
``salt + "\\x1f" + task``, and a missing task by the plain salt, so a test can tell which
task an upstream was asked for by comparing vectors.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "Item",
    "binary_of",
    "contextual_matrix",
    "contextual_vector",
    "fake_matrix",
    "fake_token_count",
    "fake_vector",
    "int8_of",
    "item_seed",
    "msb_packed",
    "task_salt",
    "typed_matrix",
]

Item = str | Sequence[int]
F32 = npt.NDArray[np.float32]

_ROWS_BITS = 11
_ROWS = 1 << _ROWS_BITS
_BLOCK = 512
_table: F32 = np.empty((_ROWS, 0), dtype=np.float32)
_table_lock = threading.Lock()


def _columns(dims: int) -> F32:
    """The first ``dims`` columns of the table, grown in blocks on demand."""
    global _table
    table = _table
    if table.shape[1] >= dims:
        return table[:, :dims]
    with _table_lock:
        have = _table.shape[1]
        if have < dims:
            blocks = [_table]
            for block in range(have // _BLOCK, -(-dims // _BLOCK)):
                rng = np.random.default_rng([0xFA4E, block])
                blocks.append(rng.standard_normal((_ROWS, _BLOCK), dtype=np.float32))
            _table = np.ascontiguousarray(np.concatenate(blocks, axis=1))
        return _table[:, :dims]


def _salted(salt: str) -> bytes:
    return salt.encode() + b"\x00" if salt else b""


def item_seed(item: Item, *, salt: str = "") -> int:
    """The 64-bit seed of a text or of a token-id list."""
    if isinstance(item, str):
        material = b"txt:" + item.encode()
    else:
        material = b"ids:" + np.asarray(item, dtype="<i8").tobytes()
    digest = hashlib.sha256(_salted(salt) + material).digest()
    return int.from_bytes(digest[:8], "little")


def _matrix_of_seeds(seeds: Sequence[int], dims: int) -> F32:
    if dims < 1:
        raise ValueError(f"dims must be positive, not {dims}")
    table = _columns(dims)
    keys = np.asarray(seeds, dtype=np.uint64)
    mask = np.uint64(_ROWS - 1)
    rows = [
        ((keys >> np.uint64(shift)) & mask).astype(np.intp)
        for shift in (0, _ROWS_BITS, 2 * _ROWS_BITS)
    ]
    out = table[rows[0]]
    out += table[rows[1]]
    out -= table[rows[2]]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    norms[norms == 0] = 1
    out /= norms
    return out


def fake_matrix(items: Sequence[Item], dims: int, *, salt: str = "") -> F32:
    """One row per item: ``fake_vector`` of each, stacked (float32, shape (n, dims))."""
    return _matrix_of_seeds([item_seed(item, salt=salt) for item in items], dims)


def fake_vector(item: Item, dims: int, *, salt: str = "") -> F32:
    """The L2-normalised float32 vector of a text or token-id list."""
    row: F32 = fake_matrix([item], dims, salt=salt)[0]
    return row


def _chunk_seed(doc_digest: bytes, chunk: str, salt: str) -> int:
    material = _salted(salt) + b"ctx:" + doc_digest + b"\x1e" + chunk.encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "little")


def contextual_matrix(doc: Sequence[str], dims: int, *, salt: str = "") -> F32:
    """The vectors of every chunk of one document, in chunk order."""
    doc_digest = hashlib.sha256("\x1f".join(doc).encode()).digest()
    return _matrix_of_seeds([_chunk_seed(doc_digest, c, salt) for c in doc], dims)


def contextual_vector(
    doc: Sequence[str], chunk_index: int, dims: int, *, salt: str = ""
) -> F32:
    """The vector of ``doc[chunk_index]`` embedded in the context of ``doc``."""
    doc_digest = hashlib.sha256("\x1f".join(doc).encode()).digest()
    row: F32 = _matrix_of_seeds([_chunk_seed(doc_digest, doc[chunk_index], salt)], dims)[0]
    return row


def fake_token_count(item: Item) -> int:
    """Whitespace-separated words of a text (at least 1), or the number of token ids."""
    if isinstance(item, str):
        return max(1, len(item.split()))
    return len(item)


def int8_of(v: npt.NDArray[np.floating]) -> npt.NDArray[np.int8]:
    """Scale each vector (last axis) so its largest magnitude is 127, then round."""
    peak = np.max(np.abs(v), axis=-1, keepdims=True)
    peak[peak == 0] = 1
    scaled: npt.NDArray[np.floating] = np.round(v / peak * 127)
    return scaled.astype(np.int8)


def binary_of(v: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """One bit per dimension (set when positive), least significant bit first."""
    return np.packbits(v > 0, axis=-1, bitorder="little")


def task_salt(salt: str, task: str | None) -> str:
    """The salt of the vectors embedded for ``task`` (None: no task, the plain salt)."""
    return salt if task is None else f"{salt}\x1f{task}"


def typed_matrix(items: Sequence[Item], dims: int, task: str | None, *, salt: str = "") -> F32:
    """``fake_matrix`` of the items as embedded for ``task`` (a provider's own name)."""
    return fake_matrix(items, dims, salt=task_salt(salt, task))


def msb_packed(v: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """One bit per dimension (set when positive), most significant bit first: how
    ``numpy.packbits`` packs by default, and how Cohere, Voyage and Jina pack ``ubinary``."""
    return np.packbits(v > 0, axis=-1)
