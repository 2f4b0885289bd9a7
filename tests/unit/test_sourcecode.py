"""The package tree is the architecture: imports point one way, and each package says what it may import.

Layers, top to bottom: ``api`` and ``cli``; ``fleet``; ``tenants``; ``schema``; ``history``; ``store``; the leaves
(``config``, ``errors``, ``identifiers``, ``logs``), which import nothing of the service but one another.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"

# What each package may import from the service (besides itself). The leaves import only the leaves below them.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "logs": set(),
    "identifiers": {"errors"},
    "config": {"identifiers", "errors"},
    "store": {"config", "errors", "identifiers", "logs"},
    "history": {"store", "config", "errors", "identifiers", "logs"},
    "schema": {"history", "store", "config", "errors", "identifiers", "logs"},
    "tenants": {"schema", "history", "store", "config", "errors", "identifiers", "logs"},
    "fleet": {"tenants", "schema", "history", "store", "config", "errors", "identifiers", "logs"},
    "api": {"fleet", "tenants", "schema", "history", "store", "config", "errors", "identifiers", "logs", "cli"},
    "cli": {"api", "fleet", "tenants", "schema", "history", "store", "config", "errors", "identifiers", "logs"},
}
# history never reads or writes the control catalog: the engine runs against one tenant database.
FORBIDDEN_MODULES = {"history": {"store.catalog", "store.connections", "store.embedded", "store.audit"}}
PACKAGES = {"store", "history", "schema", "tenants", "fleet", "api", "cli"}


def _unit(path: Path) -> str:
    parts = path.relative_to(SERVICE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every ``service.…`` module a file imports, as dotted names below ``service``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            if node.module == "service":
                found += [(node.lineno, a.name) for a in node.names]
            elif node.module.startswith("service."):
                found.append((node.lineno, node.module.removeprefix("service.")))
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name.removeprefix("service.")) for a in node.names if a.name.startswith("service.")
            ]
    return found


def _sources() -> list[Path]:
    return sorted(p for p in SERVICE.rglob("*.py") if p.name != "__main__.py" and p != SERVICE / "__init__.py")


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(SERVICE)))
def test_imports_point_down(path: Path) -> None:
    unit = _unit(path)
    allowed = ALLOWED[unit] | {unit}
    wrong = []
    for line, module in _imports(path):
        target = module.split(".")[0]
        if target == "__version__":
            continue
        if target not in allowed or module in FORBIDDEN_MODULES.get(unit, set()):
            wrong.append(f"{path.relative_to(SERVICE)}:{line} imports service.{module}")
    assert wrong == []


def test_every_package_says_what_it_may_import() -> None:
    for name in PACKAGES:
        doc = ast.get_docstring(ast.parse((SERVICE / name / "__init__.py").read_text()))
        assert doc is not None, name
        assert "import" in doc, name


def test_only_store_db_imports_asyncpg_exceptions() -> None:
    offenders = []
    for path in _sources():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n.startswith("asyncpg.exceptions") for n in names):
                offenders.append(str(path.relative_to(SERVICE)))
    assert set(offenders) <= {"store/db.py"}


def test_only_api_imports_fastapi() -> None:
    offenders = [
        str(p.relative_to(SERVICE))
        for p in _sources()
        if _unit(p) != "api"
        and any(
            (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] in {"fastapi", "starlette"})
            or (isinstance(n, ast.Import) and any(a.name.split(".")[0] in {"fastapi", "starlette"} for a in n.names))
            for n in ast.walk(ast.parse(p.read_text()))
        )
    ]
    assert offenders == []


def test_only_config_reads_the_environment() -> None:
    offenders = [
        str(p.relative_to(SERVICE))
        for p in _sources()
        if p.name != "config.py" and any(s in p.read_text() for s in ("os.environ[", "os.environ.get", "os.getenv"))
    ]
    assert offenders == []


def test_no_module_is_too_long() -> None:
    long = {str(p.relative_to(SERVICE)): n for p in _sources() if (n := len(p.read_text().splitlines())) > LIMIT}
    assert long == {}


LIMIT = 450  # lines of a module


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function without its docstring."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return 0 if not body else (body[-1].end_lineno or 0) - body[0].lineno + 1


def test_no_function_is_too_long() -> None:
    long = {
        f"{p.relative_to(SERVICE)}:{node.name}": n
        for p in _sources()
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (n := _body_lines(node)) > FUNCTION_LIMIT
    }
    assert long == {}


FUNCTION_LIMIT = 60
