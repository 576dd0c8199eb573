"""Loading the config: typed values, environment variables, every error with its path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]


def errors_of(data: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, env or {})
    return caught.value.errors


def test_shipped_config_loads() -> None:
    config = load_config(ROOT / "config.yaml", env={})
    alias = config.models["local-minilm"]
    assert alias.deployments[0].provider == "onnx"
    assert config.server.port == 8080 and config.server.host == "127.0.0.1"
    assert config.usage.ledger == "sqlite:///gateway-usage.db"


def test_environment_variables_and_defaults() -> None:
    data = {
        "server": {"port": "${PORT:-9000}", "host": "${HOST}"},
        "models": {"m": {"provider": "onnx", "model": "all-MiniLM-L6-v2", "name": "n-${SUFFIX:-x}"}},
    }
    config = parse_config(data, {"HOST": "0.0.0.0"})
    assert config.server.port == 9000 and config.server.host == "0.0.0.0"
    assert config.models["m"].deployments[0].name == "n-x"
    assert parse_config(data, {"HOST": "h", "PORT": "81"}).server.port == 81


def test_unset_variable_is_reported_with_its_path() -> None:
    data = {"models": {"pplx": {"deployments": [{"provider": "onnx", "model": "all-MiniLM-L6-v2", "name": "${NAME}"}]}}}
    assert errors_of(data) == ["models.pplx.deployments[0].name: environment variable NAME is not set"]


def test_every_error_at_once_with_paths() -> None:
    data = {
        "server": {"port": "http", "hots": "x"},
        "models": {
            "a": {"provider": "onnx", "model": "all-MiniLM-L6-v2", "pooling": "max", "threads": 0},
            "b": {"provider": "nope"},
            "c": {"routing": "random", "deployments": []},
            "d": {"provider": "onnx", "model": "no-such-model", "matryoshka": "yes"},
        },
        "extra": 1,
    }
    errors = errors_of(data)
    expected_prefixes = [
        "extra: unknown key",
        "server.hots: unknown key",
        "server.port: must be a whole number",
        "models.a.pooling: must be one of mean, cls",
        "models.a.threads: must be a whole number of at least 1",
        "models.b.provider: unknown provider 'nope'",
        "models.c.deployments: must be a non-empty list",
        "models.c.routing: must be one of fallback, weighted, least-busy",
        "models.d.model: must name a bundled model",
        "models.d.matryoshka: must be true or false",
    ]
    for prefix in expected_prefixes:
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)


def test_typo_in_a_deployment_key_is_an_error() -> None:
    data = {"models": {"m": {"provider": "onnx", "model": "all-MiniLM-L6-v2", "max_input": 5}}}
    [error] = errors_of(data)
    assert error.startswith("models.m.max_input: unknown key; allowed here:")
    assert "max_inputs" in error


def test_no_models_is_an_error() -> None:
    assert errors_of({"models": {}}) == ["models: must name at least one model alias"]
    assert errors_of({}) == ["models: must name at least one model alias"]


def test_mixed_spaces_refused_unless_allowed() -> None:
    deployments = [
        {"name": "one", "provider": "onnx", "model": "all-MiniLM-L6-v2"},
        {"name": "two", "provider": "onnx", "model": "all-MiniLM-L6-v2", "space": "other-space"},
    ]
    [error] = errors_of({"models": {"m": {"deployments": deployments}}})
    assert "one (space 'all-MiniLM-L6-v2')" in error and "two (space 'other-space')" in error
    assert error.startswith("models.m: alias 'm' mixes vector spaces")
    config = parse_config({"models": {"m": {"deployments": deployments, "allow_mixed_spaces": True}}}, {})
    assert len(config.models["m"].deployments) == 2


def test_api_keys_never_in_repr() -> None:
    data = {
        "auth": {"keys": [{"id": "app", "key": "sk-gateway-secret"}], "admin_keys": ["sk-admin-secret"]},
        "models": {"m": {"provider": "onnx", "model": "all-MiniLM-L6-v2", "api_key": "sk-upstream-secret"}},
    }
    config = parse_config(data, {})
    assert "secret" not in repr(config)
    assert config.auth is not None and config.auth.keys[0].key == "sk-gateway-secret"


def test_check_config_cli(tmp_path: Path) -> None:
    good = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(ROOT / "config.yaml")], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert "ok" in good.stdout
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text("models:\n  m:\n    provider: onnx\n    model: all-MiniLM-L6-v2\n    api_key: ${MISSING_KEY}\n    pooling: max\n")
    bad = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(bad_file)], capture_output=True, text=True)
    assert bad.returncode != 0
    assert "models.m.api_key: environment variable MISSING_KEY is not set" in bad.stderr
    assert "models.m.pooling" in bad.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [unclosed\n")
    result = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(broken)], capture_output=True, text=True)
    assert result.returncode != 0 and "not valid YAML" in result.stderr
