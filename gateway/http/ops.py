"""Operational routes: health, readiness, metrics, usage, and the OpenAPI document."""

from __future__ import annotations

from typing import Any, Callable

from starlette.responses import Response

from gateway.auth import Authenticator
from gateway.errors import NotFound, ServiceOverloaded
from gateway.http.call import ApiCall
from gateway.http.responses import json_response
from gateway.usage.ledger import LedgerError, UsageLedger
from gateway.usage.metrics import Metrics
from gateway.http.openapi import openapi_document
from gateway.runtime import Runtime
from gateway.usage.report import parse_time

__all__ = ["OpsHandlers"]


class OpsHandlers:
    def __init__(
        self,
        runtime: Runtime,
        *,
        auth: Authenticator,
        metrics: Metrics | None,
        ledger: UsageLedger | None,
        breaker_states: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.runtime = runtime
        self.auth = auth
        self.metrics = metrics
        self.ledger = ledger
        self.breaker_states = breaker_states

    async def healthz(self, call: ApiCall) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, call: ApiCall) -> Response:
        states = self.breaker_states() if self.breaker_states is not None else {}
        deployments: dict[str, dict[str, Any]] = {}
        for deployment in self.runtime.deployments:
            detail: dict[str, Any] = {
                "alias": deployment.alias, "provider": deployment.config.provider, "ready": deployment.ready,
            }
            if deployment.name in states:
                detail["circuit"] = states[deployment.name]
            if deployment.config.health_check:
                detail["health"] = deployment.health
                if deployment.health_error is not None:
                    detail["health_error"] = deployment.health_error
            deployments[deployment.name] = detail
        if not self.runtime.ready:
            return json_response({"status": "starting", "deployments": deployments}, status_code=503)
        # An alias whose every deployment has its circuit open (or its health probe failing)
        # cannot serve: not ready, and says which.
        serving = {
            d.alias for d in self.runtime.deployments if states.get(d.name) != "open" and d.health != "down"
        }
        unavailable = sorted(name for name in self.runtime.aliases if name not in serving)
        if unavailable:
            return json_response(
                {"status": "unavailable", "unavailable_models": unavailable, "deployments": deployments},
                status_code=503,
            )
        return json_response({"status": "ready", "deployments": deployments})

    async def metrics_text(self, call: ApiCall) -> Response:
        if self.metrics is None:
            raise NotFound("metrics are off in this gateway's config (server.metrics: false)")
        body, content_type = self.metrics.render()
        return Response(body, media_type=content_type)

    async def usage(self, call: ApiCall) -> Response:
        self.auth.require_admin(call.header(b"authorization"))
        if self.ledger is None:
            raise NotFound("the usage ledger is off in this gateway's config (usage.ledger: off)", code="ledger_disabled")
        query = call.request().query_params
        group_by = query.get("group_by") or "alias"
        start = parse_time(query["start"], param="start") if query.get("start") else None
        end = parse_time(query["end"], param="end") if query.get("end") else None
        try:
            rows = await self.ledger.query(start, end, group_by)
        except LedgerError as exc:  # a sick ledger is the gateway's trouble, not a 500 for the client
            raise ServiceOverloaded(f"the usage ledger cannot be read right now: {exc}", code="ledger_unavailable") from None
        return json_response({"object": "list", "group_by": group_by, "data": rows})

    async def openapi(self, call: ApiCall) -> Response:
        return json_response(openapi_document())


