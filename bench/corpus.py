"""A deterministic corpus of mixed-length English-like texts for the benchmarks."""

from __future__ import annotations

import json
import random
from pathlib import Path

__all__ = ["mixed_corpus"]

_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "all-MiniLM-L6-v2.json"
_FALLBACK_WORDS = (
    "search retrieval vector embedding gateway model query document chunk token batch "
    "latency throughput cluster semantic index database answer question context window "
    "the a of and to in is that for on with as by at from it this be are was or an"
).split()


def _words() -> list[str]:
    try:
        items = json.loads(_REFERENCE.read_text())["items"]
        words = [w for item in items for w in item["text"].split()]
        return words or _FALLBACK_WORDS
    except (OSError, ValueError, KeyError):
        return _FALLBACK_WORDS


def mixed_corpus(count: int = 2000, *, seed: int = 7) -> list[str]:
    """Texts from 2 to about 300 words, most of them short, as search and RAG traffic is."""
    rng = random.Random(seed)
    words = _words()
    texts = []
    for i in range(count):
        length = max(2, min(300, int(rng.lognormvariate(3.0, 0.9))))
        texts.append(f"{i} " + " ".join(rng.choice(words) for _ in range(length)))
    return texts
