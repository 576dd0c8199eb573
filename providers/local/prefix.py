"""Tokenizing only as much of a text as the model can use.

A model reads at most ``keep`` content tokens of a text; tokenizing the rest of a 10 MB
string costs seconds and hundreds of MB for nothing. So a long text is tokenized by
prefixes of doubling length until a prefix provably yields the whole text's first
``keep`` tokens.

Why a prefix can be trusted (BERT's pipeline: ``BertNormalizer``, ``BertPreTokenizer``,
``WordPiece``):

- the normaliser maps each character on its own (control characters dropped, whitespace
  made a space, CJK characters padded with spaces, lower case), except NFD's reordering of
  the combining marks that follow one base character, which never crosses whitespace or
  punctuation;
- the pre-tokenizer splits the normalised text into words at whitespace and punctuation,
  and WordPiece tokenizes each word on its own (a word over 100 characters becomes one
  ``[UNK]``).

Cutting a text at character ``C`` can therefore change only the word ``C`` falls in: the
prefix's last word. Every token of an earlier word is, in the same place, a token of the
whole text. When a prefix holds at least ``keep`` tokens of words before its last one,
those are exactly the whole text's first ``keep`` tokens.

No fixed number of characters could promise that alone: a character may yield no token
(whitespace, control characters, the combining marks the normaliser strips) or several
(a Hangul syllable decomposes into three jamo, each a word piece). So the bound is checked
on the real tokenization, never assumed: the prefix doubles until the check holds or the
prefix is the whole text. A text made only of what yields nothing is thus tokenized whole,
at most twice over; the request body limit bounds it, and big inputs are tokenized in a
worker thread (``encode_batch`` releases the GIL).

A tokenizer of another kind (byte-level BPE, SentencePiece's precompiled normaliser) is
tokenized whole: the argument above is only made for the pipeline it was checked on.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["PrefixTokenizer", "local_pipeline"]

#: The pipeline parts whose locality the module docstring argues.
_LOCAL_PARTS = {
    "normalizer": {"BertNormalizer"},
    "pre_tokenizer": {"BertPreTokenizer"},
    "model": {"WordPiece"},
}


def local_pipeline(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` is the pipeline the prefix argument holds for."""
    return all(
        type(getattr(tokenizer, part, None)).__name__ in kinds for part, kinds in _LOCAL_PARTS.items()
    )


def _tokens_before_last_word(word_ids: Sequence[int | None]) -> int:
    """How many leading tokens belong to words before the last word (the one a cut may split)."""
    end = len(word_ids)
    if end == 0:
        return 0
    last = word_ids[-1]
    while end > 0 and word_ids[end - 1] == last:
        end -= 1
    return end


class PrefixTokenizer:
    """Content ids of texts, each cut to its first ``keep`` tokens, from prefixes of the texts.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` with padding, truncation and special tokens
    left to the caller; ``first_chars`` is the first prefix tried (each failed check
    doubles it). Results are what ``tokenizer.encode_batch(texts)`` would give, each cut
    to ``keep`` ids (tests compare the two on adversarial strings).
    """

    def __init__(self, tokenizer: Any, keep: int, *, first_chars: int | None = None) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self._tokenizer = tokenizer
        self.keep = keep
        #: Whether prefixes are used at all (see the module docstring).
        self.by_prefix = local_pipeline(tokenizer)
        # English runs about 4-5 characters a token: most long texts need one round.
        self.first_chars = first_chars or max(256, 8 * keep)

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        results: list[list[int]] = [[] for _ in texts]
        pending = list(range(len(texts)))
        size = self.first_chars
        while pending:
            pieces = [
                texts[i][:size] if self.by_prefix and len(texts[i]) > size else texts[i] for i in pending
            ]
            encodings = self._tokenizer.encode_batch(pieces, add_special_tokens=False)
            unsure: list[int] = []
            for index, piece, encoding in zip(pending, pieces, encodings):
                whole = len(piece) == len(texts[index])
                if whole or _tokens_before_last_word(encoding.word_ids) >= self.keep:
                    results[index] = encoding.ids[: self.keep]
                else:
                    unsure.append(index)
            pending = unsure
            size *= 2
        return results
