"""The OpenAPI document as committed in ``openapi.yaml`` (a test fails when the two differ)."""

from __future__ import annotations

import yaml

from service.api.app import create_app
from service.config import Settings


def render() -> str:
    document = create_app(Settings()).openapi()
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120)
