"""The README's code blocks, as the client tests read and run them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: The address every README snippet uses; tests put the live gateway's in its place.
README_BASE = "http://127.0.0.1:8080"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def section(title: str) -> str:
    """The README's ``## title`` section, up to the next ``## `` heading."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def blocks(language: str, text: str | None = None) -> list[str]:
    """Every fenced block in ``language`` (of the whole README, or of ``text``)."""
    source = README.read_text(encoding="utf-8") if text is None else text
    return [body for lang, body in _BLOCK.findall(source) if lang == language]


def client_snippet(marker: str, language: str = "python") -> str:
    """The one Clients-section block in ``language`` that contains ``marker``."""
    found = [b for b in blocks(language, section("Clients")) if marker in b]
    assert len(found) == 1, f"{len(found)} {language} blocks in README's Clients section contain {marker!r}"
    return found[0]


def run_snippet(code: str, base: str) -> dict[str, Any]:
    """Execute a README Python snippet unchanged, but for the gateway's address."""
    assert README_BASE in code, "a client snippet must use the README's address"
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    exec(compile(code.replace(README_BASE, base), "README.md", "exec"), namespace)
    return namespace
