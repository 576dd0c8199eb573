"""Every error the gateway answers with, and the one place that knows status codes.

Handlers raise; :func:`error_response` turns any exception into OpenAI's error shape,
looking the class up by MRO (as Starlette's exception handlers do), so a provider
error subclass maps like its parent. Anything unknown is a 500 that hides its details.

Gateway exception hierarchy::

    GatewayError
    ├── InvalidRequest        400 invalid_request_error
    ├── AuthenticationFailed  401
    ├── PermissionDenied      403
    ├── ModelNotFound         404 model_not_found
    ├── NotFound              404 (routes)
    ├── MethodNotAllowed      405 (Allow)
    ├── RequestTimeout        408 (the body did not arrive within server.body_timeout_s)
    ├── PayloadTooLarge       413
    ├── UnsupportedMediaType  415
    ├── RateLimited           429 (retry_after)
    ├── ClientClosedRequest   499 (nginx's status: the client hung up before the answer)
    ├── ServiceOverloaded     503 overloaded
    └── NoDeploymentAvailable 503
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson
from starlette.responses import Response

from providers.base import (
    InvalidInput,
    ProviderError,
    ProviderOverloaded,
    ProviderTimeout,
    ProviderUnavailable,
    UpstreamAuthError,
    UpstreamConnectionError,
    UpstreamRateLimited,
    UpstreamResponseError,
)

__all__ = [
    "AuthenticationFailed",
    "ErrorKind",
    "GatewayError",
    "InvalidRequest",
    "MethodNotAllowed",
    "ModelNotFound",
    "NoDeploymentAvailable",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "ServiceOverloaded",
    "UnsupportedMediaType",
    "error_body",
    "error_response",
    "status_of",
]

logger = logging.getLogger("gateway.errors")


class GatewayError(Exception):
    """An error with a message fit for the client; ``param`` names the offending field."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after
        self.headers = headers or {}


class InvalidRequest(GatewayError):
    pass


class AuthenticationFailed(GatewayError):
    pass


class PermissionDenied(GatewayError):
    pass


class ModelNotFound(GatewayError):
    pass


class NotFound(GatewayError):
    pass


class MethodNotAllowed(GatewayError):
    pass


class RequestTimeout(GatewayError):
    pass


class ClientClosedRequest(GatewayError):
    """The client disconnected before its answer: nobody reads this one, the records do."""


class PayloadTooLarge(GatewayError):
    pass


class UnsupportedMediaType(GatewayError):
    pass


class RateLimited(GatewayError):
    pass


class ServiceOverloaded(GatewayError):
    pass


class NoDeploymentAvailable(GatewayError):
    pass


@dataclass(frozen=True)
class ErrorKind:
    status: int
    type: str
    code: str | None


_TABLE: dict[type[BaseException], ErrorKind] = {
    InvalidRequest: ErrorKind(400, "invalid_request_error", "invalid_value"),
    AuthenticationFailed: ErrorKind(401, "authentication_error", "invalid_api_key"),
    PermissionDenied: ErrorKind(403, "permission_error", "model_not_allowed"),
    ModelNotFound: ErrorKind(404, "invalid_request_error", "model_not_found"),
    NotFound: ErrorKind(404, "invalid_request_error", "not_found"),
    MethodNotAllowed: ErrorKind(405, "invalid_request_error", "method_not_allowed"),
    RequestTimeout: ErrorKind(408, "invalid_request_error", "request_timeout"),
    PayloadTooLarge: ErrorKind(413, "invalid_request_error", "request_too_large"),
    ClientClosedRequest: ErrorKind(499, "invalid_request_error", "client_closed_request"),
    UnsupportedMediaType: ErrorKind(415, "invalid_request_error", "unsupported_media_type"),
    RateLimited: ErrorKind(429, "rate_limit_error", "rate_limit_exceeded"),
    ServiceOverloaded: ErrorKind(503, "server_error", "overloaded"),
    NoDeploymentAvailable: ErrorKind(503, "server_error", "no_deployment_available"),
    InvalidInput: ErrorKind(400, "invalid_request_error", "invalid_value"),
    UpstreamRateLimited: ErrorKind(429, "rate_limit_error", "upstream_rate_limited"),
    ProviderOverloaded: ErrorKind(503, "server_error", "overloaded"),
    ProviderTimeout: ErrorKind(504, "server_error", "upstream_timeout"),
    UpstreamConnectionError: ErrorKind(502, "server_error", "upstream_connection_error"),
    ProviderUnavailable: ErrorKind(503, "server_error", "upstream_unavailable"),
    UpstreamAuthError: ErrorKind(502, "server_error", "upstream_auth_error"),
    UpstreamResponseError: ErrorKind(502, "server_error", "upstream_error"),
    ProviderError: ErrorKind(502, "server_error", "upstream_error"),
}
_INTERNAL = ErrorKind(500, "server_error", "internal_error")


def status_of(exc: BaseException) -> ErrorKind:
    for cls in type(exc).__mro__:
        kind = _TABLE.get(cls)
        if kind is not None:
            return kind
    return _INTERNAL


def error_body(message: str, kind: ErrorKind, *, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": kind.type, "param": param, "code": code or kind.code}}
    )


def error_response(exc: BaseException, *, request_id: str | None = None) -> Response:
    kind = status_of(exc)
    headers: dict[str, str] = {}
    if kind is _INTERNAL:
        # One line, no traceback: logs must never carry stack traces or request data.
        logger.error("internal error (request %s): %s", request_id, type(exc).__name__)
        message, param, code = "internal error; the gateway logged it", None, None
    else:
        message = getattr(exc, "message", None) or str(exc)
        param = getattr(exc, "param", None)
        code = getattr(exc, "code", None) if isinstance(exc, GatewayError) else None
        headers.update(getattr(exc, "headers", {}) or {})
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["retry-after"] = str(max(1, round(retry_after)))
    if request_id:
        headers["x-request-id"] = request_id
    return Response(
        error_body(message, kind, param=param, code=code),
        status_code=kind.status,
        headers=headers,
        media_type="application/json",
    )


