"""The README's error table lists every code the service can answer with, and each with its status.

The codes are collected from the code itself: every error class with a status in ``api/problems.STATUS``, and
every literal code the problem handlers and the body limit hand to ``problem(...)`` (or keep in a table of them).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from service.api import problems

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SOURCES = [ROOT / "service" / "api" / "problems.py", ROOT / "service" / "api" / "limits.py"]


def _literal_codes(path: Path) -> dict[str, int | None]:
    """Codes written as literals: ``problem(400, "bad_request", …)`` (with its status), ``_HTTP_CODES`` values and
    the fallback of ``_HTTP_CODES.get`` (their status varies)."""
    found: dict[str, int | None] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            args = node.args
            if name == "problem" and len(args) >= 2 and isinstance(args[1], ast.Constant):
                status = args[0].value if isinstance(args[0], ast.Constant) else None
                found[str(args[1].value)] = status if isinstance(status, int) else None
            on_table = isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", "") == "_HTTP_CODES"
            if on_table and name == "get" and len(args) == 2 and isinstance(args[1], ast.Constant):
                found.setdefault(str(args[1].value), None)
        if isinstance(node, ast.Dict) and all(
            isinstance(k, ast.Constant) and isinstance(k.value, int) for k in node.keys
        ):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found[value.value] = int(key.value)
    return found


def emitted() -> dict[str, int | None]:
    codes: dict[str, int | None] = {cls.code: status for cls, status in problems.STATUS.items()}
    for path in SOURCES:
        for code, status in _literal_codes(path).items():
            codes.setdefault(code, status)
    return codes


def documented() -> dict[str, str]:
    return dict(re.findall(r"^\| `([a-z_]+)` \| (\d{3}|\dxx) \|", README, flags=re.MULTILINE))


def test_readme_error_table_equals_the_codes_the_service_emits() -> None:
    codes = emitted()
    # The collection itself works: codes of each origin are there.
    assert {"tenant_not_found", "not_found", "method_not_allowed", "bad_request", "payload_too_large"} <= set(codes)
    table = documented()
    assert sorted(set(codes) - set(table)) == [], "codes missing from the README's error table"
    assert sorted(set(table) - set(codes)) == [], "README rows for codes the service never emits"
    wrong = {c: (table[c], s) for c, s in codes.items() if s is not None and table[c] != str(s)}
    assert wrong == {}, "README status differs from the service's (readme, service)"
