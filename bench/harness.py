"""What every in-process benchmark needs: a server to measure on, the service on a loopback port, and cleanup."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import uvicorn

from service.api.app import create_app
from service.config import Settings
from service.identifiers import quote_ident
from service.store.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def database_server() -> AsyncIterator[tuple[str, str]]:
    """``(dsn, description)``: ``TENANTS_DATABASE_URL`` when set, else a durable embedded cluster in a temp dir."""
    dsn = os.environ.get("TENANTS_DATABASE_URL")
    if dsn:
        yield dsn, await server_version(dsn)
        return
    embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="tenants-bench-")) / "pg", durable=True)
    try:
        yield embedded.start(), "embedded (durable)"
    finally:
        embedded.stop()


def settings_for(dsn: str, tag: str, migrations: Path = ROOT / "migrations") -> Settings:
    return Settings(
        database_url=dsn,  # type: ignore[arg-type]
        migrations_dir=migrations,
        catalog_database=f"bench_{tag}",
        db_prefix=f"b{tag}_",
    )


@asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[str]:
    """The app under uvicorn in a thread (real HTTP on loopback); yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(600):  # up to 30 s
            if server.started:
                break
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join)


async def drop_databases(dsn: str, names: Iterable[str]) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        for name in names:
            await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    finally:
        await admin.close()


async def server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
