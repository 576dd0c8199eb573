"""Tokenizing a prefix gives the whole text's first tokens, on strings built to break it."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer

from providers.local.bundled import resolve_bundled
from providers.local.prefix import PrefixTokenizer, local_pipeline

KEEP = 255  # all-MiniLM-L6-v2: 256 tokens, [CLS] and [SEP] included, plus one to mark "too long"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    _, _, path = resolve_bundled("all-MiniLM-L6-v2")
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    return tok


def _adversarial() -> dict[str, str]:
    rng = random.Random(7)
    words = ["hello", "world", "tokenization", "gateway", "supercalifragilistic"]
    return {
        "english": " ".join(rng.choice(words) for _ in range(3000)),
        "long words": " ".join("x" * rng.randint(50, 150) for _ in range(400)),
        "one long word": "a" * 50_000,
        "cjk": "中文字符测试" * 2000,
        "hangul": "한국어문장" * 2000,  # each syllable is three jamo: more tokens than characters
        "combining marks": ("e" + "\u0301" * 40 + " ") * 600,
        "marks then words": "\u0301" * 30_000 + " word" * 600,
        "whitespace runs": (" " * 997 + "w") * 300,
        "whitespace then words": "\t\n " * 20_000 + " ab" * 400,
        "emoji": "🙂🚀 " * 3000 + "🙂" * 5000,
        "controls": ("\x00\x07\u200b" * 50 + "mot ") * 400,
        "punctuation": "!?.,;" * 5000,
        "mixed": "Ünïcödé 中文 🙂 a\u0301b " * 1500,
        "accent across cut": "é" * 4000 + " end",
        "exactly short": "word " * 200,
    }


@pytest.mark.parametrize("name", sorted(_adversarial()))
def test_prefix_ids_equal_whole_text_ids(tokenizer: Tokenizer, name: str) -> None:
    text = _adversarial()[name]
    whole = tokenizer.encode_batch([text], add_special_tokens=False)[0].ids
    for first in (16, 100, 2040):  # tiny first prefixes force the doubling and many cut points
        cut = PrefixTokenizer(tokenizer, KEEP, first_chars=first).ids([text])[0]
        assert cut == whole[:KEEP], (name, first)


def test_every_cut_point_of_a_mixed_text(tokenizer: Tokenizer) -> None:
    """Whatever character the first prefix ends on, the result is the same."""
    text = "Ünï 中文 🙂 a\u0301\u0302b  \t x" * 40
    keep = 20
    whole = tokenizer.encode_batch([text], add_special_tokens=False)[0].ids[:keep]
    for first in range(1, 120):
        assert PrefixTokenizer(tokenizer, keep, first_chars=first).ids([text])[0] == whole, first


def test_several_texts_keep_their_order(tokenizer: Tokenizer) -> None:
    texts = ["short", "long " * 5000, " " * 9000 + "tail", "中" * 3000]
    expected = [e.ids[:KEEP] for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    assert PrefixTokenizer(tokenizer, KEEP, first_chars=64).ids(texts) == expected


def test_the_bundled_tokenizer_is_the_pipeline_the_argument_covers(tokenizer: Tokenizer) -> None:
    assert local_pipeline(tokenizer)
    assert PrefixTokenizer(tokenizer, KEEP).by_prefix
