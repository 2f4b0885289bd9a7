"""``"strategy": "clone"``: tenants copied from a checked template database, indistinguishable from replayed ones.

Small fixture sets (``ok``: two files and a seed; ``failing_stmt``: a bad third file) keep the template builds
cheap; one test compares a cloned tenant of the default history with a replayed one, object by object.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.schema import snapshot
from service.schema.template import template_prefix
from service.store.db import with_database
from tests.conftest import DEFAULT_MIGRATIONS, FIXTURES
from tests.drift_support import app_running, drift_of, provisioner_of

MakeSettings = Callable[..., Settings]
MigrationDir = Callable[[str], Path]

OK = FIXTURES / "ok"
FAILING = FIXTURES / "failing_stmt"
NOTES = 'CREATE TABLE "notes" ("id" serial PRIMARY KEY, "account_id" integer REFERENCES "accounts"("id"));\n'


async def clone(client: httpx.AsyncClient, tenant_id: str, **body: Any) -> dict[str, Any]:
    r = await client.post("/tenants", json={"id": tenant_id, "strategy": "clone", **body})
    assert r.status_code == 201, r.text
    found: dict[str, Any] = r.json()
    return found


async def fetch(pg_url: str, database: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(with_database(pg_url, database))
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def templates(pg_url: str, settings: Settings) -> dict[str, tuple[bool, bool]]:
    """Template databases of this test's catalog on the server: name → (is_template, allows connections)."""
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch(
            "SELECT datname, datistemplate, datallowconn FROM pg_database WHERE starts_with(datname, $1)",
            template_prefix(settings.catalog_database),
        )
    finally:
        await conn.close()
    return {r["datname"]: (r["datistemplate"], r["datallowconn"]) for r in rows}


async def database_exists(pg_url: str, name: str) -> bool:
    conn = await asyncpg.connect(pg_url)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def test_clone_is_up_to_date_clean_and_seeded_with_its_own_values(
    make_settings: MakeSettings, pg_url: str
) -> None:
    settings = make_settings(OK)
    async with app_running(settings) as (app, client):
        alpha = await clone(client, "alpha", name="Alpha", seed={"email": "owner@alpha.test"})
        beta = await clone(client, "beta", name="Beta Co")
        assert provisioner_of(app).template.builds == 1  # both from one template

        schema = (await client.get("/tenants/alpha/schema")).json()
        assert schema["status"] == "up_to_date"
        assert [a["version"] for a in schema["applied"]] == [0, 1]
        assert {a["how"] for a in schema["applied"]} == {"cloned"}
        assert (await drift_of(client, "alpha"))["clean"] is True
        assert (await drift_of(client, "beta"))["clean"] is True

        rows = await fetch(pg_url, alpha["database"], "SELECT email, name FROM accounts")
        assert [tuple(r) for r in rows] == [("owner@alpha.test", "Alpha")]
        rows = await fetch(pg_url, beta["database"], "SELECT email, name FROM accounts")
        assert [tuple(r) for r in rows] == [("beta@example.test", "Beta Co")]
        seeds = await fetch(pg_url, beta["database"], "SELECT file FROM _tenants.seeds")
        assert [r["file"] for r in seeds] == ["0001_account.sql"]

        # The tenant's own role reaches its tables, as after a replay.
        role = await asyncpg.connect(alpha["connection_url"])
        try:
            assert await role.fetchval("SELECT count(*) FROM accounts") == 1
        finally:
            await role.close()

        # The template: marked as one, nobody may connect, and GET /databases calls it internal.
        found = await templates(pg_url, settings)
        name = provisioner_of(app).template.name
        assert found == {name: (True, False)}
        listed = {d["name"]: d for d in (await client.get("/databases")).json()["items"]}
        assert listed[name]["kind"] == "internal"
        assert listed[alpha["database"]]["kind"] == "managed"
        r = await client.post("/tenants/stolen/adopt", json={"database": name})
        assert r.status_code == 409
        assert r.json()["code"] == "database_not_adoptable"

        events = (await client.get("/tenants/alpha/events")).json()["items"]
        assert events[0]["kind"] == "create"
        assert events[0]["detail"] == {"strategy": "clone"}

        # A replay of the request (with or without the strategy) is a replay, not a conflict.
        again = {"id": "alpha", "name": "Alpha", "seed": {"email": "owner@alpha.test"}}
        assert (await client.post("/tenants", json=again)).status_code == 200
        assert (await client.post("/tenants", json={**again, "strategy": "replay"})).status_code == 200

        assert (await client.delete("/tenants/alpha?confirm=alpha&purge=true")).status_code == 204
        assert not await database_exists(pg_url, alpha["database"])
        assert (await client.get("/tenants/alpha")).status_code == 404
        assert await templates(pg_url, settings) == {name: (True, False)}  # the template stays


async def test_strategy_defaults_to_the_setting(make_settings: MakeSettings, pg_url: str) -> None:
    assert Settings().strategy == "replay"
    async with app_running(make_settings(OK, strategy="clone")) as (app, client):
        r = await client.post("/tenants", json={"id": "bydefault"})
        assert r.status_code == 201, r.text
        r = await client.post("/tenants", json={"id": "replayed", "strategy": "replay"})
        assert r.status_code == 201, r.text
        r = await client.post("/tenants", json={"id": "later"}, headers={"Prefer": "respond-async"})
        assert r.status_code == 202, r.text
        for _ in range(200):
            if (await client.get("/tenants/later")).json()["state"] not in ("queued", "provisioning"):
                break
            await asyncio.sleep(0.05)
        hows = {}
        for tenant in ("bydefault", "replayed", "later"):
            schema = (await client.get(f"/tenants/{tenant}/schema")).json()
            assert schema["status"] == "up_to_date", schema
            hows[tenant] = {a["how"] for a in schema["applied"]}
        assert hows == {"bydefault": {"cloned"}, "replayed": {"applied"}, "later": {"cloned"}}
        assert provisioner_of(app).template.builds == 1


@pytest.mark.parametrize("strategy", ["copy", "CLONE", 1, ""])
async def test_unknown_strategy_is_422(make_settings: MakeSettings, strategy: object) -> None:
    async with app_running(make_settings(OK)) as (app, client):
        r = await client.post("/tenants", json={"id": "odd", "strategy": strategy})
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "invalid_request"
        assert (await client.get("/tenants/odd")).status_code == 404
        assert provisioner_of(app).template.builds == 0


async def test_template_is_reused_then_rebuilt_when_the_files_change(
    make_settings: MakeSettings, migration_dir: MigrationDir, pg_url: str
) -> None:
    folder = migration_dir("ok")
    settings = make_settings(folder)
    async with app_running(settings) as (app, client):
        await clone(client, "first")
        old = provisioner_of(app).template.name
        assert provisioner_of(app).template.builds == 1
    async with app_running(settings) as (app, client):  # a restart finds the template
        await clone(client, "second")
        assert provisioner_of(app).template.name == old
        assert provisioner_of(app).template.builds == 0

    (folder / "0002_notes.sql").write_text(NOTES)
    async with app_running(settings) as (app, client):
        third = await clone(client, "third")
        new = provisioner_of(app).template.name
        assert new != old
        assert provisioner_of(app).template.builds == 1
        assert await templates(pg_url, settings) == {new: (True, False)}  # the old one is dropped
        schema = (await client.get("/tenants/third/schema")).json()
        assert [(a["version"], a["how"]) for a in schema["applied"]] == [(0, "cloned"), (1, "cloned"), (2, "cloned")]
        assert (await drift_of(client, "third"))["clean"] is True
        assert await fetch(pg_url, third["database"], "SELECT 1 FROM notes") == []

        # A tenant cloned from the old template migrates like any other; the new file's row is "applied".
        r = await client.post("/tenants/first/migrate")
        assert r.status_code == 200, r.text
        assert [(a["version"], a["how"]) for a in r.json()["applied"]] == [
            (0, "cloned"),
            (1, "cloned"),
            (2, "applied"),
        ]
        assert r.json()["drift"]["clean"] is True


async def test_a_replica_on_the_old_set_rebuilds_its_template_once(
    make_settings: MakeSettings, tmp_path: Path, pg_url: str
) -> None:
    """A rolling deploy: a replica with a new file drops the old template; one still on the old files, which used
    it, builds it again without dropping the new one, and neither builds again after that."""
    old_folder, new_folder = tmp_path / "old", tmp_path / "new"
    shutil.copytree(OK, old_folder)
    shutil.copytree(OK, new_folder)
    (new_folder / "0002_notes.sql").write_text(NOTES)
    old_settings = make_settings(old_folder)
    new_settings = make_settings(new_folder)
    async with app_running(old_settings) as (old_app, old_client):
        await clone(old_client, "o1")
        async with app_running(new_settings) as (new_app, new_client):
            await clone(new_client, "n1")  # builds the new set's template, drops the old one
            old_name, new_name = provisioner_of(old_app).template.name, provisioner_of(new_app).template.name
            assert set(await templates(pg_url, old_settings)) == {new_name}
            await clone(old_client, "o2")  # its template is gone: built again, the new one kept
            await clone(new_client, "n2")
            await clone(old_client, "o3")
            assert provisioner_of(old_app).template.builds == 2
            assert provisioner_of(new_app).template.builds == 1
            assert set(await templates(pg_url, old_settings)) == {old_name, new_name}
            for client, tenant, latest in ((old_client, "o2", 1), (new_client, "n2", 2)):
                schema = (await client.get(f"/tenants/{tenant}/schema")).json()
                assert schema["current_version"] == latest
                assert {a["how"] for a in schema["applied"]} == {"cloned"}


async def test_concurrent_clones_build_the_template_once(make_settings: MakeSettings, pg_url: str) -> None:
    settings = make_settings(OK, max_parallel=6, pool_size=12)
    async with app_running(settings) as (app, client):
        made = await asyncio.gather(*(clone(client, f"c{i}") for i in range(6)))
        assert len({t["database"] for t in made}) == 6
        assert provisioner_of(app).template.builds == 1
        assert list(await templates(pg_url, settings)) == [provisioner_of(app).template.name]
        for i in range(6):
            schema = (await client.get(f"/tenants/c{i}/schema")).json()
            assert schema["status"] == "up_to_date"
            assert {a["how"] for a in schema["applied"]} == {"cloned"}


async def test_two_replicas_build_the_template_once(make_settings: MakeSettings, pg_url: str) -> None:
    settings = make_settings(OK)
    async with app_running(settings) as (one, first), app_running(settings) as (two, second):
        await asyncio.gather(*(clone(c, f"r{i}{n}") for n, c in enumerate((first, second)) for i in range(3)))
        # The second builder waits on the catalog's advisory lock, then finds the finished template.
        assert provisioner_of(one).template.builds + provisioner_of(two).template.builds == 1
        assert list(await templates(pg_url, settings)) == [provisioner_of(one).template.name]


async def test_failing_template_build_leaves_nothing(make_settings: MakeSettings, pg_url: str) -> None:
    settings = make_settings(FAILING)
    async with app_running(settings) as (app, client):
        answers = await asyncio.gather(
            *(client.post("/tenants", json={"id": f"bad{i}", "strategy": "clone"}) for i in range(3))
        )
        for r in answers:
            assert r.status_code == 500, r.text
            problem = r.json()
            assert problem["code"] == "migration_failed"
            assert problem["file"] == "0002_notes.sql"
            assert problem["version"] == 2
            assert problem["sqlstate"] == "42P01"
        # Tasks that waited for the failing build share its failure instead of building again.
        assert provisioner_of(app).template.builds == 1
        for i in range(3):
            tenant = (await client.get(f"/tenants/bad{i}")).json()
            assert tenant["state"] == "failed"
            assert tenant["error"]["code"] == "migration_failed"
            assert not await database_exists(pg_url, tenant["database"])
        assert await templates(pg_url, settings) == {}
        # A retry builds again (the files may have been fixed meanwhile) and fails the same way, cleanly.
        r = await client.post("/tenants", json={"id": "bad0", "strategy": "clone"})
        assert r.status_code == 500
        assert await templates(pg_url, settings) == {}


async def test_interrupted_build_is_dropped_and_a_broken_template_rebuilt(
    make_settings: MakeSettings, pg_url: str
) -> None:
    settings = make_settings(OK)
    async with app_running(settings) as (app, _):
        name = provisioner_of(app).template.name
    conn = await asyncpg.connect(pg_url)
    try:
        # As a builder that died would leave them: a temporary, and (never made by the service, but possible by
        # hand) a database under the final name that is not a finished template.
        await conn.execute(f'CREATE DATABASE "{name}_0badc0"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    async with app_running(settings) as (app, client):
        for _ in range(300):  # the first recovery pass, in the background from the start, drops the temporary
            if set(await templates(pg_url, settings)) == {name}:
                break
            await asyncio.sleep(0.1)
        assert set(await templates(pg_url, settings)) == {name}
        await clone(client, "after")
        assert provisioner_of(app).template.builds == 1
        assert await templates(pg_url, settings) == {name: (True, False)}
        assert (await drift_of(client, "after"))["clean"] is True


async def test_clone_of_the_default_history_equals_a_replay(make_settings: MakeSettings, pg_url: str) -> None:
    async with app_running(make_settings(DEFAULT_MIGRATIONS)) as (_, client):
        seed = {"admin_email": "owner@studio.test"}
        replayed = (await client.post("/tenants", json={"id": "replayed", "seed": seed, "strategy": "replay"})).json()
        cloned = await clone(client, "cloned", seed=seed)
        assert (await drift_of(client, "cloned"))["clean"] is True

        shapes: list[dict[str, Any]] = []
        for tenant in (replayed, cloned):
            conn = await asyncpg.connect(with_database(pg_url, tenant["database"]))
            try:
                tables = [
                    r["t"]
                    for r in await conn.fetch(
                        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) AS t FROM pg_tables"
                        " WHERE schemaname = 'public' ORDER BY 1"
                    )
                ]
                shapes.append(
                    {
                        "snapshot": (await snapshot.read(conn)).dump(),
                        "history": [
                            tuple(r)
                            for r in await conn.fetch(
                                "SELECT version, name, file, sha256, drizzle_hash FROM _tenants.history ORDER BY 1"
                            )
                        ],
                        "how": {r["how"] for r in await conn.fetch("SELECT how FROM _tenants.history")},
                        "seeds": [r["file"] for r in await conn.fetch("SELECT file FROM _tenants.seeds ORDER BY 1")],
                        "rows": {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in tables},
                    }
                )
            finally:
                await conn.close()
        want, got = shapes
        assert got["snapshot"] == want["snapshot"]
        assert got["history"] == want["history"]
        assert len(got["history"]) == 11
        assert (want["how"], got["how"]) == ({"applied"}, {"cloned"})
        assert got["seeds"] == want["seeds"]
        assert got["rows"] == want["rows"]
        assert sum(want["rows"].values()) > 0
