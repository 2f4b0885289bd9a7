"""Drizzle compatibility, proved against the real thing: drizzle-kit, drizzle-orm and pg from the npm registry.

The packages are installed once into ``tests/.cache/drizzle`` (gitignored) and reused. Without Node, npm or the
registry these tests FAIL with the reason: a skipped proof would look like a passed one in CI.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from service import cli
from service.config import Settings
from service.history import drizzle, journal, migrations, runner
from service.store.db import with_database
from service.tenants import status
from tests.conftest import DEFAULT_MIGRATIONS, FIXTURES, ROOT, running

pytestmark = pytest.mark.timeout(900)

PACKAGES = {"drizzle-kit": "0.31.11", "drizzle-orm": "0.45.4", "pg": "8.23.1"}
CACHE = ROOT / "tests" / ".cache" / "drizzle"

# What a schema is made of, in a comparable form (names, types, defaults, indexes, constraints, enum labels).
FINGERPRINT = """
    SELECT 'column' AS kind, table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' '
           || coalesce(column_default, '') AS what
    FROM information_schema.columns WHERE table_schema = 'public'
    UNION ALL SELECT 'index', indexdef FROM pg_indexes WHERE schemaname = 'public'
    UNION ALL SELECT 'constraint', conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace
    UNION ALL SELECT 'enum', t.typname || ' ' || string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
    FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY t.typname
    ORDER BY 1, 2"""

# What FINGERPRINT leaves out and a real project relies on: extensions, index validity, sequences' owners.
EXTRAS = """
    SELECT 'extension' AS kind, extname AS what FROM pg_extension
    UNION ALL SELECT 'index', c.relname || ' valid=' || i.indisvalid || ' ready=' || i.indisready
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace = 'public'::regnamespace
    UNION ALL SELECT 'table', tablename FROM pg_tables WHERE schemaname = 'public'
    UNION ALL SELECT 'row', email::text || ' ' || coalesce(name, '') FROM accounts
    ORDER BY 1, 2"""

Scratch = Callable[[str], Awaitable[str]]


def _install() -> Path:
    """node_modules with the pinned packages; installed on first use, then reused."""
    stamp = CACHE / "installed.json"
    kit = CACHE / "node_modules" / ".bin" / "drizzle-kit"
    if stamp.is_file() and json.loads(stamp.read_text()) == PACKAGES and kit.exists():
        return CACHE
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.fail("Node.js and npm are needed to prove drizzle compatibility (install Node 20 and npm)")
    CACHE.mkdir(parents=True, exist_ok=True)
    manifest = {"name": "tenant-provisioner-drizzle-check", "private": True, "dependencies": PACKAGES}
    (CACHE / "package.json").write_text(json.dumps(manifest, indent=2))
    command = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"]
    try:
        done = subprocess.run(command, cwd=CACHE, capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"npm install {PACKAGES} took over 10 minutes: is the npm registry reachable?")
    if done.returncode != 0 or not kit.exists():
        pytest.fail(
            f"npm install {PACKAGES} failed (exit {done.returncode}); is the npm registry reachable?\n"
            f"{done.stderr[-2000:]}"
        )
    stamp.write_text(json.dumps(PACKAGES))
    return CACHE


@pytest.fixture(scope="session")
def drizzle_home() -> Path:
    return _install()


@pytest.fixture
def scratch(pg_url: str, tag: str, cleanup: None) -> Scratch:
    """Make an empty database whose name carries the test's tag (dropped by ``cleanup``); return its URL."""

    async def make(name: str) -> str:
        database = f"dz{tag}_{name}"
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()
        return with_database(pg_url, database)

    return make


async def _drizzle_migrate(home: Path, folder: Path, url: str, work: Path) -> None:
    config = work / "drizzle.config.json"
    config.write_text(json.dumps({"dialect": "postgresql", "out": str(folder), "dbCredentials": {"url": url}}))
    command = [str(home / "node_modules" / ".bin" / "drizzle-kit"), "migrate", "--config", str(config)]
    done = await asyncio.to_thread(
        subprocess.run, command, cwd=home, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"drizzle-kit migrate failed:\n{done.stdout}\n{done.stderr}"


async def _drizzle_migrate_in_steps(home: Path, folder: Path, url: str, work: Path) -> None:
    """drizzle-kit runs the whole folder in ONE transaction, so before PostgreSQL 18 it fails on a file that uses
    an enum value added by an earlier file (0006 → 0007 in the default history): the very case our chain commits
    after. Run it as an operator must there: up to each enum-adding file, then the rest (drizzle applies only
    entries newer than its last row)."""
    journal_path = folder / "meta" / "_journal.json"
    full = json.loads(journal_path.read_text())
    ms = migrations.load(folder, journal="ignore")
    cuts = [i + 1 for i, entry in enumerate(full["entries"]) if ms.migrations[i].commits_after]
    for cut in [*cuts, len(full["entries"])]:
        journal_path.write_text(json.dumps({**full, "entries": full["entries"][:cut]}))
        await _drizzle_migrate(home, folder, url, work)
    journal_path.write_text(json.dumps(full))


async def _rows(url: str) -> list[tuple[str, int]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT hash, created_at FROM drizzle.__drizzle_migrations ORDER BY id")
    finally:
        await conn.close()
    return [(r["hash"], r["created_at"]) for r in rows]


async def _history(url: str, ms: migrations.MigrationSet) -> drizzle.DrizzleHistory:
    conn = await asyncpg.connect(url)
    try:
        return await drizzle.read_drizzle_history(conn, ms)
    finally:
        await conn.close()


async def _fingerprint(url: str, query: str = FINGERPRINT) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(query)]
    finally:
        await conn.close()


async def _apply_ours(url: str, ms: migrations.MigrationSet) -> None:
    conn = await asyncpg.connect(url)
    try:
        await runner.apply(conn, migrations.plan(ms.migrations))
    finally:
        await conn.close()


def _out(folder: Path, tmp_path: Path) -> Path:
    """A copy of a migration folder for drizzle-kit's ``out`` (drizzle reads only the journal and .sql files)."""
    target = tmp_path / "out"
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("seeds"))
    return target


async def test_drizzle_kit_records_our_drizzle_hash_and_the_journal_when(
    drizzle_home: Path, scratch: Scratch, tmp_path: Path
) -> None:
    ms = migrations.load(DEFAULT_MIGRATIONS)
    found, _ = journal.read(DEFAULT_MIGRATIONS)
    assert found is not None
    url = await scratch("kit")
    await _drizzle_migrate_in_steps(drizzle_home, _out(DEFAULT_MIGRATIONS, tmp_path), url, tmp_path)

    assert await _rows(url) == [(m.drizzle_hash, found.when(m.file)) for m in ms.migrations]
    read = await _history(url, ms)
    assert read.unknown == ()
    assert [a.version for a in read.applied] == list(range(11))
    level = status.compute("t", "db", list(read.applied), ms)
    assert (level.status, level.current_version, level.pending) == ("up_to_date", 10, ())

    # Same files, split our way and run by our runner: the same schema as drizzle-kit made.
    ours = await scratch("ours")
    await _apply_ours(ours, ms)
    assert await _fingerprint(ours) == await _fingerprint(url)


async def test_a_deleted_row_reads_as_a_skipped_version(drizzle_home: Path, scratch: Scratch, tmp_path: Path) -> None:
    ms = migrations.load(DEFAULT_MIGRATIONS)
    url = await scratch("gap")
    await _drizzle_migrate_in_steps(drizzle_home, _out(DEFAULT_MIGRATIONS, tmp_path), url, tmp_path)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM drizzle.__drizzle_migrations WHERE hash = $1", ms.by_version[3].drizzle_hash)
    finally:
        await conn.close()

    read = await _history(url, ms)
    assert [a.version for a in read.applied] == [0, 1, 2, 4, 5, 6, 7, 8, 9, 10]
    level = status.compute("t", "db", list(read.applied), ms)
    assert level.status == "out_of_order"
    assert level.current_version == 10
    assert [m.version for m in level.out_of_order] == [3]


async def test_drizzle_kit_skips_a_file_journaled_too_early(
    drizzle_home: Path, scratch: Scratch, tmp_path: Path
) -> None:
    """0002 was generated before 0001 but merged after it: drizzle-kit never runs it on a database at 0001."""
    out = _out(FIXTURES / "drizzle_skipped", tmp_path)
    full = json.loads((out / "meta" / "_journal.json").read_text())
    url = await scratch("skip")
    first = {**full, "entries": full["entries"][:2]}
    (out / "meta" / "_journal.json").write_text(json.dumps(first))
    await _drizzle_migrate(drizzle_home, out, url, tmp_path)
    (out / "meta" / "_journal.json").write_text(json.dumps(full))
    await _drizzle_migrate(drizzle_home, out, url, tmp_path)

    ms = migrations.load(out, journal="ignore")
    assert [h for h, _ in await _rows(url)] == [ms.by_version[v].drizzle_hash for v in (0, 1, 3)]
    read = await _history(url, ms)
    assert [a.version for a in read.applied] == [0, 1, 3]
    level = status.compute("t", "db", list(read.applied), ms)
    assert (level.status, [m.version for m in level.out_of_order]) == ("out_of_order", [2])
    tables = await _fingerprint(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    assert tables == [("accounts",), ("tags",)]  # notes (0002) was never created
    # ...and the journal check names the cause before any of this can happen
    assert journal.problems(out, [p.name for p in out.glob("*.sql")]) == [
        "0002_notes.sql: journal when 1700000200000 (2023-11-14T22:16:40Z) is not after 0001_account_name.sql's "
        "1700000300000 (2023-11-14T22:18:20Z); drizzle-kit migrate would skip it"
    ]


async def test_rows_whose_hash_matches_no_file_are_unknown(
    drizzle_home: Path, scratch: Scratch, tmp_path: Path
) -> None:
    out = _out(FIXTURES / "edited_applied" / "original", tmp_path)
    url = await scratch("edit")
    await _drizzle_migrate(drizzle_home, out, url, tmp_path)
    edited = migrations.load(FIXTURES / "edited_applied" / "edited")
    read = await _history(url, edited)
    assert [a.version for a in read.applied] == [0]
    assert [(r.id, r.created_at) for r in read.unknown] == [(2, 1700000100000)]


async def test_no_drizzle_table_reads_as_nothing(scratch: Scratch) -> None:
    url = await scratch("none")
    assert await _history(url, migrations.load(DEFAULT_MIGRATIONS)) == drizzle.DrizzleHistory((), ())


_READ_FILES = """
import { readMigrationFiles } from "drizzle-orm/migrator";
console.log(JSON.stringify(readMigrationFiles({ migrationsFolder: process.argv[1] })));
"""


@pytest.mark.parametrize(
    "folder",
    [
        DEFAULT_MIGRATIONS,
        FIXTURES / "drizzle_split",
        FIXTURES / "line_endings" / "lf",
        FIXTURES / "line_endings" / "crlf",
    ],
    ids=["default", "drizzle_split", "lf", "crlf"],
)
def test_split_and_hash_equal_drizzle_orms_own(drizzle_home: Path, folder: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "Node.js is needed to run drizzle-orm"
    done = subprocess.run(
        [node, "--input-type=module", "-e", _READ_FILES, str(folder)],
        cwd=drizzle_home,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    theirs = json.loads(done.stdout)
    ms = migrations.load(folder)
    found, _ = journal.read(folder)
    assert found is not None
    assert len(theirs) == len(ms.migrations)
    for migration, meta in zip(ms.migrations, theirs, strict=True):
        assert meta["hash"] == migration.drizzle_hash, migration.file
        assert meta["folderMillis"] == found.when(migration.file)
        # drizzle sends each chunk as it is; we send it trimmed, without empty ones, and with LF line endings.
        chunks = [c.replace("\r\n", "\n").strip() for c in meta["sql"]]
        assert [c for c in chunks if c] == [s.sql for s in migration.statements], migration.file


async def test_the_split_corner_cases_give_the_same_database(
    drizzle_home: Path, scratch: Scratch, tmp_path: Path
) -> None:
    folder = FIXTURES / "drizzle_split"
    theirs, ours = await scratch("theirs"), await scratch("ours")
    await _drizzle_migrate(drizzle_home, _out(folder, tmp_path), theirs, tmp_path)
    await _apply_ours(ours, migrations.load(folder))
    contents = 'SELECT "id", "note", "a", "b" FROM "t" ORDER BY "id"'
    assert await _fingerprint(ours) == await _fingerprint(theirs)
    assert await _fingerprint(ours, contents) == await _fingerprint(theirs, contents) == [(1, "a;b", 1, 2)]


async def test_a_real_drizzle_folder_of_the_old_dialect_runs_as_drizzle_kit_runs_it(
    drizzle_home: Path, scratch: Scratch, tmp_path: Path, make_settings: Callable[..., Settings], pg_url: str
) -> None:
    """Journal "pg" v5 with a number missing from the names, an abandoned draft beside its replacement and a backfill
    script (neither journaled), extensions (citext, pg_trgm, vector), and a file that COMMITs half-way to build
    indexes CONCURRENTLY: drizzle-kit and the service build the same database and the same drizzle history."""
    folder = FIXTURES / "drizzle_real"
    has_vector = await _available(pg_url, "vector")
    if not has_vector:  # a server without pgvector (Debian's PostgreSQL 15): the same folder with a plain column
        folder = tmp_path / "drizzle_real"
        shutil.copytree(FIXTURES / "drizzle_real", folder)
        first = folder / "0000_lowly_wolverine.sql"
        text = first.read_text().replace('CREATE EXTENSION IF NOT EXISTS "vector";--> statement-breakpoint\n', "")
        first.write_text(text.replace("vector(3)", "real[]"))
    theirs = await scratch("real")
    await _drizzle_migrate(drizzle_home, _out(folder, tmp_path), theirs, tmp_path)

    settings = make_settings(folder)
    async with running(settings) as client:
        listed = (await client.get("/migrations")).json()
        assert [(m["version"], m["name"], m["transactional"]) for m in listed["items"]] == [
            (0, "lowly_wolverine", True),
            (1, "smart_gambit", True),
            (2, "clever_stature", False),
            (3, "fluffy_sentinel", True),
        ]
        assert [w.split(" ", 1)[0] for w in listed["warnings"]] == ["0003_abandoned_draft.sql", "backfill_titles.sql"]
        made = []
        for tenant, strategy in (("replayed", "replay"), ("cloned", "clone")):
            r = await client.post("/tenants", json={"id": tenant, "strategy": strategy})
            assert r.status_code == 201, r.text
            made.append(with_database(pg_url, r.json()["database"]))
            schema = (await client.get(f"/tenants/{tenant}/schema")).json()
            assert (schema["status"], schema["current_version"], schema["error"]) == ("up_to_date", 3, None)

    expected_rows = await _rows(theirs)
    ms = migrations.load(folder)
    assert expected_rows == [(m.drizzle_hash, m.drizzle_when) for m in ms.migrations]
    for url in made:
        assert await _fingerprint(url) == await _fingerprint(theirs), url
        assert await _fingerprint(url, EXTRAS) == await _fingerprint(theirs, EXTRAS), url
        ids = "SELECT id, hash, created_at FROM drizzle.__drizzle_migrations ORDER BY id"
        assert await _fingerprint(url, ids) == await _fingerprint(theirs, ids), url
    extras = await _fingerprint(theirs, EXTRAS)
    assert ("table", "draft_never_run") not in extras  # the orphan ran nowhere
    assert ("index", "documents_slug_idx valid=true ready=true") in extras
    wanted = ("citext", "pg_trgm", "vector") if has_vector else ("citext", "pg_trgm")
    assert {("extension", e) for e in wanted} <= set(extras)


async def _available(pg_url: str, extension: str) -> bool:
    conn = await asyncpg.connect(pg_url)
    try:
        return bool(await conn.fetchval("SELECT true FROM pg_available_extensions WHERE name = $1", extension))
    finally:
        await conn.close()


def _tenantctl(*args: str) -> int:
    with pytest.raises(SystemExit) as caught:
        cli.main(list(args))
    return int(caught.value.code or 0)


async def test_drizzle_kit_applies_what_tenantctl_new_and_fix_journal_wrote(
    drizzle_home: Path, scratch: Scratch, tmp_path: Path
) -> None:
    """A database drizzle-kit migrated to 0010; then a file from `tenantctl new` and one written by hand and
    journaled by `check --fix-journal`: drizzle-kit runs both (their `when` is later than 0010's) and records them
    as we read them."""
    out = _out(DEFAULT_MIGRATIONS, tmp_path)
    url = await scratch("new")
    await _drizzle_migrate_in_steps(drizzle_home, out, url, tmp_path)
    sql = (
        'ALTER TABLE "clients" ADD COLUMN "vat_id" text;\n--> statement-breakpoint\n'
        'CREATE INDEX "clients_vat_idx" ON "clients" ("vat_id");'
    )
    assert _tenantctl("new", "add_client_vat", "--sql", sql, "--dir", str(out)) == 0
    (out / "0012_by_hand.sql").write_text('ALTER TABLE "clients" ADD COLUMN "by_hand" text;\n')
    assert _tenantctl("check", str(out)) == 1
    assert _tenantctl("check", str(out), "--fix-journal", "--write-sum") == 0

    await _drizzle_migrate(drizzle_home, out, url, tmp_path)
    ms = migrations.load(out)
    found, _ = journal.read(out)
    assert found is not None
    assert await _rows(url) == [(m.drizzle_hash, found.when(m.file)) for m in ms.migrations]
    level = status.compute("t", "db", list((await _history(url, ms)).applied), ms)
    assert (level.status, level.current_version) == ("up_to_date", 12)
    columns = await _fingerprint(url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'clients'")
    assert {("vat_id",), ("by_hand",)} <= set(columns)
