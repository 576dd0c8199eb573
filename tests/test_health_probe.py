"""Active health probes against a real (fake) upstream: a wrong key is found at start."""

from __future__ import annotations

import httpx

from conftest import make_config
from fakes.openai_upstream import OpenAIUpstream
from fakes.server import run_in_thread
from gateway.app import create_app

GOOD, BAD = "sk-good-7f3a", "sk-wrong-91c2"


def test_a_deployment_with_a_wrong_key_is_marked_down_before_any_request() -> None:
    with run_in_thread(OpenAIUpstream(api_key=GOOD)) as upstream:
        base = f"{upstream.base_url}/v1"
        common = {"provider": "openai", "base_url": base, "model": "text-embedding-3-small", "health_check": True}
        config = make_config({
            "embed": {
                "routing": "fallback",
                "deployments": [
                    {"name": "wrong-key", "api_key": BAD, **common},
                    {"name": "right-key", "api_key": GOOD, **common},
                ],
            },
            "unprobed": {"provider": "openai", "base_url": base, "model": "text-embedding-3-small", "api_key": GOOD},
        })
        with run_in_thread(create_app(config), lifespan="on") as gateway, httpx.Client(base_url=gateway.base_url) as client:
            ready = client.get("/readyz").json()["deployments"]
            assert ready["wrong-key"]["health"] == "down"
            assert "UpstreamAuthError" in ready["wrong-key"]["health_error"]
            assert BAD not in ready["wrong-key"]["health_error"]
            assert ready["right-key"]["health"] == "up"
            assert "health" not in ready["unprobed"]
            metrics = client.get("/metrics").text
            assert 'gateway_deployment_up{deployment="wrong-key"} 0.0' in metrics
            assert 'gateway_deployment_up{deployment="right-key"} 1.0' in metrics
            upstream.app.log.clear()
            response = client.post("/v1/embeddings", json={"model": "embed", "input": "hi"})
            assert response.status_code == 200
            # The user's request went straight to the healthy deployment: one attempt, no 401 first.
            assert response.headers["x-gateway-deployment"] == "right-key"
            assert response.headers["x-gateway-attempts"] == "1"
            assert upstream.app.log.count == 1
