"""The config and CLI side of several workers: `state` required where limits would split."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError, parse_config
from gateway.server import startup_line
from serving import LOCAL, write_config

LIMITED = {"keys": [{"id": "app", "key": "k", "rpm": 60}]}


def parse(**sections: object) -> object:
    return parse_config({"models": {"mini": LOCAL}, **sections}, env={})


def test_workers_with_rate_limits_need_state() -> None:
    with pytest.raises(ConfigError) as refused:
        parse(server={"workers": 2}, auth=LIMITED)
    assert refused.value.errors == [
        "state: is required with 2 workers while keys have rate limits (app): each process would admit "
        "the whole limit; set state: redis://HOST:6379/0 (or serve one worker)"
    ]
    parse(server={"workers": 2}, auth=LIMITED, state="redis://127.0.0.1:6379/0")
    parse(server={"workers": 2})  # no limits: nothing to share


def test_state_and_ledger_urls_are_checked() -> None:
    with pytest.raises(ConfigError) as refused:
        parse(state="http://redis", state_failure="maybe", usage={"ledger": "mysql://x"})
    assert sorted(refused.value.errors) == [
        "state: must be a Redis URL: redis://HOST:6379/0, rediss://... or unix:///PATH",
        "state_failure: must be one of open, closed, not 'maybe'",
        "usage.ledger: must be sqlite:///PATH, postgresql://USER@HOST/DB or off",
    ]
    config = parse_config({"models": {"mini": LOCAL}, "state": "redis://:s3cret@db:6379/0", "state_failure": "closed"}, env={})
    assert config.state is not None and config.state.failure == "closed"
    assert "s3cret" not in repr(config) and config.state.display == "redis://:***@db:6379/0"


def test_serve_workers_flag_is_checked_like_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "g.yaml", {"models": {"mini": LOCAL}, "auth": LIMITED, "usage": {"ledger": "off"}})
    assert main(["serve", "--config", str(path), "--workers", "3"]) == 2
    assert "state: is required with 3 workers" in capsys.readouterr().err


def test_the_startup_line_says_what_runs_without_secrets() -> None:
    config = parse_config({
        "models": {"mini": LOCAL},
        "auth": LIMITED,
        "state": "redis://:pw@cache:6379/0",
        "usage": {"ledger": "postgresql://gw:topsecret@db/gateway"},
    }, env={})
    line = startup_line(config, host="0.0.0.0", port=8080, workers=4)
    assert "embedding-gateway 0.1.0" in line and "4 worker(s)" in line and "[mini]" in line
    assert "auth on" in line and "ledger postgresql://gw:***@db/gateway" in line
    assert "state redis://:***@cache:6379/0 (failure: open)" in line and "cache" in line
    assert "topsecret" not in line and ":pw@" not in line
    assert "cache off" in line
    cached = parse_config({"models": {"mini": LOCAL}, "cache": {"backend": "memory", "scope": "key"}}, env={})
    assert "cache memory (scope key, one per worker)" in startup_line(cached, host="h", port=1, workers=2)
    assert "cache memory (scope key);" in startup_line(cached, host="h", port=1, workers=1)
