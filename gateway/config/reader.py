"""Typed reads from a YAML mapping that collect every error with its path."""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["Reader"]

_MISSING = object()


class Reader:
    """Reads one mapping at ``path``; errors go to the shared ``errors`` list."""

    def __init__(self, node: Any, path: str, errors: list[str]) -> None:
        self.path = path
        self.errors = errors
        if node is None:
            node = {}
        if not isinstance(node, dict):
            self.error(None, f"must be a mapping, not {_kind(node)}")
            node = {}
        self.node: dict[str, Any] = node

    def at(self, key: str | None) -> str:
        if key is None:
            return self.path or "(top level)"
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str | None, message: str) -> None:
        """Record a problem; only the first one at a path counts (an unset variable is the
        cause, "must be a non-empty string" would be its echo)."""
        prefix = f"{self.at(key)}: "
        if not any(existing.startswith(prefix) for existing in self.errors):
            self.errors.append(prefix + message)

    def child(self, key: str) -> Reader:
        return Reader(self.node.get(key), self.at(key), self.errors)

    def reject_unknown(self, allowed: Iterable[str]) -> None:
        allowed = set(allowed)
        for key in self.node:
            if key not in allowed:
                self.error(str(key), f"unknown key; allowed here: {', '.join(sorted(allowed))}")

    def has(self, key: str) -> bool:
        return self.node.get(key) is not None

    def raw(self, key: str, default: Any = None) -> Any:
        value = self.node.get(key)
        return default if value is None else value

    def string(self, key: str, default: Any = _MISSING, *, choices: Iterable[str] | None = None) -> Any:
        value = self.node.get(key)
        if value is None:
            return self._default(key, default)
        if not isinstance(value, str) or not value:
            self.error(key, f"must be a non-empty string, not {_kind(value)}")
            return None if default is _MISSING else default
        if choices is not None and value not in choices:
            self.error(key, f"must be one of {', '.join(choices)}, not {value!r}")
            return None if default is _MISSING else default
        return value

    def integer(self, key: str, default: Any = _MISSING, *, minimum: int = 0, maximum: int | None = None) -> Any:
        value = self.node.get(key)
        if value is None:
            return self._default(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"must be a whole number, not {_kind(value)}")
            return None if default is _MISSING else default
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            self.error(key, f"must be at least {minimum}{upper}, not {value}")
            return None if default is _MISSING else default
        return value

    def number(self, key: str, default: Any = _MISSING, *, minimum: float = 0.0, exclusive: bool = False) -> Any:
        value = self.node.get(key)
        if value is None:
            return self._default(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(key, f"must be a number, not {_kind(value)}")
            return None if default is _MISSING else default
        if value < minimum or (exclusive and value == minimum):
            relation = "more than" if exclusive else "at least"
            self.error(key, f"must be {relation} {minimum}, not {value}")
            return None if default is _MISSING else default
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.node.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(key, f"must be true or false, not {_kind(value)}")
            return default
        return value

    def str_list(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.node.get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.error(key, "must be a list of non-empty strings")
            return default
        return tuple(value)

    def str_map(self, key: str) -> dict[str, str]:
        value = self.node.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            self.error(key, "must be a mapping of strings to strings")
            return {}
        return dict(value)

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.node.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(key, f"must be a mapping, not {_kind(value)}")
            return {}
        return dict(value)

    def _default(self, key: str, default: Any) -> Any:
        if default is _MISSING:
            self.error(key, "is required")
            return None
        return default


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}" if value else "an empty string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
