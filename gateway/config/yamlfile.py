"""YAML text to plain data, strictly: a key twice in one mapping is an error with its path,
and no error message repeats the file's text (a key written in it must never be printed).

PyYAML's own messages quote the offending line with a caret under it; next to an API key
written as a plain string, that line is the key. Errors here say where (line and column)
and what the parser expected, never what the line holds.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["read_yaml"]

#: Quoted pieces of a parser message longer than this are hidden (a character or a token
#: name helps; a scalar from the file may be a secret).
_QUOTED = re.compile(r"'([^']{4,})'|\"([^\"]{4,})\"")


def _describe(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or "the file could not be read"
    context = getattr(exc, "context", None)
    text = f"{context}: {problem}" if context else str(problem)
    text = _QUOTED.sub("'...'", text)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {text}"
    return text


def _key_text(node: yaml.Node) -> str:
    value = node.value if isinstance(node, yaml.ScalarNode) else "(a complex key)"
    return str(value)


def _duplicates(node: yaml.Node, path: str, errors: list[str]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = _key_text(key_node)
            at = f"{path}.{key}" if path else key
            if key in seen and key != "<<":
                errors.append(
                    f"{at}: appears twice in one mapping (lines {seen[key]} and "
                    f"{key_node.start_mark.line + 1}); a key may appear once"
                )
            seen.setdefault(key, key_node.start_mark.line + 1)
            _duplicates(value_node, at, errors)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _duplicates(item, f"{path}[{index}]", errors)


def read_yaml(text: str) -> tuple[Any, list[str]]:
    """The data of ``text`` and the problems found (each a line for the user, secret-free);
    data is ``None`` when there are problems."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        errors: list[str] = []
        _duplicates(node, "", errors)
        if errors:
            return None, errors
        return loader.construct_document(node), []
    except yaml.YAMLError as exc:
        return None, [f"not valid YAML: {_describe(exc)}"]
    finally:
        loader.dispose()
