"""service.snapshot against a real server: every object kind is read, and the result depends on the schema only."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from service.history import runner
from service.history.migrations import MigrationSet, load, plan
from service.schema import snapshot
from service.schema.compare import compare
from service.schema.snapshot import Snapshot
from service.store.db import with_database

DRIFT = Path(__file__).resolve().parents[1] / "fixtures" / "migrations" / "drift"
Make = Callable[[str], Awaitable[asyncpg.Connection]]


@pytest.fixture
def drift_set() -> MigrationSet:
    return load(DRIFT)


@pytest.fixture
async def make_db(pg_url: str, tag: str, cleanup: None) -> AsyncIterator[Make]:
    """Empty databases named ``s<tag>_<name>`` (dropped by ``cleanup``), each with an open connection."""
    opened: list[asyncpg.Connection] = []

    async def make(name: str) -> asyncpg.Connection:
        admin = await asyncpg.connect(pg_url)
        try:
            await admin.execute(f'CREATE DATABASE "s{tag}_{name}" TEMPLATE template0')
        finally:
            await admin.close()
        conn = await asyncpg.connect(with_database(pg_url, f"s{tag}_{name}"))
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        await conn.close()


async def test_every_kind_is_read(make_db: Make, drift_set: MigrationSet) -> None:
    conn = await make_db("full")
    await runner.apply(conn, plan(drift_set.migrations))
    objects = (await snapshot.read(conn)).objects()
    assert set(objects) == set(snapshot.KINDS)
    assert [kind for kind, found in objects.items() if not found] == ["exclusion"]

    assert set(objects["schema"]) == {"billing", "public"}
    assert objects["extension"]["citext"]["schema"] == "public"
    assert objects["enum"]["public.priority"] == {"labels": ["low", "normal", "high"]}
    assert objects["table"]["billing.invoices"] == {"kind": "table", "unlogged": False, "rls": True, "force_rls": False}
    columns = objects["column"]
    assert columns["public.accounts.id"]["identity"] == "always"
    assert columns["public.accounts.email"]["type"] == "public.citext"
    assert columns["public.accounts.name"]["collation"] == 'pg_catalog."C"'
    assert columns["public.accounts.plan"]["default"] == "'free'::public.plan"
    assert columns["public.accounts.email_domain"]["generated"] == "split_part((email)::text, '@'::text, 2) STORED"
    assert columns["billing.invoices.amount"] == {
        "type": "numeric(10,2)",
        "nullable": False,
        "default": "'0'::numeric",
        "identity": None,
        "generated": None,
        "collation": None,
    }
    assert objects["primary_key"]["public.accounts.accounts_pkey"] == {"definition": "PRIMARY KEY (id)"}
    assert objects["unique"]["public.accounts.accounts_email_unique"] == {"definition": "UNIQUE (email)"}
    assert objects["foreign_key"]["public.notes.notes_account_id_accounts_id_fk"] == {
        "definition": "FOREIGN KEY (account_id) REFERENCES public.accounts(id) ON DELETE SET NULL"
    }
    assert objects["check"]["billing.invoices.invoices_amount_check"] == {"definition": "CHECK (amount >= 0::numeric)"}
    # Indexes that back a constraint are described by the constraint, not again as indexes.
    assert set(objects["index"]) == {
        "billing.invoices_account_id_idx",
        "billing.invoices_status_idx",
        "public.accounts_lower_name_idx",
    }
    assert objects["index"]["public.accounts_lower_name_idx"]["definition"] == (
        "CREATE INDEX accounts_lower_name_idx ON public.accounts USING btree (lower(name)) "
        "WHERE (plan <> 'free'::public.plan)"
    )
    # Serial sequences are listed with their owner; the identity sequence belongs to its column.
    assert set(objects["sequence"]) == {
        "billing.invoice_number_seq",
        "billing.invoices_id_seq",
        "public.notes_id_seq",
    }
    assert objects["sequence"]["billing.invoice_number_seq"]["start"] == 1000
    assert objects["sequence"]["public.notes_id_seq"]["owned_by"] == "public.notes.id"
    assert objects["view"]["billing.open_invoices"]["materialized"] is False
    assert objects["function"]["public.touch_updated_at()"]["returns"] == "trigger"
    assert objects["function"]["billing.forget_sent(IN days integer)"]["kind"] == "procedure"
    assert len(objects["function"]["public.touch_updated_at()"]["body_sha256"]) == 64
    assert objects["trigger"]["public.accounts.accounts_touch_updated_at"]["enabled"] == "enabled"
    assert objects["policy"]["billing.invoices.invoices_positive_account"] == {
        "command": "SELECT",
        "permissive": True,
        "roles": ["public"],
        "using": "(account_id > 0)",
        "with_check": None,
    }


async def test_snapshot_depends_on_the_schema_only(make_db: Make, drift_set: MigrationSet) -> None:
    """Another path to the same schema (a script, other settings, other histories) gives the same snapshot."""
    ours = await make_db("ours")
    await runner.apply(ours, plan(drift_set.migrations))

    script = await make_db("script")
    for migration in drift_set.migrations:
        for statement in migration.statements:
            await script.execute(statement.sql)
    await script.execute(
        "CREATE SCHEMA drizzle; CREATE TABLE drizzle.__drizzle_migrations (id serial PRIMARY KEY, hash text);"
        "CREATE EXTENSION pg_trgm"
    )
    # Rendered names depend on the search path: the reader pins its own.
    await script.execute("SET search_path = billing, public")
    await ours.execute("CREATE EXTENSION pg_trgm")
    await ours.execute("INSERT INTO accounts (email) VALUES ('a@b.test')")  # data is not schema

    first, second = await snapshot.read(ours), await snapshot.read(script)
    assert compare(first, second) == []
    assert first == second
    assert not [name for name in first.objects()["function"] if "trgm" in name]  # extension members left out
    assert not [key for key in first.entries if key[1].startswith(("_tenants", "drizzle"))]


async def test_stored_form_round_trips(make_db: Make, drift_set: MigrationSet) -> None:
    conn = await make_db("trip")
    await runner.apply(conn, plan(drift_set.migrations))
    read = await snapshot.read(conn)
    again = Snapshot.load(json.loads(json.dumps(read.dump())))
    assert again == read
    assert again.entries[("column", "public.notes.body")].depends == (("table", "public.notes"),)


async def test_empty_database(make_db: Make) -> None:
    objects = (await snapshot.read(await make_db("empty"))).objects()
    assert objects["schema"] == {"public": {}}
    assert objects["extension"] == {"plpgsql": {"version": "1.0", "schema": "pg_catalog"}}
    assert sum(len(v) for v in objects.values()) == 2
