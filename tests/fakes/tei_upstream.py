"""A fake Text Embeddings Inference server: native ``POST /embed`` (TEI's OpenAPI).

Body ``{"inputs": str | [str], "truncate": bool, "normalize": bool, "prompt_name": str}``;
answer a bare array of float arrays, and the ``x-compute-tokens`` header. A prompt name
must be a key of ``prompts`` (as in the model's sentence-transformers config); its text is
prepended before embedding, so ``fake_vector(prompts["query"] + text)`` is a query's
vector. Errors are TEI's ``{"error", "error_type"}``: 413 ``validation`` (batch larger
than ``max_client_batch_size``, input longer than ``max_input_length`` without truncate),
422 ``validation`` (bad prompt name, bad body), 400 ``empty``. Tokens: ``fake_token_count``
of the prompted text. ``normalize: false`` scales each vector by 2 (TEI returns raw,
unnormalised outputs then).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from .base import BadJSON, FakeUpstream, JSONBytes, Rejected, json_response
from .faults import Fault
from .vectors import fake_matrix, fake_token_count

__all__ = ["DEFAULT_PROMPTS", "TEIUpstream", "tei_error"]

DEFAULT_PROMPTS: Mapping[str, str] = {"query": "query: ", "passage": "passage: "}


def tei_error(status: int, error_type: str, message: str) -> Rejected:
    return Rejected(json_response({"error": message, "error_type": error_type}, status))


class TEIUpstream(FakeUpstream):
    """The fake TEI app serving one model of ``dimensions`` width."""

    def __init__(
        self,
        *,
        dimensions: int = 384,
        api_key: str | None = None,
        prompts: Mapping[str, str] = DEFAULT_PROMPTS,
        max_client_batch_size: int = 32,
        max_input_length: int = 512,
        send_tokens: bool = True,
    ) -> None:
        super().__init__([("/embed", self._embed)], api_key=api_key)
        self.dimensions = dimensions
        self.prompts = dict(prompts)
        self.max_client_batch_size = max_client_batch_size
        self.max_input_length = max_input_length
        self.send_tokens = send_tokens

    def _texts(self, body: Any) -> tuple[list[str], bool, bool, str]:
        if isinstance(body, BadJSON) or not isinstance(body, dict):
            raise tei_error(422, "validation", "Failed to parse the request body as JSON")
        inputs = body.get("inputs")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise tei_error(422, "validation", "inputs: expected a string or an array of strings")
        if not texts:
            raise tei_error(400, "empty", "Batch is empty")
        if len(texts) > self.max_client_batch_size:
            raise tei_error(
                413, "validation",
                f"batch size {len(texts)} > maximum allowed batch size {self.max_client_batch_size}",
            )
        prompt = ""
        name = body.get("prompt_name")
        if name is not None:
            if name not in self.prompts:
                raise tei_error(
                    422, "validation",
                    f"Validation error: prompt_name `{name}` is not available; "
                    f"available: {', '.join(sorted(self.prompts))}",
                )
            prompt = self.prompts[name]
        return [prompt + t for t in texts], bool(body.get("truncate", False)), bool(body.get("normalize", True)), prompt

    async def _embed(self, body: Any, fault: Fault | None) -> Response:
        texts, truncate, normalize, _ = self._texts(body)
        counts = [fake_token_count(t) for t in texts]
        for count in counts:
            if count > self.max_input_length and not truncate:
                raise tei_error(
                    413, "validation",
                    f"Input validation error: `inputs` must have less than {self.max_input_length} "
                    f"tokens. Given: {count}",
                )
        matrix = fake_matrix(texts, self.dimensions)
        if not normalize:
            matrix = matrix * 2
        mode = fault.mode if fault else None
        if mode == "wrong_dims":
            matrix = matrix[:, :-1]
        rows = [row for row in matrix]
        if mode == "wrong_count":
            rows = rows[: max(0, len(rows) + int(fault["delta"]))] if fault else rows
        headers = {"x-compute-tokens": str(sum(min(c, self.max_input_length) for c in counts))} if self.send_tokens else {}
        return JSONBytes(orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY), headers=headers)
