"""Options with fixed values, as enums: typer lists them in ``--help`` and refuses others before any request (exit
2). tests/unit/test_cli_choices.py holds them equal to the API's own enums in openapi.yaml."""

from __future__ import annotations

from enum import StrEnum


class Strategy(StrEnum):
    replay = "replay"
    clone = "clone"


class State(StrEnum):
    queued = "queued"
    provisioning = "provisioning"
    ready = "ready"
    failed = "failed"
    deleting = "deleting"
    deleted = "deleted"
    restoring = "restoring"
    moving = "moving"


class Status(StrEnum):
    failed = "failed"
    modified = "modified"
    untracked = "untracked"
    drifted = "drifted"
    out_of_order = "out_of_order"
    behind = "behind"
    up_to_date = "up_to_date"
