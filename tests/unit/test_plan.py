"""Grouping pending files into transactions (plan) and what a statement needs (classify): pure logic."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.history import statements
from service.history.migrations import Batch, Migration, Statement, load, plan

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "migrations"


def mig(version: int, *, tx: bool = True, enum: bool = False) -> Migration:
    return Migration(
        file=f"{version:04d}_m.sql",
        sha256="0" * 64,
        drizzle_hash="0" * 64,
        statements=(Statement(1, 1, "SELECT 1"),),
        version=version,
        name="m",
        transactional=tx,
        commits_after=enum,
    )


def shape(batches: list[Batch]) -> list[tuple[str, list[int], bool]]:
    return [("tx" if b.transactional else "alone", [m.version for m in b.migrations], b.seed) for b in batches]


# -- plan ------------------------------------------------------------------------------------------------------


def test_plain_files_share_one_transaction() -> None:
    assert shape(plan([mig(0), mig(1), mig(2)])) == [("tx", [0, 1, 2], False)]


def test_nothing_pending_is_no_batch() -> None:
    assert plan([]) == []


def test_seed_alone_when_nothing_pending() -> None:
    assert shape(plan([], seed=True)) == [("tx", [], True)]


def test_seed_joins_the_last_transaction() -> None:
    assert shape(plan([mig(0), mig(1)], seed=True)) == [("tx", [0, 1], True)]


def test_no_transaction_file_runs_alone_between_transactions() -> None:
    batches = plan([mig(0), mig(1, tx=False), mig(2), mig(3)])
    assert shape(batches) == [("tx", [0], False), ("alone", [1], False), ("tx", [2, 3], False)]


def test_consecutive_no_transaction_files_each_run_alone() -> None:
    batches = plan([mig(0, tx=False), mig(1, tx=False)])
    assert shape(batches) == [("alone", [0], False), ("alone", [1], False)]


def test_seed_after_a_trailing_no_transaction_file_gets_its_own_transaction() -> None:
    batches = plan([mig(0), mig(1, tx=False)], seed=True)
    assert shape(batches) == [("tx", [0], False), ("alone", [1], False), ("tx", [], True)]


def test_enum_add_value_file_closes_its_transaction() -> None:
    batches = plan([mig(0), mig(1, enum=True), mig(2), mig(3)])
    assert shape(batches) == [("tx", [0, 1], False), ("tx", [2, 3], False)]


def test_seed_does_not_join_a_transaction_that_just_closed() -> None:
    # The seed may use the new enum value, which only exists once the adding transaction committed.
    batches = plan([mig(0), mig(1, enum=True)], seed=True)
    assert shape(batches) == [("tx", [0, 1], False), ("tx", [], True)]


def test_mixed_chain() -> None:
    pending = [mig(0), mig(1), mig(2, enum=True), mig(3, tx=False), mig(4), mig(5, enum=True), mig(6)]
    assert shape(plan(pending, seed=True)) == [
        ("tx", [0, 1, 2], False),
        ("alone", [3], False),
        ("tx", [4, 5], False),
        ("tx", [6], True),
    ]


def test_every_file_planned_once_in_order() -> None:
    pending = [mig(v, tx=v % 3 != 1, enum=v % 4 == 2) for v in range(12)]
    flat = [m.version for b in plan(pending, seed=True) for m in b.migrations]
    assert flat == list(range(12))


def test_plan_of_fixture_sets() -> None:
    enum_add = load(FIXTURES / "enum_add").migrations
    assert shape(plan(enum_add, seed=True)) == [("tx", [0, 1, 2], False), ("tx", [3], True)]
    assert shape(plan(enum_add[2:])) == [("tx", [2], False), ("tx", [3], False)]
    no_tx = load(FIXTURES / "no_tx").migrations
    assert shape(plan(no_tx, seed=True)) == [("tx", [0], False), ("alone", [1], False), ("tx", [2], True)]


def test_plan_of_default_history() -> None:
    ms = load(Path(__file__).resolve().parents[2] / "migrations").migrations
    assert shape(plan(ms, seed=True)) == [("tx", list(range(7)), False), ("tx", [7, 8, 9, 10], True)]


# -- classify ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        'CREATE INDEX CONCURRENTLY "i" ON "a" ("id")',
        "create unique index concurrently if not exists i on a (id)",
        "DROP INDEX CONCURRENTLY i",
        "REINDEX INDEX CONCURRENTLY i",
        "REINDEX (CONCURRENTLY) TABLE a",
        "VACUUM a",
        "VACUUM (ANALYZE) a",
        "ALTER SYSTEM SET work_mem = '64MB'",
        "CREATE DATABASE x",
        "DROP DATABASE x",
        "CREATE TABLESPACE t LOCATION '/tmp/t'",
        "SELECT 1; CREATE INDEX CONCURRENTLY i ON a (id)",
    ],
)
def test_statements_that_refuse_a_transaction(sql: str) -> None:
    kind = statements.classify(sql)
    assert kind.parsed
    assert kind.needs_no_transaction
    assert not kind.adds_enum_value


@pytest.mark.parametrize(
    "sql",
    [
        'CREATE INDEX "i" ON "a" ("id")',
        "DROP INDEX i",
        "REINDEX INDEX i",
        "ANALYZE a",
        'CREATE TABLE "concurrently" (id int)',
        "SELECT 'CREATE INDEX CONCURRENTLY i ON a (id)'",
        "-- CREATE INDEX CONCURRENTLY i ON a (id)\nSELECT 1",
        "ALTER TYPE plan RENAME VALUE 'a' TO 'b'",
        "CREATE TYPE plan AS ENUM ('a', 'b')",
    ],
)
def test_ordinary_statements(sql: str) -> None:
    kind = statements.classify(sql)
    assert kind.parsed
    assert not kind.needs_no_transaction
    assert not kind.adds_enum_value


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER TYPE \"plan\" ADD VALUE 'team'",
        "ALTER TYPE public.plan ADD VALUE IF NOT EXISTS 'team' BEFORE 'pro'",
        "ALTER TYPE plan ADD VALUE 'x' AFTER 'free'",
        "CREATE TABLE t (id int);\nALTER TYPE plan ADD VALUE 'team';",
    ],
)
def test_enum_add_value(sql: str) -> None:
    kind = statements.classify(sql)
    assert kind.adds_enum_value
    assert not kind.needs_no_transaction


@pytest.mark.parametrize(
    ("sql", "control"),
    [
        ("COMMIT", "commit"),
        ("END", "commit"),
        ("ROLLBACK", "rollback"),
        ("ABORT", "rollback"),
        ("BEGIN", "begin"),
        ("START TRANSACTION", "begin"),
        ("SELECT 1; COMMIT", "commit"),
    ],
)
def test_transaction_control_is_the_files_own(sql: str, control: str) -> None:
    kind = statements.classify(sql)
    assert (kind.control, kind.needs_no_transaction) == (control, False)


def test_prepare_transaction_cannot_run_in_the_chain() -> None:
    assert statements.classify("PREPARE TRANSACTION 'x'").needs_no_transaction


@pytest.mark.parametrize("sql", ["SAVEPOINT s", "RELEASE SAVEPOINT s", "ROLLBACK TO SAVEPOINT s"])
def test_savepoints_are_fine_inside_the_chain(sql: str) -> None:
    assert not statements.classify(sql).needs_no_transaction


def test_unparsable_sql_is_left_to_the_server() -> None:
    kind = statements.classify("CREATE TABLE (")
    assert not kind.parsed
    assert not kind.needs_no_transaction
    assert not kind.adds_enum_value


def test_split_keeps_offsets() -> None:
    sql = "SELECT 1;\n  SELECT 2;\n-- c\nSELECT 3"
    pieces = statements.split(sql)
    assert [p for _, p in pieces] == ["SELECT 1", "SELECT 2", "SELECT 3"]
    for at, piece in pieces:
        assert sql[at : at + len(piece)] == piece


def test_split_of_unparsable_sql_is_one_piece() -> None:
    assert statements.split("CREATE TABLE (") == [(0, "CREATE TABLE (")]


@pytest.mark.parametrize(("sql", "blank"), [("-- x\n/* y */\n", True), ("", True), ("SELECT 1", False), ("(", False)])
def test_is_blank(sql: str, blank: bool) -> None:
    assert statements.is_blank(sql) is blank
