"""Gateway keys: 401 without a valid Bearer key, 403 outside a key's models, admin keys."""

from __future__ import annotations

import hmac

import pytest

from gateway.auth import Authenticator, bearer_token
from gateway.config import AuthConfig, KeyConfig
from gateway.errors import AuthenticationFailed, PermissionDenied, error_response, status_of

APP = KeyConfig(id="app-1", key="sk-app-one-secret", models=("mini", "embed-*"), rpm=10)
ALL = KeyConfig(id="app-2", key="sk-app-two-secret")
ADMIN = "sk-admin-secret"
CONFIG = AuthConfig(keys=(APP, ALL), admin_keys=(ADMIN,))


@pytest.fixture
def authenticator() -> Authenticator:
    return Authenticator(CONFIG)


def test_auth_off_lets_everyone_in() -> None:
    open_gateway = Authenticator(None)
    assert not open_gateway.enabled
    assert open_gateway.authenticate(None) is None
    assert open_gateway.authenticate("Bearer whatever") is None
    open_gateway.authorize(None, "anything")
    assert open_gateway.is_admin(None)
    open_gateway.require_admin(None)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("abc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_the_right_key_is_found(authenticator: Authenticator) -> None:
    assert authenticator.authenticate("Bearer sk-app-one-secret") is APP
    assert authenticator.authenticate("bearer sk-app-two-secret") is ALL


@pytest.mark.parametrize(
    ("header", "says"),
    [
        (None, "needs a gateway key"),
        ("", "needs a gateway key"),
        ("Basic dXNlcjpwYXNz", "must be `Authorization: Bearer <key>`"),
        ("Bearer sk-app-one-secreT", "not valid"),
        ("Bearer sk-app-one-secret-and-more", "not valid"),
        ("Bearer sk-app", "not valid"),
        (f"Bearer {ADMIN}", "not valid"),
        ("Bearer ключ-не-тот", "not valid"),
    ],
)
def test_missing_or_wrong_keys_get_401(authenticator: Authenticator, header: str | None, says: str) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        authenticator.authenticate(header)
    error = caught.value
    assert says in error.message
    assert "Authorization: Bearer <key>" in error.message
    assert status_of(error).status == 401
    assert error.headers["www-authenticate"].startswith("Bearer")
    if header:
        assert header.split(" ", 1)[-1] not in error.message
    response = error_response(error)
    assert response.status_code == 401
    assert b"sk-" not in bytes(response.body)


def test_every_key_is_compared_even_after_a_match(
    authenticator: Authenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        result = real(a, b)
        calls.append(result)
        return result

    monkeypatch.setattr(hmac, "compare_digest", counting)
    assert authenticator.authenticate("Bearer sk-app-one-secret") is APP
    assert calls == [True, False]
    calls.clear()
    with pytest.raises(AuthenticationFailed):
        authenticator.authenticate("Bearer nope")
    assert calls == [False, False]


def test_keys_are_not_kept_in_clear(authenticator: Authenticator) -> None:
    # Only digests are compared; KeyConfig's repr hides the key too.
    assert "sk-app-one-secret" not in repr(APP)
    assert all(isinstance(digest, bytes) and len(digest) == 32 for digest, _ in authenticator._keys)


def test_alias_globs(authenticator: Authenticator) -> None:
    authenticator.authorize(APP, "mini")
    authenticator.authorize(APP, "embed-small")
    authenticator.authorize(ALL, "pplx")
    for alias in ("pplx", "mini-large", "Mini", "embed"):
        with pytest.raises(PermissionDenied) as caught:
            authenticator.authorize(APP, alias)
        error = caught.value
        assert status_of(error).status == 403
        assert error.param == "model"
        assert f"'app-1' may not use model {alias!r}" in error.message
        assert "mini, embed-*" in error.message
        assert APP.key not in error.message


def test_admin_keys(authenticator: Authenticator) -> None:
    assert authenticator.is_admin(f"Bearer {ADMIN}")
    assert not authenticator.is_admin("Bearer sk-app-one-secret")
    assert not authenticator.is_admin(None)
    authenticator.require_admin(f"Bearer {ADMIN}")
    with pytest.raises(PermissionDenied, match="admin key"):
        authenticator.require_admin("Bearer sk-app-one-secret")
    with pytest.raises(AuthenticationFailed):
        authenticator.require_admin("Bearer wrong")
    with pytest.raises(AuthenticationFailed):
        authenticator.require_admin(None)


def test_auth_with_no_keys_refuses_everyone() -> None:
    closed = Authenticator(AuthConfig())
    with pytest.raises(AuthenticationFailed):
        closed.authenticate("Bearer anything")
    assert not closed.is_admin("Bearer anything")
