"""A deterministic corpus of mixed-length English-like texts for the benchmarks."""

from __future__ import annotations

import json
import random
from pathlib import Path

__all__ = ["mixed_corpus"]

_REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "all-MiniLM-L6-v2.json"


def _words() -> list[str]:
    items = json.loads(_REFERENCE.read_text())["items"]
    return [w for item in items for w in item["text"].split()]


def mixed_corpus(count: int = 2000, *, seed: int = 7) -> list[str]:
    """Texts from 2 to about 300 words, most of them short, as search and RAG traffic is."""
    rng = random.Random(seed)
    words = _words()
    texts = []
    for i in range(count):
        length = max(2, min(300, int(rng.lognormvariate(3.0, 0.9))))
        texts.append(f"{i} " + " ".join(rng.choice(words) for _ in range(length)))
    return texts
