"""Gateway keys: who is calling (401), and whether that key may use an alias (403).

Presented keys are hashed and compared with every configured key's hash in constant
time, without stopping at a match, so neither the time taken nor an early exit tells a
caller how close a guess was or which key it hit. Hashing first also hides the length of
the keys, which ``hmac.compare_digest`` on raw strings would leak.
"""

from __future__ import annotations

import hashlib
import hmac
from fnmatch import fnmatchcase

from gateway.config import AuthConfig, KeyConfig
from gateway.errors import AuthenticationFailed, PermissionDenied

__all__ = ["Authenticator", "bearer_token"]

_CHALLENGE = {"www-authenticate": 'Bearer realm="embedding-gateway"'}
_MISSING = "this gateway needs a gateway key: send the header `Authorization: Bearer <key>`"
_MALFORMED = "the Authorization header must be `Authorization: Bearer <key>`"
_INVALID = "the gateway key is not valid: send a valid key as `Authorization: Bearer <key>`"


def bearer_token(authorization: str | None) -> str | None:
    """The token of ``Bearer <token>`` (scheme in any case), else ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


class Authenticator:
    """Checks ``Authorization`` headers against ``auth.keys`` and ``auth.admin_keys``.

    With ``auth`` set to ``None`` the gateway is open: every call passes and no key is known.
    """

    def __init__(self, auth: AuthConfig | None) -> None:
        self.enabled = auth is not None
        keys = auth.keys if auth is not None else ()
        self._keys: list[tuple[bytes, KeyConfig]] = [(_digest(key.key), key) for key in keys]
        self._admin: list[bytes] = [_digest(key) for key in (auth.admin_keys if auth is not None else ())]

    def authenticate(self, authorization: str | None) -> KeyConfig | None:
        """The key the header carries; ``None`` when auth is off; raises :class:`AuthenticationFailed`."""
        if not self.enabled:
            return None
        digest = self._presented(authorization)
        found: KeyConfig | None = None
        for expected, key in self._keys:
            if hmac.compare_digest(digest, expected):
                found = key
        if found is None:
            raise AuthenticationFailed(_INVALID, headers=dict(_CHALLENGE))
        return found

    @staticmethod
    def allows(key: KeyConfig | None, alias: str) -> bool:
        return key is None or any(fnmatchcase(alias, pattern) for pattern in key.models)

    def authorize(self, key: KeyConfig | None, alias: str) -> None:
        """Raises :class:`PermissionDenied` when ``alias`` matches none of the key's ``models`` globs."""
        if key is None or self.allows(key, alias):
            return
        allowed = ", ".join(key.models) or "none"
        raise PermissionDenied(
            f"gateway key {key.id!r} may not use model {alias!r}; it may use: {allowed}", param="model"
        )

    def is_admin(self, authorization: str | None) -> bool:
        """Whether the header may read usage: always when auth is off, else only with an admin key."""
        if not self.enabled:
            return True
        token = bearer_token(authorization)
        if token is None:
            return False
        digest = _digest(token)
        matched = False
        for expected in self._admin:
            matched |= hmac.compare_digest(digest, expected)
        return matched

    def require_admin(self, authorization: str | None) -> None:
        """For the usage API: 401 without a known key, 403 for a key that is not an admin key."""
        if self.is_admin(authorization):
            return
        self.authenticate(authorization)
        raise PermissionDenied("reading usage needs an admin key (auth.admin_keys)", code="admin_key_required")

    def _presented(self, authorization: str | None) -> bytes:
        if not authorization:
            raise AuthenticationFailed(_MISSING, headers=dict(_CHALLENGE))
        token = bearer_token(authorization)
        if token is None:
            raise AuthenticationFailed(_MALFORMED, headers=dict(_CHALLENGE))
        return _digest(token)
