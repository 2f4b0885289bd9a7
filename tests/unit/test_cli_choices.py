"""The CLI's fixed-value options offer exactly the values the API accepts."""

from __future__ import annotations

from enum import Enum
from typing import Any, get_args

import pytest

from service import config
from service.api import schemas
from service.cli import choices


@pytest.mark.parametrize(
    ("cli", "api"),
    [
        (choices.State, schemas.LifecycleState),
        (choices.Status, schemas.SchemaStatusValue),
        (choices.Strategy, config.Strategy),
    ],
)
def test_cli_choices_equal_the_apis(cli: type[Enum], api: Any) -> None:
    assert [c.value for c in cli] == list(get_args(api))
