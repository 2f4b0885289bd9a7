"""openapi.yaml is the service's contract: it must be exactly what the app serves."""

from __future__ import annotations

from pathlib import Path

import yaml

from service.api.spec import render

ROOT = Path(__file__).resolve().parents[2]


def test_committed_openapi_matches_the_app() -> None:
    committed = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    served = yaml.safe_load(render())
    assert committed == served, "openapi.yaml is stale: regenerate it with `tenantctl openapi > openapi.yaml`"


def test_every_error_answer_is_problem_json() -> None:
    served = yaml.safe_load(render())
    for path, operations in served["paths"].items():
        for method, op in operations.items():
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    assert "application/problem+json" in response.get("content", {}), (method, path, status)
