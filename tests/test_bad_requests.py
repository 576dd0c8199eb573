"""Every field wrong in every way: a 4xx that names the field, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

OK = {"model": "mini", "input": "hello"}


def body(**changes: Any) -> dict[str, Any]:
    merged = {**OK, **changes}
    return {k: v for k, v in merged.items() if v is not DROP}


DROP = object()

CASES: list[tuple[str, dict[str, Any], int, str | None, str]] = [
    # (case, body, status, param, code)
    ("model missing", body(model=DROP), 400, "model", "missing_required_parameter"),
    ("model null", body(model=None), 400, "model", "missing_required_parameter"),
    ("model not a string", body(model=5), 400, "model", "invalid_value"),
    ("model empty", body(model=""), 400, "model", "invalid_value"),
    ("model unknown", body(model="gpt-9"), 404, "model", "model_not_found"),
    ("input missing", body(input=DROP), 400, "input", "missing_required_parameter"),
    ("input empty string", body(input=""), 400, "input", "invalid_value"),
    ("input empty array", body(input=[]), 400, "input", "invalid_value"),
    ("input a number", body(input=5.5), 400, "input", "invalid_value"),
    ("input an object", body(input={"text": "x"}), 400, "input", "invalid_value"),
    ("input array with empty string", body(input=["a", ""]), 400, "input[1]", "invalid_value"),
    ("input mixed types", body(input=["a", 3]), 400, "input[1]", "invalid_value"),
    ("input array of null", body(input=[None]), 400, "input[0]", "invalid_value"),
    ("input negative token", body(input=[1, -2]), 400, "input[1]", "invalid_value"),
    ("input float token", body(input=[1, 2.5]), 400, "input[1]", "invalid_value"),
    ("input bool token", body(input=[1, True]), 400, "input[1]", "invalid_value"),
    ("input empty token array", body(input=[[1], []]), 400, "input[1]", "invalid_value"),
    ("input token array with string", body(input=[[1], ["a"]]), 400, "input[1][0]", "invalid_value"),
    ("input token not in cl100k_base", body(input=[[1, 100256]]), 400, "input[0]", "invalid_value"),
    ("input too many items", {"model": "mini-small", "input": ["a"] * 5}, 400, "input", "invalid_value"),
    ("input over request tokens", {"model": "mini-small", "input": ["word " * 30, "word " * 30]}, 400, "input", "invalid_value"),
    ("input over model tokens strict", {"model": "mini-strict", "input": "word " * 300}, 400, "input[0]", "invalid_value"),
    ("encoding unknown", body(encoding_format="base32"), 400, "encoding_format", "invalid_value"),
    ("encoding a number", body(encoding_format=1), 400, "encoding_format", "invalid_value"),
    ("dimensions zero", body(model="mini-matryoshka", dimensions=0), 400, "dimensions", "invalid_value"),
    ("dimensions string", body(model="mini-matryoshka", dimensions="64"), 400, "dimensions", "invalid_value"),
    ("dimensions float", body(model="mini-matryoshka", dimensions=6.5), 400, "dimensions", "invalid_value"),
    ("dimensions too big", body(model="mini-matryoshka", dimensions=1000), 400, "dimensions", "invalid_value"),
    ("dimensions unsupported", body(dimensions=128), 400, "dimensions", "invalid_value"),
    ("binary with odd dimensions", body(model="mini-matryoshka", dimensions=12, encoding_format="base64_binary"), 400, "dimensions", "invalid_value"),
    ("user not a string", body(user=12), 400, "user", "invalid_value"),
    ("user too long", body(user="u" * 600), 400, "user", "invalid_value"),
    ("metadata not an object", body(metadata=["a"]), 400, "metadata", "invalid_value"),
    ("metadata value not a string", body(metadata={"team": 5}), 400, "metadata.team", "invalid_value"),
    ("metadata too many keys", body(metadata={f"k{i}": "v" for i in range(17)}), 400, "metadata", "invalid_value"),
    ("metadata key too long", body(metadata={"k" * 65: "v"}), 400, "metadata", "invalid_value"),
    ("metadata value too long", body(metadata={"k": "v" * 513}), 400, "metadata.k", "invalid_value"),
    ("extra_body not an object", body(extra_body="x"), 400, "extra_body", "invalid_value"),
    ("extra_body overrides model", body(extra_body={"model": "other"}), 400, "extra_body.model", "invalid_value"),
    ("extra_body overrides input", body(extra_body={"input": "other"}), 400, "extra_body.input", "invalid_value"),
    ("extra_body unknown for local", body(extra_body={"temperature": 1}), 400, "extra_body.temperature", "invalid_value"),
    ("unknown top-level field for local", body(frobnicate=True), 400, "extra_body.frobnicate", "invalid_value"),
    ("truncate not a bool", body(extra_body={"truncate": "yes"}), 400, "extra_body.truncate", "invalid_value"),
]


@pytest.mark.parametrize(("case", "payload", "status", "param", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_request(client: httpx.Client, case: str, payload: dict[str, Any], status: int, param: str | None, code: str) -> None:
    response = client.post("/v1/embeddings", json=payload)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["code"] == code
    assert error["type"] and error["message"]
    if param:
        assert param.split("[")[0].split(".")[0] in error["message"]
    assert "Traceback" not in response.text


def test_nulls_mean_absent(client: httpx.Client) -> None:
    payload = {**OK, "encoding_format": None, "dimensions": None, "user": None, "metadata": None, "extra_body": None}
    assert client.post("/v1/embeddings", json=payload).status_code == 200


RAW_CASES: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("malformed json", b'{"model": "mini", "input": ', {"content-type": "application/json"}, 400, "invalid_value"),
    ("json array body", b'["mini"]', {"content-type": "application/json"}, 400, "invalid_value"),
    ("json string body", b'"hello"', {"content-type": "application/json"}, 400, "invalid_value"),
    ("empty body", b"", {"content-type": "application/json"}, 400, "invalid_value"),
    ("not utf-8", b'{"model": "\xff\xfe"}', {"content-type": "application/json"}, 400, "invalid_value"),
    ("form content type", b"model=mini&input=x", {"content-type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ("text content type", b'{"model":"mini","input":"x"}', {"content-type": "text/plain"}, 415, "unsupported_media_type"),
]


@pytest.mark.parametrize(("case", "raw", "headers", "status", "code"), RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_bad_raw_body(client: httpx.Client, case: str, raw: bytes, headers: dict[str, str], status: int, code: str) -> None:
    response = client.post("/v1/embeddings", content=raw, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_huge_body_is_413_before_parsing(client: httpx.Client) -> None:
    big = b'{"model": "mini", "input": "' + b"a" * (17 * 1024 * 1024) + b'"}'
    response = client.post("/v1/embeddings", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "16777216" in response.json()["error"]["message"]


def test_huge_chunked_body_is_413(client: httpx.Client) -> None:
    def chunks() -> Any:
        yield b'{"model": "mini", "input": "'
        for _ in range(18):
            yield b"a" * (1024 * 1024)
        yield b'"}'

    response = client.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_unknown_route_and_method(client: httpx.Client) -> None:
    missing = client.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = client.get("/v1/embeddings")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
