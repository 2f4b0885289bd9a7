"""The API's list of drift object kinds is written out for OpenAPI; it must stay the snapshot's list."""

from __future__ import annotations

from typing import get_args

from service.api.schemas import DriftObject
from service.schema.snapshot import KINDS


def test_api_drift_kinds_are_the_snapshot_kinds() -> None:
    assert get_args(DriftObject) == KINDS
