"""Token ids are read only in the vocabulary they were made in (DESIGN.md section 1).

OpenAI clients (LangChain's ``OpenAIEmbeddings`` by default) send tiktoken ``cl100k_base``
ids; the local model must give each text's own vector for them, never a vector of the same
numbers read as its WordPiece ids.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import random
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import gateway.tokens as tokens
from conftest import cosine, make_config
from gateway.config import ConfigError
from gateway.errors import NoDeploymentAvailable
from gateway.tokens import CL100K, Cl100kDecoder, EncodingFileError, load_cl100k, read_cl100k_file

WORDPIECE_VOCAB = 30522


def embed(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/v1/embeddings", json={"model": "mini", **body})


@pytest.fixture(scope="module")
def cl100k() -> Any:
    return CL100K.encoding()


def test_every_reference_text_as_cl100k_ids_gives_its_own_vector_and_token_count(
    client: httpx.Client, reference: dict[str, Any], cl100k: Any
) -> None:
    items = reference["items"]
    arrays = [cl100k.encode_ordinary(item["text"]) for item in items]
    assert max(max(ids) for ids in arrays) >= WORDPIECE_VOCAB  # ids a WordPiece model cannot even read
    response = embed(client, input=arrays)
    assert response.status_code == 200, response.text
    body = response.json()
    by_text = embed(client, input=[item["text"] for item in items]).json()
    for got, own, item in zip(body["data"], by_text["data"], items):
        assert cosine(got["embedding"], own["embedding"]) >= 0.999, item["text"][:60]
        assert cosine(got["embedding"], item["embedding"]) >= 0.99, item["text"][:60]  # the fp32 reference
    # The tokens the model embedded: the text's own count, not the number of cl100k ids.
    assert body["usage"]["prompt_tokens"] == sum(item["tokens_truncated"] for item in items)
    for ids, item in zip(arrays[:8], items[:8]):
        single = embed(client, input=ids).json()
        assert single["usage"]["prompt_tokens"] == item["tokens_truncated"]
        assert cosine(single["data"][0]["embedding"], item["embedding"]) >= 0.99


def test_a_long_text_split_into_arrays_as_langchain_splits_it(
    client: httpx.Client, reference: dict[str, Any], cl100k: Any
) -> None:
    text = max((item["text"] for item in reference["items"]), key=len)
    ids = cl100k.encode_ordinary(text)
    size = 48  # LangChain's embedding_ctx_length, made small: token[j : j + size]
    chunks = [ids[j : j + size] for j in range(0, len(ids), size)]
    assert len(chunks) >= 3
    by_ids = embed(client, input=chunks)
    assert by_ids.status_code == 200, by_ids.text
    pieces = [cl100k.decode(chunk) for chunk in chunks]
    by_text = embed(client, input=pieces).json()
    for a, b in zip(by_ids.json()["data"], by_text["data"]):
        assert cosine(a["embedding"], b["embedding"]) >= 0.999
    assert by_ids.json()["usage"] == by_text["usage"]
    # LangChain's weighted average of the pieces stays close to the whole text's vector.
    vectors = np.array([d["embedding"] for d in by_ids.json()["data"]])
    average = np.average(vectors, axis=0, weights=[len(c) for c in chunks])
    whole = embed(client, input=text).json()["data"][0]["embedding"]
    assert cosine(average, whole) > 0.8


@pytest.mark.parametrize("seed", range(6))
def test_ids_a_wordpiece_model_could_read_are_still_read_as_cl100k(client: httpx.Client, seed: int) -> None:
    """The silent corruption of the issue: ids that all fall inside the local vocabulary."""
    rng = random.Random(seed)
    arrays = [[rng.randrange(WORDPIECE_VOCAB) for _ in range(rng.randint(1, 24))] for _ in range(5)]
    by_ids = embed(client, input=arrays)
    assert by_ids.status_code == 200, by_ids.text
    texts = CL100K.decode_sync(arrays)
    by_text = embed(client, input=texts).json()
    native = client.post("/v1/embeddings", json={"model": "mini-native", "input": arrays}).json()
    for got, want, wrong in zip(by_ids.json()["data"], by_text["data"], native["data"]):
        assert cosine(got["embedding"], want["embedding"]) >= 0.999
        if cosine(want["embedding"], wrong["embedding"]) < 0.99:  # the two readings differ here
            assert cosine(got["embedding"], wrong["embedding"]) < 0.99


@pytest.mark.parametrize("bad", [100256, 100261, 100277, 2**31 - 1])
def test_an_id_outside_cl100k_is_a_400_naming_the_input(client: httpx.Client, bad: int) -> None:
    response = embed(client, input=[[9906, 1917], [9906, bad]])
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "input[1]" and error["code"] == "invalid_value"
    assert f"input[1][1] is {bad}" in error["message"] and "cl100k_base" in error["message"]


@pytest.mark.parametrize("value", [[9906, 1917], [[9906], [1917]]])
def test_token_ids_refuse_is_a_400_naming_the_alias(client: httpx.Client, value: Any) -> None:
    response = client.post("/v1/embeddings", json={"model": "mini-refuse", "input": value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input" and "'mini-refuse'" in error["message"]
    assert "token_ids: refuse" in error["message"]
    assert client.post("/v1/embeddings", json={"model": "mini-refuse", "input": "text"}).status_code == 200


def test_default_encoding_format_applies_when_none_is_sent(client: httpx.Client) -> None:
    alias = "pplx-embed-v1-0.6b"
    text = client.post("/v1/embeddings", json={"model": "mini", "input": "hello"}).json()["data"][0]["embedding"]
    for body in ({}, {"encoding_format": None}, {"encoding_format": "base64_int8"}):
        answer = client.post("/v1/embeddings", json={"model": alias, "input": "hello", **body})
        assert answer.status_code == 200, answer.text
        raw = np.frombuffer(base64.b64decode(answer.json()["data"][0]["embedding"]), dtype=np.int8)
        assert raw.shape == (384,) and cosine(raw, text) >= 0.99
    floats = client.post("/v1/embeddings", json={"model": alias, "input": "hello", "encoding_format": "float"})
    assert floats.json()["data"][0]["embedding"] == pytest.approx(text, abs=1e-6)
    plain = client.post("/v1/embeddings", json={"model": "mini", "input": "hello"}).json()
    assert isinstance(plain["data"][0]["embedding"], list)  # float stays the default elsewhere


# -- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "deployment, expected",
    [
        ({"provider": "openai", "model": "text-embedding-3-small"}, "native"),
        ({"provider": "openai", "model": "sentence-transformers/all-MiniLM-L6-v2"}, "cl100k_base"),
        ({"provider": "onnx", "model": "all-MiniLM-L6-v2"}, "cl100k_base"),
        ({"provider": "perplexity", "model": "pplx-embed-v1-0.6b", "api_key": "k"}, "cl100k_base"),
        ({"provider": "onnx", "model": "all-MiniLM-L6-v2", "token_ids": "refuse"}, "refuse"),
        ({"provider": "openai", "model": "text-embedding-3-small", "token_ids": "cl100k_base"}, "cl100k_base"),
    ],
)
def test_token_ids_defaults(deployment: dict[str, Any], expected: str) -> None:
    config = make_config({"a": deployment})
    assert config.models["a"].deployments[0].token_ids == expected


def test_bad_token_ids_and_default_encoding_format_name_their_path() -> None:
    with pytest.raises(ConfigError) as bad:
        make_config({
            "a": {"provider": "onnx", "model": "all-MiniLM-L6-v2", "token_ids": "gpt2", "default_encoding_format": "hex"},
            "b": {"deployments": [{"provider": "onnx", "model": "all-MiniLM-L6-v2", "token_ids": 3}]},
        })
    text = "\n".join(bad.value.errors)
    assert "models.a.token_ids: must be one of native, cl100k_base, refuse, not 'gpt2'" in text
    assert "models.a.default_encoding_format: must be one of float, base64, base64_int8, base64_binary" in text
    assert "models.b.deployments[0].token_ids: must be a non-empty string" in text


# -- the encoding file -------------------------------------------------------------------


def test_the_encoding_is_tiktokens_own_cl100k_base(cl100k: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import tiktoken_ext.openai_public as public

    ranks = cl100k._mergeable_ranks
    asked: list[tuple[str, str | None]] = []

    def local_ranks(path: str, expected_hash: str | None = None) -> dict[bytes, int]:
        asked.append((path, expected_hash))  # tiktoken's own definition, minus its download
        return dict(ranks)

    monkeypatch.setattr(public, "load_tiktoken_bpe", local_ranks)
    theirs = public.cl100k_base()
    assert asked[0][1] == tokens.CL100K_SHA256
    assert theirs["pat_str"] == tokens.CL100K_PAT_STR
    assert theirs["special_tokens"] == tokens.CL100K_SPECIAL_TOKENS
    assert len(ranks) == tokens.CL100K_MAX_ORDINARY + 1
    assert cl100k.encode_ordinary("Hello world") == [9906, 1917]
    assert cl100k.decode([9906, 1917]) == "Hello world"


def test_a_file_with_the_wrong_digest_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "tampered_encodings"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    good = read_cl100k_file()
    (package / "data" / "cl100k_base.tiktoken.gz").write_bytes(gzip.compress(good.replace(b" 9906\n", b" 9907\n")))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(tokens, "CL100K_PACKAGE", "tampered_encodings")
    with pytest.raises(EncodingFileError, match="expected " + tokens.CL100K_SHA256):
        read_cl100k_file()
    decoder = Cl100kDecoder(load_cl100k)
    with pytest.raises(NoDeploymentAvailable, match="send text"):
        decoder.decode_sync([[1, 2]])
    assert not decoder.loaded
    monkeypatch.setattr(tokens, "CL100K_PACKAGE", "no_such_package_here")
    with pytest.raises(EncodingFileError, match="not found"):
        read_cl100k_file()
    sys.modules.pop("tampered_encodings", None)


def test_the_encoding_loads_once_on_first_use() -> None:
    calls = 0

    def load() -> Any:
        nonlocal calls
        calls += 1
        return load_cl100k()

    async def twice() -> tuple[list[str], list[str]]:
        first = await decoder.decode([[9906, 1917], [9906]])  # loads, off the event loop
        return first, await decoder.decode([[1917]])

    decoder = Cl100kDecoder(load)
    assert not decoder.loaded
    assert asyncio.run(twice()) == (["Hello world", "Hello"], [" world"])
    assert decoder.loaded and calls == 1
