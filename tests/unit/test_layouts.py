"""Tool layouts without a database: detection, each tool's order and syntax, and what is refused and why."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import pytest

from service.errors import MigrationSetInvalid
from service.history import layouts
from service.history.layouts import flyway, goose
from tests.conftest import ROOT

LAYOUTS = ROOT / "tests" / "fixtures" / "layouts"


def _folder(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize("tool", ["golang-migrate", "flyway", "dbmate", "goose", "prisma"])
def test_each_fixture_is_recognised_and_the_setting_can_turn_the_table_off(tool: str) -> None:
    assert layouts.detect(LAYOUTS / tool) == tool
    kept = layouts.load(LAYOUTS / tool)
    off = layouts.load(LAYOUTS / tool, layout=tool, tool_table=False)  # type: ignore[arg-type]
    assert kept.layout == off.layout == tool
    assert [m.version for m in kept.migrations] == list(range(len(kept.migrations)))
    assert all(m.origin is not None and m.origin.keep_table for m in kept.migrations)
    assert all(m.origin is not None and not m.origin.keep_table for m in off.migrations)
    assert layouts.detect(ROOT / "migrations") == "drizzle"  # the default history has a Drizzle journal


def test_flyway_versions_compare_as_flyway_compares_them() -> None:
    ordered = sorted(["1.10", "1.9", "2", "1_2", "1", "1.0.1"], key=flyway.version_key)
    assert ordered == ["1", "1.0.1", "1_2", "1.9", "1.10", "2"]
    assert flyway.version_key("1.0") == flyway.version_key("1")
    ms = layouts.load(LAYOUTS / "flyway")
    assert [(m.origin.version, m.file) for m in ms.migrations if m.origin] == [
        ("1", "V1__create_users.sql"),
        ("1.2", "V1_2__create_orders.sql"),
        ("1.9", "V1.9__order_lines.sql"),
        ("1.10", "sub/V1.10__order_line_amount.sql"),
        ("2", "V2__amount_index.sql"),
    ]
    assert [m.transactional for m in ms.migrations] == [True, True, True, True, False]


def test_flyway_checksum_ignores_line_endings_and_a_bom_but_not_content() -> None:
    assert flyway.checksum(b"a\r\nb\n") == flyway.checksum(b"\xef\xbb\xbfa\nb") == zlib.crc32(b"ab") - (1 << 32)
    assert flyway.checksum(b"a\nb\n") != flyway.checksum(b"a\nc\n")


def test_flyway_script_configuration_can_take_a_file_out_of_its_transaction(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            "V1__a.sql": "CREATE TABLE a (id int);",
            "V2__b.sql": "VACUUM a;",
            "V2__b.sql.conf": "# Flyway script configuration\nexecuteInTransaction=false\n",
        },
    )
    assert [m.transactional for m in layouts.load(folder).migrations] == [True, False]
    (folder / "V2__b.sql.conf").write_text("executeInTransaction=true\n")
    with pytest.raises(MigrationSetInvalid, match=re.escape("V2__b.sql: statement 1 (line 1) cannot run inside")):
        layouts.load(folder)


def test_flyway_refuses_repeatables_placeholders_and_duplicates(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            "V1__a.sql": "CREATE TABLE a (id int);",
            "V1.0__b.sql": "CREATE TABLE b (id int);",
            "R__view.sql": "CREATE OR REPLACE VIEW v AS SELECT 1;",
            "V2__c.sql": "CREATE TABLE ${table} (id int);",
            "U2__c.sql": "DROP TABLE c;",
        },
    )
    with pytest.raises(MigrationSetInvalid) as caught:
        layouts.load(folder)
    text = "\n".join(caught.value.problems)
    assert "R__view.sql: Flyway repeatable migrations (R__) are not supported" in text
    assert "V2__c.sql: line 1 has a Flyway placeholder" in text
    assert "version 1 is used by more than one file: V1.0__b.sql, V1__a.sql" in text
    assert "U2" not in text


def test_goose_parser_follows_goose(tmp_path: Path) -> None:
    stmts, use_tx = goose.parse((LAYOUTS / "goose" / "00002_normalise_email.sql").read_text())
    assert use_tx
    assert [s.line for s in stmts] == [3, 10]
    assert stmts[0].sql.startswith("CREATE FUNCTION")
    assert stmts[0].sql.endswith("$$;")
    assert goose.parse("-- +goose NO TRANSACTION\n-- +goose Up\nSELECT 1;\n")[1] is False
    for text, problem in [
        ("SELECT 1;\n", "must start with '-- +goose Up'"),
        ("-- +goose Up\n-- +goose StatementBegin\nSELECT 1;\n", "missing '-- +goose StatementEnd'"),
        ("-- +goose Up\nSELECT 1\n", "does not end with a semicolon"),
        ("-- +goose Up\n-- +goose ENVSUB ON\nSELECT '${X}';\n", "ENVSUB ON' is not supported"),
    ]:
        with pytest.raises(goose.GooseSyntax, match=re.escape(problem)):
            goose.parse(text)
    # NO TRANSACTION with the file's own BEGIN/COMMIT: a transactional part, then CONCURRENTLY outside.
    backfill = layouts.load(LAYOUTS / "goose").migrations[2]
    assert [(p.transactional, len(p.statements)) for p in backfill.parts] == [(True, 2), (False, 1)]
    folder = _folder(tmp_path, {"00001_a.sql": "-- +goose Up\nCREATE INDEX CONCURRENTLY i ON t (c);\n"})
    with pytest.raises(MigrationSetInvalid, match="add '-- \\+goose NO TRANSACTION'"):
        layouts.load(folder)


def test_dbmate_sections_as_dbmate_reads_them(tmp_path: Path) -> None:
    ms = layouts.load(LAYOUTS / "dbmate")
    assert [m.transactional for m in ms.migrations] == [True, True, False, True]
    assert all("migrate:down" not in s.sql and "DROP" not in s.sql for m in ms.migrations for s in m.statements)
    folder = _folder(
        tmp_path,
        {
            "001_no_down.sql": "-- migrate:up\nSELECT 1;\n",
            "002_before.sql": "SELECT 0;\n-- migrate:up\nSELECT 1;\n-- migrate:down\n",
            "003_order.sql": "-- migrate:down\n-- migrate:up\nSELECT 1;\n",
        },
    )
    with pytest.raises(MigrationSetInvalid) as caught:
        layouts.load(folder, layout="dbmate")
    assert caught.value.problems == [
        "(dbmate layout) 001_no_down.sql: dbmate requires each migration to define a down block with '-- migrate:down'",
        "(dbmate layout) 002_before.sql: dbmate does not support statements preceding the '-- migrate:up' block",
        "(dbmate layout) 003_order.sql: dbmate requires '-- migrate:up' to appear before '-- migrate:down'",
    ]


def test_golang_migrate_and_prisma_names(tmp_path: Path) -> None:
    ms = layouts.load(LAYOUTS / "golang-migrate")
    assert [(m.origin.version, m.name) for m in ms.migrations if m.origin] == [
        ("1", "create_users"),
        ("2", "track_applied_at"),
        ("3", "users_email_index"),
        ("10", "comment_history"),
    ]
    prisma = layouts.load(LAYOUTS / "prisma")
    assert next(m.file for m in prisma.migrations) == "20240101120000_init/migration.sql"
    folder = _folder(tmp_path, {"migration_lock.toml": 'provider = "mysql"\n', "1_a/migration.sql": "SELECT 1;"})
    with pytest.raises(MigrationSetInvalid, match="provider is 'mysql'"):
        layouts.load(folder)
