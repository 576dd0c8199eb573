"""Client SDKs called unchanged: the openai SDK's ``models.retrieve``, the Perplexity SDK
against a local alias and a fake Perplexity upstream, LangChain's long-text path."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from perplexity import Perplexity

from conftest import cosine, make_config
from fakes.server import run_in_thread
from fakes.vectors import binary_of, contextual_matrix, fake_matrix, int8_of
from gateway.app import create_app
from gateway.tokens import CL100K
from upstream_support import PPLX_KEY, Stack, upstream_stack

PPLX = "pplx-embed-v1-0.6b"
PPLX_CTX = "pplx-embed-context-v1-0.6b"
DOCS = [["a first chunk", "a second chunk"], ["another document's only chunk"]]


# -- openai SDK: models.retrieve ----------------------------------------------------------


def test_models_retrieve(local_gateway: str) -> None:
    client = openai.OpenAI(base_url=f"{local_gateway}/v1", api_key="x", max_retries=0)
    model = client.models.retrieve("mini")
    assert (model.id, model.object, model.owned_by) == ("mini", "model", "embedding-gateway")
    listed = next(m for m in client.models.list().data if m.id == "mini")
    assert model.model_dump() == listed.model_dump()
    assert model.model_extra is not None and model.model_extra["dimensions"] == 384
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"
    assert "'no-such-model'" in str(missing.value.body["message"])  # type: ignore[index]


@pytest.fixture(scope="module")
def guarded() -> Iterator[str]:
    local = {"provider": "onnx", "model": "all-MiniLM-L6-v2"}
    config = make_config(
        {"mini": local, "secret": local, "org-minilm": local},
        auth={"keys": [{"id": "app", "key": "k-app", "models": ["mini", "org-*"]}]},
    )
    with run_in_thread(create_app(config), lifespan="on", startup_timeout=60) as server:
        yield server.base_url


def test_models_retrieve_respects_the_keys_allow_list(guarded: str) -> None:
    client = openai.OpenAI(base_url=f"{guarded}/v1", api_key="k-app", max_retries=0)
    assert {m.id for m in client.models.list()} == {"mini", "org-minilm"}
    assert client.models.retrieve("org-minilm").id == "org-minilm"
    with pytest.raises(openai.NotFoundError) as hidden:
        client.models.retrieve("secret")  # exists, but not for this key: as unknown as in the list
    assert hidden.value.code == "model_not_found" and "secret" not in str(hidden.value.body["message"]).split(":")[-1]  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{guarded}/v1", api_key="wrong", max_retries=0).models.retrieve("mini")


# -- the Perplexity SDK -------------------------------------------------------------------


def _int8(value: str | None) -> np.ndarray:
    assert isinstance(value, str)
    return np.frombuffer(base64.b64decode(value), dtype=np.int8)


@pytest.mark.parametrize("encoding", [None, "base64_int8", "base64_binary"])
def test_perplexity_sdk_against_a_local_alias(local_gateway: str, client: httpx.Client, encoding: str | None) -> None:
    texts = ["the quick brown fox", "jumps over the lazy dog"]
    floats = client.post("/v1/embeddings", json={"model": "mini", "input": texts}).json()["data"]
    sdk = Perplexity(base_url=local_gateway, api_key="x", max_retries=0)
    extra: dict[str, Any] = {"encoding_format": encoding} if encoding else {}
    result = sdk.embeddings.create(model=PPLX, input=texts, **extra)
    assert result.model == PPLX and [d.index for d in result.data] == [0, 1]
    assert result.usage is not None and result.usage.prompt_tokens == result.usage.total_tokens > 0
    for item, want in zip(result.data, floats):
        raw = base64.b64decode(item.embedding or "")
        if encoding == "base64_binary":
            bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
            assert np.array_equal(bits.astype(bool), np.asarray(want["embedding"]) > 0)
        else:
            vector = np.frombuffer(raw, dtype=np.int8)
            assert vector.shape == (384,) and cosine(vector, want["embedding"]) >= 0.99


def _more(oai: str, pplx: str, extra: dict[str, str]) -> dict[str, Any]:
    upstream = {"provider": "perplexity", "base_url": pplx, "api_key": PPLX_KEY, "default_encoding_format": "base64_int8"}
    return {PPLX: {**upstream, "model": PPLX}, PPLX_CTX: {**upstream, "model": PPLX_CTX}}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with upstream_stack(_more) as running:
        yield running


@pytest.mark.parametrize("encoding", [None, "base64_int8", "base64_binary"])
def test_perplexity_sdk_against_the_perplexity_upstream(gw: Stack, encoding: str | None) -> None:
    sdk = Perplexity(base_url=gw.gateway, api_key="x", max_retries=0)
    extra: dict[str, Any] = {"encoding_format": encoding} if encoding else {}
    texts = ["alpha beta", "gamma"]
    flat = sdk.embeddings.create(model=PPLX, input=texts, **extra)
    expected = fake_matrix(texts, 1024)
    for item, want in zip(flat.data, expected):
        raw = base64.b64decode(item.embedding or "")
        if encoding == "base64_binary":
            assert raw == binary_of(want[None, :])[0].tobytes()
        else:
            assert np.array_equal(np.frombuffer(raw, dtype=np.int8), int8_of(want))
    (sent,) = gw.pplx.app.log.for_path("/v1/embeddings")
    assert sent.json["encoding_format"] == (encoding or "base64_int8")  # int8 passes through untouched

    nested = sdk.contextualized_embeddings.create(model=PPLX_CTX, input=DOCS, **extra)
    assert nested.data is not None and [d.index for d in nested.data] == [0, 1]
    for document, doc in zip(nested.data, DOCS):
        assert document.data is not None
        want = contextual_matrix(doc, 1024)
        for chunk, row in zip(document.data, want):
            raw = base64.b64decode(chunk.embedding or "")
            if encoding == "base64_binary":
                assert raw == binary_of(row[None, :])[0].tobytes()
            else:
                assert np.array_equal(np.frombuffer(raw, dtype=np.int8), int8_of(row))


# -- LangChain: what its defaults send, and the long-text path ------------------------------




def test_langchain_long_texts_are_split_and_averaged(
    local_gateway: str, client: httpx.Client, reference: dict[str, Any], tiktoken_cache: None
) -> None:
    from langchain_openai import OpenAIEmbeddings

    sent: list[Any] = []

    def record(request: httpx.Request) -> None:
        sent.append(json.loads(request.content)["input"])

    http_client = httpx.Client(event_hooks={"request": [record]})
    embeddings = OpenAIEmbeddings(
        model="mini", base_url=f"{local_gateway}/v1", api_key="x", embedding_ctx_length=40, http_client=http_client
    )
    long_text = max((item["text"] for item in reference["items"]), key=len)
    short_text = reference["items"][0]["text"]
    vectors = embeddings.embed_documents([long_text, short_text])
    (arrays,) = sent
    assert all(isinstance(a, list) and all(isinstance(t, int) for t in a) for a in arrays)  # cl100k ids
    encoding = CL100K.encoding()
    ids = encoding.encode_ordinary(long_text)
    pieces = [ids[j : j + 40] for j in range(0, len(ids), 40)]
    assert arrays[: len(pieces)] == pieces and len(pieces) >= 3
    by_text = client.post(
        "/v1/embeddings", json={"model": "mini", "input": [encoding.decode(p) for p in pieces] + [short_text]}
    ).json()["data"]
    chunk_vectors = np.array([d["embedding"] for d in by_text[:-1]])
    average = np.average(chunk_vectors, axis=0, weights=[len(p) for p in pieces])
    assert cosine(vectors[0], average) >= 0.999
    assert cosine(vectors[1], by_text[-1]["embedding"]) >= 0.999
