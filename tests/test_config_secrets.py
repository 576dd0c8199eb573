"""Config errors never print a secret; duplicate keys are errors; check-config catches what
serve would die on (a base_url the client cannot use, an unwritable ledger)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from serving import ROOT

SECRET = "sk-live-abcdef0123456789SECRET"


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )


@pytest.mark.parametrize("text", [
    # A YAML error on the key's own line.
    f"models:\n  m:\n    provider: openai\n    api_key: {SECRET}: oops\n",
    # A YAML error on the line after a key written as a plain string.
    f"models:\n  m:\n    provider: openai\n    api_key: {SECRET}\n   model: [\n",
    # An unterminated quote starting at the key.
    f"models:\n  m:\n    api_key: \"{SECRET}\n",
    # The key where YAML wants an alias name.
    f"models:\n  m: *{SECRET}\n",
    # A key next to a config (not YAML) error.
    f"models:\n  m:\n    provider: openai\n    api_key: {SECRET}\n    base_url: ftp://x\n    weight: lots\n",
])
def test_no_config_error_prints_the_key(tmp_path: Path, text: str) -> None:
    result = check(tmp_path, text)
    assert result.returncode == 2
    assert "error" in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert SECRET[:12] not in result.stdout + result.stderr


def test_duplicate_keys_are_errors_with_their_path(tmp_path: Path) -> None:
    path = tmp_path / "dupes.yaml"
    path.write_text(
        "models:\n  mini:\n    provider: onnx\n    model: all-MiniLM-L6-v2\n"
        "  mini:\n    provider: onnx\n    model: all-MiniLM-L6-v2\n"
        "server:\n  port: 1\n  port: 2\n"
    )
    with pytest.raises(ConfigError) as refused:
        load_config(path, env={})
    text = "\n".join(refused.value.errors)
    assert "models.mini: appears twice" in text and "server.port: appears twice" in text


def test_check_config_refuses_a_base_url_with_a_password(tmp_path: Path) -> None:
    result = check(tmp_path, (
        "usage:\n  ledger: off\nmodels:\n  m:\n    provider: openai\n    model: text-embedding-3-small\n"
        f"    base_url: http://user:{SECRET}@127.0.0.1:9/v1\n    api_key: k\n"
    ))
    assert result.returncode == 2
    assert "models.m.base_url: must not hold a user name or password" in result.stderr
    assert SECRET not in result.stderr


def test_check_config_refuses_an_unwritable_ledger_folder(tmp_path: Path) -> None:
    # /proc takes no new files, not even from root (CI runs as root: permission bits would not do).
    result = check(tmp_path, "usage:\n  ledger: sqlite:////proc/usage.db\nmodels:\n  m:\n    provider: onnx\n    model: all-MiniLM-L6-v2\n")
    assert result.returncode == 2 and "usage.ledger:" in result.stderr and "cannot be written" in result.stderr


def test_check_config_refuses_a_ledger_that_is_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    missing = tmp_path / "no" / "such" / "folder" / "usage.db"
    for ledger, says in [(junk, "not an SQLite database"), (missing, "does not exist")]:
        result = check(tmp_path, f"usage:\n  ledger: sqlite:///{ledger}\nmodels:\n  m:\n    provider: onnx\n    model: all-MiniLM-L6-v2\n")
        assert result.returncode == 2 and says in result.stderr, result.stderr
