"""The service's own SQL files, shipped inside the package."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def load(name: str) -> str:
    return (files(__package__) / name).read_text(encoding="utf-8")
