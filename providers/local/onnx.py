"""The local backend: an ONNX sentence-embedding model run in-process with onnxruntime.

The work is split as infinity does it: ``tokenize`` (pre), ``run`` (the session) and
``pool`` (post). A :class:`MicroBatcher` sits between concurrent callers and ``run``.
Token handling follows sentence-transformers: ``[CLS] content [SEP]``, the content cut
so the whole fits ``max_tokens``; token-id inputs are content ids and get the same frame.

``input_type``: retrieval models such as e5 or nomic expect a prefix on each text
(``query: `` / ``passage: ``, ``search_query: `` / ``search_document: ``). The deployment
keys ``query_prefix`` and ``document_prefix`` give them; the provider prepends the one
for the call's ``input_type`` (to the text before tokenizing, or as its tokens before
token-id inputs), and counts tokens with it. Without either key (MiniLM needs none) the
provider ignores ``input_type``; with no ``input_type`` and no ``default_input_type`` no
prefix is added.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from providers.base import (
    Capabilities,
    DeploymentSpec,
    EmbeddingResult,
    EmbedInput,
    EmbedOptions,
    INPUT,
    InputType,
    InvalidInput,
    ProviderError,
    ProviderUnavailable,
)
from providers.options import Problems, Settings, choice, flag, number, text, whole
from providers.local.bundled import BUNDLED_MODELS, BundledFileError, resolve_bundled
from providers.local.memory import SHRINK_ARENA, trim_heap
from providers.local.microbatch import MicroBatcher
from providers.local.prefix import PrefixTokenizer

__all__ = ["OnnxEmbedder", "OnnxProvider", "small_enough_inline"]

_POOLINGS = ("mean", "cls")
#: Requests of at most this many inputs and characters (or token ids) in all are tokenized
#: on the event loop; anything bigger is tokenized in a worker thread.
_INLINE_INPUTS = 16
_INLINE_SIZE = 16_384
#: Inputs tokenized per worker-thread call: a request cancelled meanwhile (its client hung
#: up) stops at the next chunk instead of tokenizing everything for no one.
_TOKENIZE_CHUNK = 128


def small_enough_inline(inputs: Sequence[EmbedInput]) -> bool:
    """Whether tokenizing ``inputs`` is cheap enough to do on the event loop."""
    return len(inputs) <= _INLINE_INPUTS and sum(len(item) for item in inputs) <= _INLINE_SIZE


class OnnxEmbedder:
    """The model itself, synchronous: tokenizer, session and pooling."""

    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        *,
        pooling: str = "mean",
        normalize: bool = True,
        max_tokens: int = 256,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.pooling = pooling
        self.normalize = normalize
        self.max_tokens = max_tokens
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # The shipped tokenizer.json pads and truncates at 128; we frame sequences ourselves.
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.vocab_size = self._tokenizer.get_vocab_size()
        self._cls = self._special_id("[CLS]", "<s>")
        self._sep = self._special_id("[SEP]", "</s>")
        #: Content ids kept per text: one more than fits the frame marks a text too long.
        self.keep = max(1, max_tokens - 1)
        self._prefix = PrefixTokenizer(self._tokenizer, self.keep)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        # Spinning intra-op threads would steal the CPU the event loop needs between runs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        self._input_names = {i.name for i in self._session.get_inputs()}
        output = self._session.get_outputs()[0]
        self.dimensions = int(output.shape[-1])

    def _special_id(self, *candidates: str) -> int:
        for token in candidates:
            token_id = self._tokenizer.token_to_id(token)
            if token_id is not None:
                return int(token_id)
        raise BundledFileError(f"tokenizer has none of the special tokens {candidates}")

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Content ids (no special tokens) of each text, at most :attr:`keep` of them: as
        many as the model can use plus one, read from a prefix of a long text
        (:mod:`providers.local.prefix` says why that changes no result)."""
        return self._prefix.ids(texts)

    def frame(self, content: Sequence[int]) -> npt.NDArray[np.int64]:
        """``[CLS] content [SEP]``, content cut so the whole fits ``max_tokens``."""
        body = content[: self.max_tokens - 2]
        framed = np.empty(len(body) + 2, dtype=np.int64)
        framed[0] = self._cls
        framed[1:-1] = body
        framed[-1] = self._sep
        return framed

    def run(self, sequences: list[npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        """Pad to the longest, run the session, pool: one row per sequence."""
        longest = max(len(s) for s in sequences)
        input_ids = np.zeros((len(sequences), longest), dtype=np.int64)
        mask = np.zeros((len(sequences), longest), dtype=np.int64)
        for row, sequence in enumerate(sequences):
            input_ids[row, : len(sequence)] = sequence
            mask[row, : len(sequence)] = 1
        feed = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        hidden = self._session.run(None, feed)[0]
        return self.pool(hidden, mask)

    def release_memory(self) -> None:
        """Empty the session's arena of what no run holds and return the heap's free pages
        (:mod:`providers.local.memory`); for when the queue has drained."""
        import onnxruntime as ort

        options = ort.RunOptions()
        options.add_run_config_entry(*SHRINK_ARENA)
        tiny = self.frame([])[None, :]
        feed = {"input_ids": tiny, "attention_mask": np.ones_like(tiny)}
        if "token_type_ids" in self._input_names:
            feed["token_type_ids"] = np.zeros_like(tiny)
        self._session.run(None, feed, options)
        trim_heap()

    def pool(
        self, hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        if self.pooling == "cls":
            pooled = hidden[:, 0, :]
        else:
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        pooled = np.ascontiguousarray(pooled, dtype=np.float32)
        if self.normalize:
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            pooled /= np.maximum(norms, 1e-12)
        return pooled


def _default_parallelism() -> tuple[int, int]:
    """(workers, threads per run): several single-threaded runs beat one wide run on small
    batches, and keep a core's worth of slack for the event loop between runs."""
    cores = max(1, os.cpu_count() or 1)
    threads = max(1, cores // 4)
    return max(1, cores // threads), threads


def _check_model(model: str | None, base_url: str | None, options: Mapping[str, Any]) -> Problems:
    if "model_path" not in options and model not in BUNDLED_MODELS:
        return [(
            "model",
            f"must name a bundled model ({', '.join(sorted(BUNDLED_MODELS))}) "
            "or come with model_path and tokenizer_path",
        )]
    return []


class OnnxProvider:
    """Provider for ``provider: onnx``: a bundled model by name, or explicit file paths."""

    settings = Settings(
        options={
            "model_path": text(message="must be a file path"),
            "tokenizer_path": text(message="must be a file path"),
            "pooling": choice(*_POOLINGS),
            "normalize": flag(True),
            "truncate": flag(True),
            "threads": whole(),
            "workers": whole(),
            "max_tokens": whole(),
            "max_batch_size": whole(32),
            "max_batch_tokens": whole(16384),
            "max_queue": whole(8192),
            "max_wait_ms": number(2.0, message="must be a number of milliseconds, at least 0"),
            "max_padding": number(
                0.02, below=1.0, message="must be a fraction from 0 up to (not including) 1"
            ),
            "query_prefix": text(doc="prepended to a query (input_type: query)"),
            "document_prefix": text(doc="prepended to a document (input_type: document)"),
        },
        input_type=("query_prefix", "document_prefix"),
        base_url="refused",
        base_url_message="the local onnx provider takes no base_url",
        together=(("model_path", "tokenizer_path"),),
        check=_check_model,
    )

    def __init__(self, spec: DeploymentSpec) -> None:
        self.name = spec.name
        self._spec = spec
        self._options = dict(spec.options)
        self._embedder: OnnxEmbedder | None = None
        self._batcher: MicroBatcher | None = None
        self.truncate = bool(self._options.get("truncate", True))
        self._prefixes: dict[InputType, str] = {
            kind: self._options[f"{kind}_prefix"]
            for kind in ("query", "document")
            if self._options.get(f"{kind}_prefix")
        }
        self._prefix_ids: dict[InputType, list[int]] = {}
        self._capabilities: Capabilities | None = None

    @classmethod
    def check_settings(
        cls, *, model: str | None, base_url: str | None, options: dict[str, Any]
    ) -> list[tuple[str, str]]:
        return cls.settings.validate(model=model, base_url=base_url, options=options)

    @property
    def capabilities(self) -> Capabilities:
        if self._capabilities is None:
            raise ProviderUnavailable(f"local model {self.name!r} is not loaded yet")
        return self._capabilities

    @property
    def batcher(self) -> MicroBatcher | None:
        return self._batcher

    def _load(self) -> OnnxEmbedder:
        options = self._options
        if "model_path" in options:
            model_path = Path(options["model_path"])
            tokenizer_path = Path(options["tokenizer_path"])
            pooling, normalize, max_tokens = "mean", True, 512
        else:
            bundled, model_path, tokenizer_path = resolve_bundled(self._spec.model or "")
            pooling, normalize, max_tokens = bundled.pooling, bundled.normalize, bundled.max_tokens
        return OnnxEmbedder(
            model_path,
            tokenizer_path,
            pooling=options.get("pooling", pooling),
            normalize=options.get("normalize", normalize),
            max_tokens=options.get("max_tokens", max_tokens),
            threads=options.get("threads", _default_parallelism()[1]),
        )

    async def start(self) -> None:
        if self._embedder is not None:
            return
        try:
            embedder = await asyncio.to_thread(self._load)
        except (OSError, BundledFileError) as exc:
            raise ProviderError(f"local model {self.name!r} failed to load: {exc}") from exc
        options = self._options
        self._batcher = MicroBatcher(
            embedder.run,
            dimensions=embedder.dimensions,
            max_batch_size=options.get("max_batch_size", 32),
            max_batch_tokens=options.get("max_batch_tokens", 16384),
            max_wait_ms=float(options.get("max_wait_ms", 2.0)),
            max_padding=float(options.get("max_padding", 0.02)),
            max_queue=options.get("max_queue", 8192),
            workers=options.get("workers", _default_parallelism()[0]),
            on_idle=embedder.release_memory,
        )
        await self._batcher.start()
        self._prefix_ids = {kind: embedder.tokenize([prefix])[0] for kind, prefix in self._prefixes.items()}
        self._embedder = embedder
        self._capabilities = Capabilities(
            dimensions=embedder.dimensions,
            max_inputs=2048,
            max_input_tokens=embedder.max_tokens,
            max_request_tokens=300_000,
            token_ids=True,
            accepted_options=frozenset({"truncate"}),
            input_type=bool(self._prefixes),
            in_process=True,
        )

    async def aclose(self) -> None:
        if self._batcher is not None:
            await self._batcher.stop()

    def _content_ids(
        self, inputs: Sequence[EmbedInput], input_type: InputType | None = None, *, start: int = 0
    ) -> list[list[int]]:
        """Content ids of each input; ``start`` is the first input's index in the request."""
        assert self._embedder is not None
        prefix = self._prefixes.get(input_type) if input_type is not None else None
        texts = [item for item in inputs if isinstance(item, str)]
        if prefix and texts:
            texts = [prefix + item for item in texts]
        tokenized = iter(self._embedder.tokenize(texts) if texts else [])
        content: list[list[int]] = []
        for index, item in enumerate(inputs):
            if isinstance(item, str):
                content.append(next(tokenized))
                continue
            bad = next((t for t in item if t < 0 or t >= self._embedder.vocab_size), None)
            if bad is not None:
                raise InvalidInput(
                    f"{INPUT} holds token id {bad}, outside this model's vocabulary "
                    f"(0 to {self._embedder.vocab_size - 1})",
                    index=start + index,
                )
            ids = list(item[: self._embedder.keep])
            content.append(self._prefix_ids[input_type] + ids if prefix and input_type else ids)
        return content

    def _frame_all(
        self, content: list[list[int]], *, truncate: bool
    ) -> tuple[list[npt.NDArray[np.int64]], list[int]]:
        assert self._embedder is not None
        limit = self._embedder.max_tokens
        if not truncate:
            for index, ids in enumerate(content):
                if len(ids) + 2 > limit:
                    raise InvalidInput(
                        f"{INPUT} has more than {limit} tokens, the most this model "
                        "takes (send truncate: true to cut it instead)",
                        index=index,
                    )
        framed = [self._embedder.frame(ids) for ids in content]
        return framed, [len(sequence) for sequence in framed]

    def count_tokens(
        self, inputs: Sequence[EmbedInput], *, input_type: InputType | None = None
    ) -> list[int] | None:
        if self._embedder is None:
            return None
        limit = self._embedder.max_tokens
        return [min(len(ids) + 2, limit) for ids in self._content_ids(inputs, input_type)]

    async def embed(self, inputs: Sequence[EmbedInput], options: EmbedOptions) -> EmbeddingResult:
        if self._embedder is None or self._batcher is None:
            raise ProviderUnavailable(f"local model {self.name!r} is not loaded")
        truncate = options.extra_body.get("truncate", self.truncate)
        if small_enough_inline(inputs):
            content = self._content_ids(inputs, options.input_type)
        else:
            content = []
            for start in range(0, len(inputs), _TOKENIZE_CHUNK):
                chunk = inputs[start : start + _TOKENIZE_CHUNK]
                content += await asyncio.to_thread(self._content_ids, chunk, options.input_type, start=start)
        sequences, counts = self._frame_all(content, truncate=bool(truncate))
        vectors = await self._batcher.submit(sequences)
        return EmbeddingResult(
            vectors=vectors, token_counts=counts
        )

    async def embed_contextualized(
        self, documents: Sequence[Sequence[str]], options: EmbedOptions
    ) -> EmbeddingResult:
        raise InvalidInput(
            f"local model {self.name!r} does not produce contextualized embeddings", param="model"
        )
