"""The code's shape that DESIGN.md promises: checked on the source, not taken on trust."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_gateway_http_is_imported_only_by_the_composition_root() -> None:
    http = ROOT / "gateway" / "http"
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "gateway").rglob("*.py"))
        if path != ROOT / "gateway" / "app.py" and http not in path.parents
        and any(name == "gateway.http" or name.startswith("gateway.http.") for name in _imports(path))
    ]
    assert offenders == []


def test_providers_never_import_the_gateway() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "providers").rglob("*.py"))
        if any(name == "gateway" or name.startswith("gateway.") for name in _imports(path))
    ]
    assert offenders == []
