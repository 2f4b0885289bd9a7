"""Test fixtures: a real PostgreSQL for every test that needs one, never a mock.

The server is the one named by ``TENANTS_TEST_DATABASE_URL`` when set, else a private throwaway cluster that the
suite starts itself (on tmpfs when there is one). Each test gets its own catalog database and database prefix, and
everything it made is dropped afterwards, so tests never see each other's tenants.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from service.api.app import create_app
from service.config import Settings
from service.store.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "migrations"
DEFAULT_MIGRATIONS = ROOT / "migrations"

for _name in [n for n in os.environ if n.startswith("TENANTS_") and n != "TENANTS_TEST_DATABASE_URL"]:
    del os.environ[_name]


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """Admin URL of the test server."""
    given = os.environ.get("TENANTS_TEST_DATABASE_URL")
    if given:
        yield given
        return
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - mkdtemp makes a private dir; tmpfs starts a cluster in ~0.6 s
    data = Path(tempfile.mkdtemp(prefix="tenants-test-", dir=base))
    server = EmbeddedPostgres(data, durable=False)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
async def cleanup(pg_url: str, tag: str) -> AsyncIterator[None]:
    """Drop every database and role this test made (names carry the test's tag)."""
    yield
    conn = await asyncpg.connect(pg_url)
    try:
        names = await conn.fetch("SELECT datname, datistemplate FROM pg_database WHERE strpos(datname, $1) > 0", tag)
        for row in names:
            if row["datistemplate"]:  # a clone template (service.template): PostgreSQL will not drop it as such
                await conn.execute(f'ALTER DATABASE "{row["datname"]}" WITH IS_TEMPLATE false')
            await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
        # Roles are cluster-wide and outlive the databases that granted them anything: drop them after.
        roles = await conn.fetch("SELECT rolname FROM pg_roles WHERE strpos(rolname, $1) > 0", tag)
        for row in roles:
            await conn.execute(f'DROP ROLE IF EXISTS "{row["rolname"]}"')
    finally:
        await conn.close()


@pytest.fixture
def make_settings(pg_url: str, tag: str, cleanup: None) -> Callable[..., Settings]:
    def make(migrations: Path = DEFAULT_MIGRATIONS, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": SecretStr(pg_url),
            "migrations_dir": migrations,
            "catalog_database": f"cat_{tag}",
            "db_prefix": f"t{tag}_",
            "busy_timeout": 30.0,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan started, and a client talking to it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as client:
            yield client


@pytest.fixture
def serve() -> Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]:
    return running


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(settings) as c:
        yield c


@pytest.fixture
def migration_dir(tmp_path: Path) -> Callable[[str], Path]:
    """A writable copy of a fixture migration set (tests edit files to simulate fixes and new versions)."""

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(FIXTURES / name, target)
        return target

    return copy
