"""The fake Cohere, Voyage, Gemini and Jina upstreams themselves, over real HTTP: request
and answer shapes, limits, error bodies, auth, and vectors that depend on the task."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import numpy as np
import pytest

from providers.upstream.typed import lsb_first

from fakes.cohere_upstream import CohereUpstream
from fakes.gemini_upstream import GeminiUpstream
from fakes.jina_upstream import UNNORMALISED_SCALE, JinaUpstream
from fakes.server import RunningServer, run_in_thread
from fakes.typed_outputs import provider_int8, typed_rows
from fakes.vectors import binary_of, fake_matrix, msb_packed, typed_matrix
from fakes.voyage_upstream import VoyageUpstream

KEY = "k-test"
TEXTS = ["alpha beta", "gamma"]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, RunningServer[Any]]]:
    apps = {"cohere": CohereUpstream(api_key=KEY), "voyage": VoyageUpstream(api_key=KEY),
            "gemini": GeminiUpstream(api_key=KEY), "jina": JinaUpstream(api_key=KEY)}
    with ExitStack() as stack:
        yield {name: stack.enter_context(run_in_thread(app)) for name, app in apps.items()}


def _client(server: RunningServer[Any], headers: dict[str, str] | None = None) -> httpx.Client:
    server.app.reset()
    return httpx.Client(base_url=server.base_url, timeout=10,
                        headers=headers if headers is not None else {"authorization": f"Bearer {KEY}"})


def _gemini_body(texts: list[str], model: str = "gemini-embedding-001", **extra: Any) -> dict[str, Any]:
    return {"requests": [{"model": f"models/{model}", "content": {"parts": [{"text": t}]}, **extra}
                         for t in texts]}


GEMINI_PATH = "/v1beta/models/gemini-embedding-001:batchEmbedContents"


def test_cohere_types_tokens_and_input_type(servers: dict[str, RunningServer[Any]]) -> None:
    with _client(servers["cohere"]) as http:
        body = {"model": "embed-v4.0", "texts": TEXTS, "input_type": "search_query",
                "embedding_types": ["float", "int8", "ubinary", "binary"], "output_dimension": 256}
        got = http.post("/v2/embed", json=body).json()
        want = typed_matrix(TEXTS, 256, "search_query")
        np.testing.assert_allclose(np.array(got["embeddings"]["float"]), want, atol=1e-6)
        assert got["embeddings"]["int8"] == provider_int8(want).tolist()
        assert got["embeddings"]["ubinary"] == msb_packed(want).tolist()
        assert np.array_equal(np.array(got["embeddings"]["binary"]) + 128, msb_packed(want))
        assert got["meta"]["billed_units"]["input_tokens"] == 3 and got["texts"] == TEXTS
        document = http.post("/v2/embed", json={**body, "input_type": "search_document"}).json()
        assert document["embeddings"]["float"] != got["embeddings"]["float"]
        missing = http.post("/v2/embed", json={"model": "embed-v4.0", "texts": TEXTS})
        assert missing.status_code == 400 and "input_type" in missing.json()["message"]
        many = http.post("/v2/embed", json={**body, "texts": ["x"] * 97})
        assert many.status_code == 400 and "at most 96" in many.json()["message"]
        v3 = http.post("/v2/embed", json={**body, "model": "embed-english-v3.0"})
        assert v3.status_code == 400 and "output_dimension" in v3.json()["message"]
    with _client(servers["cohere"], {"authorization": "Bearer nope"}) as http:
        denied = http.post("/v2/embed", json=body)
        assert denied.status_code == 401 and denied.json() == {"message": "invalid api token"}


def test_voyage_limits_dtypes_and_input_type(servers: dict[str, RunningServer[Any]]) -> None:
    with _client(servers["voyage"]) as http:
        plain = http.post("/v1/embeddings", json={"model": "voyage-3.5", "input": TEXTS}).json()
        np.testing.assert_allclose(np.array([d["embedding"] for d in plain["data"]]),
                                   fake_matrix(TEXTS, 1024), atol=1e-6)
        assert plain["usage"] == {"total_tokens": 3}
        query = http.post("/v1/embeddings", json={"model": "voyage-3.5", "input": TEXTS, "input_type": "query",
                                                  "output_dimension": 512, "output_dtype": "ubinary",
                                                  "encoding_format": "base64"}).json()
        raw = base64.b64decode(query["data"][0]["embedding"])
        assert raw == msb_packed(typed_matrix(TEXTS, 512, "query"))[0].tobytes()
        floats = http.post("/v1/embeddings", json={"model": "voyage-3.5", "input": TEXTS,
                                                   "encoding_format": "base64"}).json()
        # "A Base64-encoded NumPy array" of float32: little-endian bytes, 4 a dimension.
        raw = base64.b64decode(floats["data"][1]["embedding"])
        assert raw == fake_matrix(TEXTS, 1024)[1].astype("<f4").tobytes()
        too_many = http.post("/v1/embeddings", json={"model": "voyage-3.5", "input": ["x"] * 1001})
        assert too_many.status_code == 400 and "1000" in too_many.json()["detail"]
        tokens = http.post("/v1/embeddings", json={"model": "voyage-3-large", "input": ["w " * 30_000] * 5})
        assert tokens.status_code == 400 and "120000" in tokens.json()["detail"]
        fixed = http.post("/v1/embeddings", json={"model": "voyage-law-2", "input": TEXTS, "output_dtype": "int8"})
        assert fixed.status_code == 400


def test_gemini_auth_batch_limit_and_task_type(servers: dict[str, RunningServer[Any]]) -> None:
    with _client(servers["gemini"], {"x-goog-api-key": KEY}) as http:
        got = http.post(GEMINI_PATH, json=_gemini_body(TEXTS, taskType="RETRIEVAL_QUERY",
                                                       outputDimensionality=768)).json()
        values = np.array([e["values"] for e in got["embeddings"]], dtype=np.float32)
        np.testing.assert_allclose(values, typed_matrix(TEXTS, 3072, "RETRIEVAL_QUERY")[:, :768], atol=1e-6)
        assert set(got) == {"embeddings"}  # no usage
        assert not np.allclose(np.linalg.norm(values, axis=1), 1.0)  # cut, not re-normalised
        over = http.post(GEMINI_PATH, json=_gemini_body(["x"] * 101))
        assert over.status_code == 400 and over.json()["error"]["status"] == "INVALID_ARGUMENT"
        servers["gemini"].app.faults.add("status", status=429, retry_after="7")
        limited = http.post(GEMINI_PATH, json=_gemini_body(TEXTS))
        assert limited.status_code == 429 and "retry-after" not in limited.headers
        assert limited.json()["error"]["details"][0]["retryDelay"] == "7s"
    with _client(servers["gemini"], {"x-goog-api-key": "wrong"}) as http:
        wrong = http.post(GEMINI_PATH, json=_gemini_body(TEXTS))
        assert wrong.status_code == 400
        assert wrong.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    with _client(servers["gemini"], {}) as http:
        assert http.post(GEMINI_PATH, json=_gemini_body(TEXTS)).status_code == 403


def test_jina_task_normalized_and_types(servers: dict[str, RunningServer[Any]]) -> None:
    with _client(servers["jina"]) as http:
        body = {"model": "jina-embeddings-v3", "input": TEXTS, "task": "retrieval.passage", "dimensions": 64}
        raw = http.post("/v1/embeddings", json=body).json()
        want = typed_matrix(TEXTS, 64, "retrieval.passage")
        np.testing.assert_allclose(np.array([d["embedding"] for d in raw["data"]]), want * UNNORMALISED_SCALE,
                                   rtol=1e-5)
        assert raw["usage"] == {"total_tokens": 3, "prompt_tokens": 3}
        packed = http.post("/v1/embeddings", json={**body, "normalized": True, "embedding_type": "ubinary"}).json()
        assert packed["data"][1]["embedding"] == msb_packed(want)[1].tolist()
        encoded = http.post("/v1/embeddings", json={**body, "normalized": True, "embedding_type": "base64"}).json()
        assert base64.b64decode(encoded["data"][0]["embedding"]) == want[0].astype("<f4").tobytes()
        bad_task = http.post("/v1/embeddings", json={**body, "task": "code.query"})
        assert bad_task.status_code == 400 and "code.query" in bad_task.json()["detail"]


@pytest.mark.parametrize("name", ["cohere", "voyage", "jina", "gemini"])
def test_faults_answer_in_the_providers_shape(servers: dict[str, RunningServer[Any]], name: str) -> None:
    server = servers[name]
    headers = {"x-goog-api-key": KEY} if name == "gemini" else {"authorization": f"Bearer {KEY}"}
    path, body = {
        "cohere": ("/v2/embed", {"model": "embed-v4.0", "texts": TEXTS, "input_type": "search_query"}),
        "voyage": ("/v1/embeddings", {"model": "voyage-3.5", "input": TEXTS}),
        "jina": ("/v1/embeddings", {"model": "jina-embeddings-v3", "input": TEXTS}),
        "gemini": (GEMINI_PATH, _gemini_body(TEXTS)),
    }[name]
    with _client(server, headers) as http:
        server.app.faults.add("status", status=503, message="down for a bit")
        failed = http.post(path, json=body)
        assert failed.status_code == 503
        text = failed.text
        assert "down for a bit" in text and '"type"' not in text  # not OpenAI's shape
        server.app.faults.add("wrong_count")
        short = http.post(path, json=body).json()
        rows = {"cohere": lambda a: a["embeddings"]["float"], "gemini": lambda a: a["embeddings"]}.get(
            name, lambda a: a["data"])(short)
        assert len(rows) == 1
        assert server.app.log.last.json == body


def test_packed_bits_follow_voyages_published_example() -> None:
    # docs.voyageai.com/docs/flexible-dimensions-and-quantization: these eight values give
    # bits 0,1,0,0,1,1,0,1 (zero and below -> 0), packed leftmost bit most significant:
    # ubinary 77, binary 77 - 128 = -51. Cohere's and Jina's clients unpack the same way.
    values = np.array([[-0.03955078, 0.006214142, -0.07446289, -0.039001465, 0.0046463013, 0.00030612946,
                        -0.08496094, 0.03994751]], dtype=np.float32)
    assert msb_packed(values).tolist() == [[77]]
    assert typed_rows(values, "ubinary") == [[77]] and typed_rows(values, "binary") == [[-51]]
    assert msb_packed(np.zeros((1, 8), dtype=np.float32)).tolist() == [[0]]
    # Re-packed for the gateway: the same bits, least significant first (0b10110010).
    assert lsb_first(msb_packed(values)).tolist() == [[0b10110010]] == binary_of(values).tolist()
