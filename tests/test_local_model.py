"""The local backend through the whole gateway: real model, real HTTP, reference vectors."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from conftest import cosine


def embed(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/v1/embeddings", json={"model": "mini", **body})


def test_reproduces_reference_vectors_and_token_counts(client: httpx.Client, reference: dict[str, Any]) -> None:
    items = reference["items"]
    response = embed(client, input=[item["text"] for item in items])
    assert response.status_code == 200, response.text
    body = response.json()
    assert [d["index"] for d in body["data"]] == list(range(len(items)))
    worst = min(cosine(d["embedding"], item["embedding"]) for d, item in zip(body["data"], items))
    assert worst >= 0.99
    assert body["usage"]["prompt_tokens"] == sum(item["tokens_truncated"] for item in items)
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"]
    for item in items:
        single = embed(client, input=item["text"]).json()
        assert single["usage"]["prompt_tokens"] == item["tokens_truncated"]
    assert any(i["tokens_untruncated"] > i["tokens_truncated"] for i in items), "reference lost its long text"


def test_response_shape_and_headers(client: httpx.Client) -> None:
    response = embed(client, input="hello", user="u-1")
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-gateway-deployment"] == "mini"
    assert response.headers["x-gateway-provider"] == "onnx"
    assert response.headers["x-gateway-attempts"] == "1"
    assert response.headers["x-request-id"]
    body = response.json()
    assert body["object"] == "list" and body["model"] == "mini"
    assert body["data"][0]["object"] == "embedding"
    vector = np.array(body["data"][0]["embedding"])
    assert vector.shape == (384,)
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-4


def test_request_id_is_echoed(client: httpx.Client) -> None:
    response = client.post("/v1/embeddings", json={"model": "mini", "input": "x"}, headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


def test_native_token_ids_give_the_text_vector(client: httpx.Client, reference: dict[str, Any]) -> None:
    """An alias declared ``token_ids: native`` reads ids as the model's own WordPiece ids."""
    from tokenizers import Tokenizer

    from providers.local.bundled import resolve_bundled

    _, _, tokenizer_path = resolve_bundled("all-MiniLM-L6-v2")
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    texts = [item["text"] for item in reference["items"][:5]]
    ids = [tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    by_text = embed(client, input=texts).json()
    by_ids = embed(client, input=ids, model="mini-native").json()
    single = embed(client, input=ids[0], model="mini-native").json()
    for a, b in zip(by_text["data"], by_ids["data"]):
        assert cosine(a["embedding"], b["embedding"]) > 0.99999
    assert cosine(single["data"][0]["embedding"], by_text["data"][0]["embedding"]) > 0.99999
    assert by_ids["usage"] == by_text["usage"]


def test_native_token_id_outside_vocabulary_is_400(client: httpx.Client) -> None:
    response = embed(client, input=[[101, 2000], [5, 30522]], model="mini-native")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input[1]"
    assert "30521" in error["message"]


def test_a_bad_token_id_deep_in_a_large_request_is_named_by_its_own_index(client: httpx.Client) -> None:
    """Large requests are tokenized in chunks off the event loop: the index is the request's."""
    items = [[101, 2000 + i] for i in range(300)]
    items[270] = [5, 30522]
    response = embed(client, input=items, model="mini-native")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input[270]"


def test_truncation_default_and_strict(client: httpx.Client) -> None:
    long_text = "word " * 400
    truncated = embed(client, input=long_text)
    assert truncated.status_code == 200
    assert truncated.json()["usage"]["prompt_tokens"] == 256
    strict = client.post("/v1/embeddings", json={"model": "mini-strict", "input": ["ok", long_text]})
    assert strict.status_code == 400
    assert strict.json()["error"]["param"] == "input[1]"
    assert "256" in strict.json()["error"]["message"]
    per_request = embed(client, input=long_text, extra_body={"truncate": False})
    assert per_request.status_code == 400
    allowed = client.post(
        "/v1/embeddings", json={"model": "mini-strict", "input": long_text, "extra_body": {"truncate": True}}
    )
    assert allowed.status_code == 200


def test_matryoshka_dimensions(client: httpx.Client) -> None:
    full = client.post("/v1/embeddings", json={"model": "mini-matryoshka", "input": "cats"}).json()
    cut = client.post("/v1/embeddings", json={"model": "mini-matryoshka", "input": "cats", "dimensions": 128}).json()
    vector = np.array(cut["data"][0]["embedding"])
    assert vector.shape == (128,)
    expected = np.array(full["data"][0]["embedding"][:128])
    expected /= np.linalg.norm(expected)
    assert np.allclose(vector, expected, atol=1e-6)
    refused = embed(client, input="cats", dimensions=128)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "dimensions"
    out_of_range = client.post("/v1/embeddings", json={"model": "mini-matryoshka", "input": "x", "dimensions": 385})
    assert out_of_range.status_code == 400
    assert "between 1 and 384" in out_of_range.json()["error"]["message"]


def test_models_health_ready(client: httpx.Client) -> None:
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    entry = next(m for m in models["data"] if m["id"] == "mini")
    assert entry["object"] == "model" and entry["dimensions"] == 384 and entry["max_input_tokens"] == 256
    assert "base64_binary" in entry["encodings"]
    assert isinstance(entry["created"], int) and entry["owned_by"]
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    detail = ready.json()["deployments"]["mini"]
    assert detail == {"alias": "mini", "provider": "onnx", "ready": True, "circuit": "closed"}
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert {"/v1/embeddings", "/v1/models", "/healthz", "/readyz"} <= set(spec["paths"])
