"""Provider for Hugging Face Text Embeddings Inference's native API (``provider: tei``).

API reference: TEI's OpenAPI document, ``POST /embed``
(https://huggingface.github.io/text-embeddings-inference/#/Text%20Embeddings%20Inference/embed):
body ``{"inputs": str | [str], "normalize": bool, "truncate": bool, "prompt_name": str}``,
answer a bare JSON array of float arrays in input order. Errors are
``{"error": "...", "error_type": "validation" | "tokenizer" | "backend" | "overloaded"}``
with 413 (batch too large), 422 (tokenization / input too long), 424 (the model failed),
429 (overloaded) and 400 (empty batch). TEI reports the tokens it computed in the
``x-compute-tokens`` response header; usage is read from it, and estimated (and said to
be, ``tokens_estimated``) when a server does not send it.

``base_url`` is required (a self-hosted server, e.g. ``http://tei.internal:8080``); the
key, when ``api_key`` is set, goes as ``Authorization: Bearer`` (TEI's ``--api-key``).

Options (all optional; the limits mirror TEI's own server flags, set them alike):

``max_client_batch_size``
    Inputs a call (TEI's ``--max-client-batch-size``). Default 32.
``max_input_length``
    Tokens an input (the model's max length, 512 for most BERT-style models).
``max_batch_tokens``
    Tokens a call (TEI's ``--max-batch-tokens``). Default 16384.
``truncate``
    Ask TEI to cut inputs longer than the model takes. Default false (TEI's default: an
    over-long input is refused, 400 to the client).
``normalize``
    Ask TEI for unit-length vectors. Default true (TEI's default).
``query_prompt_name`` / ``document_prompt_name``
    ``input_type`` mapping: the ``prompt_name`` (a key of the model's sentence-transformers
    ``prompts``) sent for a query / a document. With either set the deployment honours
    ``input_type``; without, it ignores it and sends no ``prompt_name``.

TEI takes text only here, returns floats only, and has no ``dimensions`` parameter: the
gateway truncates when the alias sets ``matryoshka: true``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

from providers.base import EmbedInput, EmbedOptions
from providers.options import COMMON_UPSTREAM_OPTIONS, Settings, flag, text, whole
from providers.upstream.base import Answer, UpstreamProvider
from providers.upstream.wire import decode_rows, malformed

__all__ = ["TEIProvider", "TOKENS_HEADER"]

TOKENS_HEADER = "x-compute-tokens"


class TEIProvider(UpstreamProvider):
    """A Text Embeddings Inference server's native ``/embed``."""

    provider = "tei"
    display = "TEI"
    auth = "bearer"
    reserved = frozenset({"inputs", "truncate", "normalize", "prompt_name"})
    settings = Settings(
        options={
            **COMMON_UPSTREAM_OPTIONS,
            "max_client_batch_size": whole(32, doc="inputs a call (TEI's --max-client-batch-size)"),
            "max_input_length": whole(512, doc="tokens an input (the model's max length)"),
            "max_batch_tokens": whole(16384, doc="tokens a call (TEI's --max-batch-tokens)"),
            "truncate": flag(False),
            "normalize": flag(True),
            "query_prompt_name": text(doc="prompt_name sent with input_type query"),
            "document_prompt_name": text(doc="prompt_name sent with input_type document"),
        },
        model="optional",
        base_url="required",
        base_url_message="is required: the TEI server's URL, like http://tei.internal:8080",
        input_type=("query_prompt_name", "document_prompt_name"),
    )

    def setup(self) -> None:
        self.max_inputs = self.option("max_client_batch_size")
        self.max_input_tokens = self.option("max_input_length")
        self.max_request_tokens = self.option("max_batch_tokens")
        self.prompts: dict[str, str] = {
            kind: self.option(f"{kind}_prompt_name")
            for kind in ("query", "document")
            if self.option(f"{kind}_prompt_name")
        }

    def path(self, options: EmbedOptions) -> str:
        return "/embed"

    def body(self, inputs: Sequence[EmbedInput], options: EmbedOptions) -> dict[str, Any]:
        body = self.base_body(options)
        body["inputs"] = list(inputs)
        body["truncate"] = bool(self.option("truncate"))
        body["normalize"] = bool(self.option("normalize"))
        prompt = self.prompts.get(options.input_type) if options.input_type else None
        if prompt:
            body["prompt_name"] = prompt
        return body

    async def post(self, path: str, body: Mapping[str, Any], options: EmbedOptions) -> dict[str, Any]:
        """TEI answers a bare array and counts tokens in a header: both go into one object."""
        payload, headers = await self.upstream.post_json_with_headers(
            path, body, request_id=options.request_id, timeout_s=options.timeout_s
        )
        return {"embeddings": payload, "tokens": headers.get(TOKENS_HEADER)}

    def read(self, payload: dict[str, Any], inputs: Sequence[EmbedInput], options: EmbedOptions) -> Answer:
        rows = payload["embeddings"]
        if not isinstance(rows, list):
            raise malformed(self.where, f"the answer is a JSON {type(rows).__name__}, not an array of embeddings")
        if len(rows) != len(inputs):
            raise malformed(self.where, f"the answer holds {len(rows)} embeddings, expected {len(inputs)}")
        vectors = decode_rows(rows, "float", width=self.expected_width(options), where=self.where)
        raw = payload["tokens"]
        tokens = int(raw) if isinstance(raw, str) and raw.isdigit() else None
        return Answer(vectors=vectors, prompt_tokens=tokens)
