"""The four retrieval providers' test stack: fake Cohere, Voyage, Gemini and Jina upstreams
(real servers on loopback) behind one real gateway, and what each fake computes.

Each alias is named for its provider. ``CASES`` holds, per provider, what a test needs:
its model's width, a Matryoshka size it serves, its per-call limit, the provider's own name
for a query and a document (and the one used when none is given), how to read the texts
and the task out of a recorded request, and whether usage is counted or estimated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from fakes.cohere_upstream import CohereUpstream
from fakes.gemini_upstream import GeminiUpstream
from fakes.jina_upstream import JinaUpstream
from fakes.recording import RecordedRequest
from fakes.vectors import typed_matrix
from fakes.voyage_upstream import VoyageUpstream
from upstream_support import Stack, upstream_stack

KEYS = {
    "cohere": "co-SECRET-5a7c9e1b3d",
    "voyage": "pa-SECRET-2b4d6f8a0c",
    "gemini": "AIza-SECRET-9f7e5d3c1b",
    "jina": "jina_SECRET-1c3e5a7b9d",
}
PRICE = 0.1  # USD per million tokens on every alias


@dataclass(frozen=True)
class Case:
    provider: str
    model: str
    path: str
    width: int
    smaller: int
    per_call: int
    query: str
    document: str
    default: str | None
    exact_usage: bool
    texts: Callable[[Any], list[str]]
    task: Callable[[Any], Any]

    def expected(self, texts: list[str], dims: int | None, task: str | None) -> np.ndarray:
        return typed_matrix(texts, dims or self.width, task)

    def calls(self, stack: Stack) -> list[RecordedRequest]:
        return stack.extra[self.provider].app.log.for_path(self.path)


def _gemini_task(body: Any) -> Any:
    tasks = {r.get("taskType") for r in body["requests"]}
    assert len(tasks) == 1, tasks
    return tasks.pop()


CASES: dict[str, Case] = {
    "cohere": Case("cohere", "embed-v4.0", "/v2/embed", 1536, 384, 96, "search_query", "search_document",
                   "search_document", True, lambda b: b["texts"], lambda b: b.get("input_type")),
    "voyage": Case("voyage", "voyage-3.5", "/v1/embeddings", 1024, 384, 1000, "query", "document",
                   None, True, lambda b: b["input"], lambda b: b.get("input_type")),
    "gemini": Case("gemini", "gemini-embedding-001", "/v1beta/models/gemini-embedding-001:batchEmbedContents",
                   3072, 384, 100, "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", None, False,
                   lambda b: [r["content"]["parts"][0]["text"] for r in b["requests"]], _gemini_task),
    "jina": Case("jina", "jina-embeddings-v3", "/v1/embeddings", 1024, 384, 2048, "retrieval.query",
                 "retrieval.passage", None, True, lambda b: b["input"], lambda b: b.get("task")),
}


def alias(provider: str, base_url: str, **settings: Any) -> dict[str, Any]:
    url = {"voyage": f"{base_url}/v1", "jina": f"{base_url}/v1"}.get(provider, base_url)
    return {"provider": provider, "base_url": url, "model": CASES[provider].model, "api_key": KEYS[provider],
            "price_per_million_tokens": PRICE, **settings}


@contextmanager
def retrieval_stack(more: Callable[[dict[str, str]], dict[str, Any]] | None = None) -> Iterator[Stack]:
    """The usual stack plus the four fakes; one alias per provider, named for it."""
    fakes = {"cohere": CohereUpstream(api_key=KEYS["cohere"]), "voyage": VoyageUpstream(api_key=KEYS["voyage"]),
             "gemini": GeminiUpstream(api_key=KEYS["gemini"]), "jina": JinaUpstream(api_key=KEYS["jina"])}

    def models(oai: str, pplx: str, extra: dict[str, str]) -> dict[str, Any]:
        aliases = {name: alias(name, extra[name]) for name in CASES}
        return {**aliases, **(more(extra) if more else {})}

    with upstream_stack(models, extra_upstreams=fakes) as stack:
        yield stack
