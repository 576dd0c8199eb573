"""The README's Clients section, run: each snippet unchanged (but for the address) against a
live ``serve``, the Node one with node, and for the libraries not installed here the exact
request body each sends by default. Every YAML block of the README must stay valid."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import yaml

from conftest import cosine
from fakes.openai_upstream import OpenAIUpstream
from fakes.perplexity_upstream import PerplexityUpstream
from fakes.server import run_in_thread
from fakes.vectors import contextual_matrix, fake_matrix, int8_of
from gateway.config import parse_config
from gateway.config.settings import _TOP_KEYS as TOP_KEYS
from readme_support import README_BASE, blocks, client_snippet, run_snippet, section
from serving import LOCAL, serve, write_config
from upstream_support import OAI_KEY, PPLX_KEY
TEXTS = ["first text", "second text"]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``serve`` (a subprocess) with the README's client aliases; its upstreams are fakes."""
    with run_in_thread(OpenAIUpstream(api_key=OAI_KEY)) as oai, run_in_thread(PerplexityUpstream(api_key=PPLX_KEY)) as pplx:
        models: dict[str, Any] = {"local-minilm": LOCAL}
        for block in blocks("yaml", section("Clients")):
            for alias, deployment in yaml.safe_load(block)["models"].items():
                if deployment["provider"] == "perplexity":
                    deployment["base_url"] = pplx.base_url
                elif deployment["provider"] == "openai":
                    deployment["base_url"] = f"{oai.base_url}/v1"
                models[alias] = deployment
        path = write_config(tmp_path_factory.mktemp("clients") / "config.yaml", {"models": models, "usage": {"ledger": "off"}})
        env = {"PERPLEXITY_API_KEY": PPLX_KEY, "OPENAI_API_KEY": OAI_KEY}
        with serve(path, env=env) as (_, base):
            yield base


@pytest.fixture(scope="module")
def text_vectors(live: str) -> list[list[float]]:
    with httpx.Client(base_url=live, timeout=60) as http:
        body = http.post("/v1/embeddings", json={"model": "local-minilm", "input": TEXTS}).json()
    return [d["embedding"] for d in body["data"]]




def test_openai_python_snippet(live: str, text_vectors: list[list[float]], capsys: pytest.CaptureFixture[str]) -> None:
    ns = run_snippet(client_snippet("client.models.retrieve"), live)
    assert capsys.readouterr().out.split() == ["384", "local-minilm"]
    for got, want in zip(ns["result"].data, text_vectors):
        assert cosine(got.embedding, want) >= 0.999


def test_langchain_snippet_with_its_defaults_gets_each_texts_own_vector(
    live: str, text_vectors: list[list[float]], tiktoken_cache: None
) -> None:
    """THE regression test: LangChain's defaults send cl100k_base token arrays."""
    ns = run_snippet(client_snippet("from langchain_openai"), live)
    embeddings = ns["embeddings"]
    assert embeddings.check_embedding_ctx_length and embeddings.tiktoken_enabled  # the token-array path
    assert len(ns["vectors"]) == 2
    for got, want in zip(ns["vectors"], text_vectors):
        assert cosine(got, want) >= 0.999
    with httpx.Client(base_url=live, timeout=60) as http:
        query = http.post("/v1/embeddings", json={"model": "local-minilm", "input": "what is the first text about?"})
    assert cosine(ns["query"], query.json()["data"][0]["embedding"]) >= 0.999


def test_perplexity_snippet(live: str, text_vectors: list[list[float]]) -> None:
    ns = run_snippet(client_snippet("from perplexity import Perplexity"), live)
    assert ns["vector"].dtype == np.int8 and ns["vector"].shape == (384,)
    assert cosine(ns["vector"], text_vectors[0]) >= 0.99
    chunk = np.frombuffer(base64.b64decode(ns["first_chunk"]), dtype=np.int8)
    expected = int8_of(contextual_matrix(["chunk one of a document", "chunk two"], 1024))[0]
    assert np.array_equal(chunk, expected)


def test_real_openai_key_snippet(live: str) -> None:
    """The gateway's openai deployment (here a fake OpenAI) holds the key, not the client."""
    ns = run_snippet(client_snippet('model="text-embedding-3-small"'), live)
    got = ns["result"].data[0].embedding
    assert cosine(got, fake_matrix(["some text"], 1536)[0]) >= 0.999


@pytest.fixture(scope="module")
def node_openai(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed: the Node snippet cannot run here")
    folder = tmp_path_factory.mktemp("node-client")
    (folder / "package.json").write_text('{"name": "readme-node-client", "private": true, "type": "module"}')
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent", "openai@7"],
        cwd=folder, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, f"npm install openai failed:\n{done.stderr[-2000:]}"
    return folder


def test_openai_node_snippet(live: str, node_openai: Path) -> None:
    code = client_snippet('import OpenAI from "openai"', "js")
    script = node_openai / "snippet.mjs"
    script.write_text(code.replace(README_BASE, live))
    done = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["384"]


#: The body each library sends by default through the openai SDK, which adds
#: ``encoding_format: "base64"`` when none is given:
#: LlamaIndex ``OpenAIEmbedding.get_text_embedding`` -> ``embeddings.create(input=[text], model=...)``
#: (newlines replaced by spaces); LiteLLM ``embedding(model="openai/<alias>")`` ->
#: ``{"model": <alias>, "input": [...], **optional_params}``; Haystack ``OpenAITextEmbedder.run``
#: -> ``embeddings.create(model=..., input=prefix + text + suffix)``.
LIBRARY_BODIES = {
    "llama_index": {"input": ["first text"], "model": "local-minilm", "encoding_format": "base64"},
    "litellm": {"model": "local-minilm", "input": ["first text", "second text"], "encoding_format": "base64"},
    "haystack": {"model": "local-minilm", "input": "first text", "encoding_format": "base64"},
}


@pytest.mark.parametrize("library", list(LIBRARY_BODIES))
def test_what_llamaindex_litellm_and_haystack_send(live: str, text_vectors: list[list[float]], library: str) -> None:
    snippet = client_snippet(f"import {library}" if library == "litellm" else f"from {library}")
    assert "local-minilm" in snippet and f"{README_BASE}/v1" in snippet
    body = LIBRARY_BODIES[library]
    with httpx.Client(base_url=live, timeout=60) as http:
        response = http.post("/v1/embeddings", json=body, headers={"Authorization": "Bearer unused-without-auth"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == "local-minilm" and answer["usage"]["prompt_tokens"] > 0
    count = 1 if isinstance(body["input"], str) else len(body["input"])
    assert [d["index"] for d in answer["data"]] == list(range(count))
    for item, want in zip(answer["data"], text_vectors):
        vector = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        assert cosine(vector, want) >= 0.999


def test_every_yaml_block_in_the_readme_is_valid() -> None:
    found = blocks("yaml")
    assert len(found) >= 4
    for block in found:
        data = yaml.safe_load(block)
        assert isinstance(data, dict), block
        env = {name: "x" for name in re.findall(r"\$\{(\w+)", block)}
        if not set(data) <= set(TOP_KEYS):
            data = {"models": data}  # a fragment: entries of the models section
        if "models" not in data:
            data["models"] = {"local-minilm": dict(LOCAL)}
        config = parse_config(data, env)
        assert config.models
    auth = next(yaml.safe_load(b) for b in found if "admin_keys" in b)
    config = parse_config({**auth, "models": {"m": dict(LOCAL)}}, {"GATEWAY_ADMIN_KEY": "k", "GATEWAY_KEY_APP1": "a"})
    assert config.auth is not None and config.auth.admin_keys == ("k",)


def test_sdk_user_of_the_clients_section_can_list_and_retrieve(live: str) -> None:
    client = openai.OpenAI(base_url=f"{live}/v1", api_key="unused-without-auth", max_retries=0)
    listed = {m.id for m in client.models.list()}
    assert {"local-minilm", "pplx-embed-v1-0.6b", "pplx-embed-context-v1-0.6b", "text-embedding-3-small"} <= listed
