"""Token estimates for backends that cannot count before embedding."""

from __future__ import annotations

__all__ = ["estimate_tokens"]


def estimate_tokens(item: str | list[int]) -> int:
    """Token ids count exactly; a text is estimated high (a token per 3 UTF-8 bytes)."""
    if isinstance(item, list):
        return len(item)
    return max(1, -(-len(item.encode("utf-8")) // 3))
