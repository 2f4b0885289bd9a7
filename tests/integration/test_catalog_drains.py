"""catalog_0010.sql on a catalog of version 9 holding drains of the old driver: a running drain goes on as a rollout
of moves of the tenants still on its server, a finished one stays a mark only, and a migration rollout may run
beside a drain while two migrations still may not."""

from __future__ import annotations

import asyncpg
import pytest

from service.fleet import move_store, rollout_store
from service.store import catalog, sql
from service.store.db import with_database


async def test_catalog_0010_turns_a_running_drain_into_a_rollout(pg_url: str, tag: str, cleanup: None) -> None:
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f'CREATE DATABASE "cat_{tag}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(with_database(pg_url, f"cat_{tag}"))
    try:
        await conn.execute("CREATE TABLE catalog_versions (version integer PRIMARY KEY)")
        for number, name in enumerate(catalog.CATALOG_VERSIONS[:9], start=1):
            await conn.execute(sql.load(name))
            await conn.execute("INSERT INTO catalog_versions (version) VALUES ($1)", number)
        await conn.execute(
            """INSERT INTO tenants (id, name, database, state, request_sha256, server, version) VALUES
                 ('t2', 't2', 'd_t2', 'ready', 'x', 'a', 1), ('t1', 't1', 'd_t1', 'ready', 'x', 'a', 1),
                 ('t3', 't3', 'd_t3', 'deleted', 'x', 'a', 1), ('t4', 't4', 'd_t4', 'ready', 'x', 'b', 1)"""
        )
        await conn.execute(
            """INSERT INTO drains (server, state, concurrency, max_failures, moved, actor) VALUES
                 ('a', 'running', 3, 1, 5, 'ops'), ('c', 'succeeded', 2, 0, 7, 'ops')"""
        )
        assert await catalog.upgrade(conn) == len(catalog.CATALOG_VERSIONS)

        found = await move_store.drains(conn)
        assert set(found) == {"a", "c"}
        assert (found["c"].rollout_id, found["c"].state) == (None, None)  # finished: the mark stays, no rollout
        drain = await rollout_store.get(conn, found["a"].rollout_id or 0)
        assert drain is not None
        assert (drain.kind, drain.server, drain.state, drain.to_version) == ("drain", "a", "running", None)
        assert (drain.concurrency, drain.max_failures, drain.canary) == (3, 1, 0)
        assert [(t.tenant_id, t.position, t.state) for t in drain.tenants] == [
            ("t1", 1, "pending"),
            ("t2", 2, "pending"),
        ]
        assert await rollout_store.running_ids(conn, kind="drain") == [drain.id]

        # one running rollout per kind: a migration beside the drain, but not two migrations
        first = await rollout_store.insert(
            conn, to_version=1, concurrency=1, canary=0, max_failures=0, actor="t", tenants=[("t4", 0)]
        )
        assert await rollout_store.running_ids(conn, kind="migrate") == [first]
        with pytest.raises(asyncpg.UniqueViolationError):
            await rollout_store.insert(
                conn, to_version=1, concurrency=1, canary=0, max_failures=0, actor="t", tenants=[("t4", 0)]
            )
        # a migration has a version, a move rollout none
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO rollouts (state, concurrency, canary, max_failures, actor) VALUES ('failed', 1, 0, 0, 't')"
            )
    finally:
        await conn.close()
