"""``${VAR}`` and ``${VAR:-default}`` in config strings, taken from the environment."""

from __future__ import annotations

import re
from typing import Any, Mapping

import yaml

__all__ = ["substitute"]

_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _scalar(text: str) -> Any:
    """A value that was wholly one ``${...}`` takes its YAML type: ``8080`` is a number."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool)) else text


def substitute(node: Any, env: Mapping[str, str], path: str, errors: list[str]) -> Any:
    """A copy of ``node`` with every variable replaced; unset ones are reported by path."""
    if isinstance(node, dict):
        return {
            key: substitute(value, env, f"{path}.{key}" if path else str(key), errors)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [substitute(value, env, f"{path}[{i}]", errors) for i, value in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                errors.append(f"{path}: environment variable {name} is not set")
                return ""
            return default
        return value

    result = _PATTERN.sub(replace, node)
    return _scalar(result) if _PATTERN.fullmatch(node) else result
