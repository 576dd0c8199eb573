"""Each wire encoding decodes back to the float vector, through the real gateway."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest

from conftest import cosine

TEXTS = ["vector search with embeddings", "a cat sat on the mat", "Zürich ist schön ☀️"]


def _embed(client: httpx.Client, encoding: str, **extra: object) -> list[object]:
    response = client.post(
        "/v1/embeddings", json={"model": "mini-matryoshka", "input": TEXTS, "encoding_format": encoding, **extra}
    )
    assert response.status_code == 200, response.text
    return [d["embedding"] for d in response.json()["data"]]


def test_base64_is_exact_float32(client: httpx.Client) -> None:
    floats = np.array(_embed(client, "float"), dtype=np.float32)
    decoded = np.stack([np.frombuffer(base64.b64decode(s), dtype="<f4") for s in _embed(client, "base64")])
    assert decoded.shape == (3, 384)
    assert np.array_equal(decoded, floats)


def test_int8_close_to_float(client: httpx.Client) -> None:
    floats = np.array(_embed(client, "float"))
    for raw, vector in zip(_embed(client, "base64_int8"), floats):
        values = np.frombuffer(base64.b64decode(raw), dtype=np.int8)
        assert values.shape == (384,)
        assert np.abs(values).max() == 127
        assert cosine(values.astype(np.float32) / 127.0, vector) >= 0.999


def test_binary_is_sign_pattern_lsb_first(client: httpx.Client) -> None:
    floats = np.array(_embed(client, "float"))
    for raw, vector in zip(_embed(client, "base64_binary"), floats):
        packed = np.frombuffer(base64.b64decode(raw), dtype=np.uint8)
        assert packed.shape == (48,)
        bits = np.unpackbits(packed, bitorder="little")
        assert np.array_equal(bits.astype(bool), vector > 0)
        # LSB first: dimension 0 is the lowest bit of byte 0.
        assert bool(packed[0] & 1) == bool(vector[0] > 0)


def test_encodings_combine_with_dimensions(client: httpx.Client) -> None:
    floats = np.array(_embed(client, "float", dimensions=64))
    assert floats.shape == (3, 64)
    decoded = np.stack([np.frombuffer(base64.b64decode(s), "<f4") for s in _embed(client, "base64", dimensions=64)])
    assert np.array_equal(decoded.astype(np.float32), floats.astype(np.float32))
    packed = _embed(client, "base64_binary", dimensions=64)
    assert len(base64.b64decode(packed[0])) == 8
    refused = client.post(
        "/v1/embeddings",
        json={"model": "mini-matryoshka", "input": "x", "encoding_format": "base64_binary", "dimensions": 100},
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "dimensions"
    assert "multiple of 8" in refused.json()["error"]["message"]


@pytest.fixture()
def sdk(local_gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{local_gateway}/v1", api_key="unused", max_retries=0)


def test_openai_sdk_default_settings(sdk: openai.OpenAI, client: httpx.Client) -> None:
    # The SDK asks for base64 by default and decodes it itself.
    result = sdk.embeddings.create(model="mini", input=TEXTS)
    floats = np.array(_embed(client, "float"))
    assert len(result.data) == 3
    for item, vector in zip(result.data, floats):
        assert len(item.embedding) == 384
        assert np.allclose(item.embedding, vector, atol=1e-7)
    assert result.usage.prompt_tokens > 0 and result.model == "mini"


def test_openai_sdk_float_and_tokens(sdk: openai.OpenAI) -> None:
    result = sdk.embeddings.create(model="mini", input="hello world", encoding_format="float")
    # Token ids as OpenAI clients make them (tiktoken cl100k_base), and the model's own.
    by_tokens = sdk.embeddings.create(model="mini", input=[15339, 1917], encoding_format="float")
    assert cosine(result.data[0].embedding, by_tokens.data[0].embedding) > 0.99999
    native = sdk.embeddings.create(model="mini-native", input=[7592, 2088], encoding_format="float")
    assert cosine(result.data[0].embedding, native.data[0].embedding) > 0.99999


def test_openai_sdk_errors_surface_as_sdk_exceptions(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.embeddings.create(model="nope", input="x")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.embeddings.create(model="mini", input="")
    assert bad.value.param == "input"
