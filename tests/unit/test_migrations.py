"""Loading the migration folder: names, versions, contents, hashes and statement splitting (no database)."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from service.errors import MigrationSetInvalid
from service.history.migrations import (
    BREAKPOINT,
    NO_TRANSACTION_MARKER,
    load,
    normalise,
    sha256_text,
    split_statements,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "migrations"
DEFAULT = Path(__file__).resolve().parents[2] / "migrations"


def problems_of(directory: Path) -> list[str]:
    with pytest.raises(MigrationSetInvalid) as info:
        load(directory)
    assert info.value.code == "migration_set_invalid"
    # The message lists every problem too, so an operator sees them all in the log line.
    for problem in info.value.problems:
        assert problem in info.value.message
    return info.value.problems


def write(directory: Path, files: dict[str, str | bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode()
        (directory / name).write_bytes(data)
    return directory


# -- valid sets ------------------------------------------------------------------------------------------------


def test_default_history_loads_in_version_order() -> None:
    ms = load(DEFAULT)
    assert [m.version for m in ms.migrations] == list(range(11))
    assert ms.latest_version == 10
    assert ms.migrations[0].file == "0000_initial_schema.sql"
    assert ms.migrations[0].name == "initial_schema"
    assert [s.file for s in ms.seeds] == [
        "0001_roles.sql",
        "0002_settings.sql",
        "0003_service_templates.sql",
        "0004_admin_user.sql",
    ]
    # 0006 adds an enum value: the chain must commit after it.
    assert [m.version for m in ms.migrations if m.commits_after] == [6]
    assert all(m.transactional for m in ms.migrations)
    for m in ms.migrations:
        raw = (DEFAULT / m.file).read_bytes()
        assert m.sha256 == hashlib.sha256(normalise(raw).encode()).hexdigest()
        assert m.drizzle_hash == hashlib.sha256(raw).hexdigest()
        assert len(m.sha256) == 64


def test_after_returns_versions_above() -> None:
    ms = load(FIXTURES / "enum_add")
    assert [m.version for m in ms.after(None)] == [0, 1, 2, 3]
    assert [m.version for m in ms.after(1)] == [2, 3]
    assert ms.after(3) == []
    assert ms.by_version[2].file == "0002_plan_team.sql"


def test_seeds_dir_can_be_given_separately(tmp_path: Path) -> None:
    seeds = write(tmp_path / "elsewhere", {"0001_x.sql": "SELECT 1;\n", "0002_y.sql": "SELECT 2;\n"})
    ms = load(FIXTURES / "enum_add", seeds)
    assert [s.file for s in ms.seeds] == ["0001_x.sql", "0002_y.sql"]
    assert load(FIXTURES / "enum_add").seeds == ()


def test_non_sql_files_and_folders_are_ignored(tmp_path: Path) -> None:
    d = write(tmp_path / "m", {"0000_a.sql": "SELECT 1;\n", "README.md": "notes", "0001_b.sql.bak": "x"})
    (d / "sub").mkdir()
    (d / "sub" / "0001_nested.sql").write_text("SELECT 1;\n")
    assert [m.file for m in load(d).migrations] == ["0000_a.sql"]


# -- invalid sets: each problem, and all of them at once -------------------------------------------------------


def test_gap_is_refused() -> None:
    problems = problems_of(FIXTURES / "gap")
    assert problems == ["missing version(s) 0002, 0003: versions must be contiguous from 0000"]


def test_history_must_start_at_zero(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path / "m", {"0001_a.sql": "SELECT 1;\n"}))
    assert len(problems) == 1
    assert "0000" in problems[0]


def test_duplicate_version_is_refused() -> None:
    problems = problems_of(FIXTURES / "duplicate")
    assert problems == ["version 1 is used by more than one file: 0001_b.sql, 0001_c.sql"]


def test_bad_names_are_refused() -> None:
    problems = problems_of(FIXTURES / "bad_name")
    assert sorted(problems) == [
        "0001_add column.sql: bad file name (expected NNNN_name.sql)",
        "1_b.sql: bad file name (expected NNNN_name.sql)",
    ]


def test_empty_file_is_refused() -> None:
    assert problems_of(FIXTURES / "empty") == ["0001_nothing.sql: empty file"]


def test_whitespace_and_bom_only_file_is_empty(tmp_path: Path) -> None:
    d = write(tmp_path / "m", {"0000_a.sql": b"\xef\xbb\xbf \r\n\t\r\n"})
    assert problems_of(d) == ["0000_a.sql: empty file"]


def test_comments_only_file_is_refused() -> None:
    assert problems_of(FIXTURES / "comments_only") == ["0001_b.sql: no SQL statements (comments only)"]


def test_no_transaction_file_with_only_the_marker_is_refused(tmp_path: Path) -> None:
    d = write(tmp_path / "m", {"0000_a.sql": f"{NO_TRANSACTION_MARKER}\n-- nothing else\n"})
    assert problems_of(d) == ["0000_a.sql: no SQL statements (comments only)"]


def test_invalid_utf8_is_refused(tmp_path: Path) -> None:
    d = write(tmp_path / "m", {"0000_a.sql": b"SELECT '\xff';\n"})
    (problem,) = problems_of(d)
    assert problem.startswith("0000_a.sql: not valid UTF-8")


def test_missing_folder_and_empty_folder(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path / "nope")
    assert "migrations folder not found" in problem
    (tmp_path / "none").mkdir()
    (problem,) = problems_of(tmp_path / "none")
    assert "no migration files" in problem


def test_every_problem_is_listed_in_one_error() -> None:
    problems = problems_of(FIXTURES / "broken")
    expected = {
        "bad name": r"^7_bad_name\.sql: bad file name",
        "duplicate": r"^version 1 is used by more than one file: 0001_b\.sql, 0001_b_again\.sql$",
        "gap": r"^missing version\(s\) 0005:",
        "empty": r"^0002_blank\.sql: empty file$",
        "comments only": r"^0003_comments\.sql: no SQL statements \(comments only\)$",
        "concurrently": r"^0004_index\.sql: statement 1 \(line 1\) cannot run inside a transaction",
    }
    for what, pattern in expected.items():
        assert sum(1 for p in problems if re.search(pattern, p)) == 1, (what, problems)
    assert len(problems) == len(expected)


def test_seed_problems_are_listed_with_migration_problems(tmp_path: Path) -> None:
    d = write(tmp_path / "m", {"0000_a.sql": "SELECT 1;\n", "0002_c.sql": "SELECT 1;\n"})
    write(d / "seeds", {"0001_empty.sql": ""})
    problems = problems_of(d)
    assert any(p.startswith("missing version(s) 0001") for p in problems)
    assert "0001_empty.sql: empty file" in problems


# -- hashing ---------------------------------------------------------------------------------------------------


def test_crlf_and_bom_do_not_change_sha256_but_change_drizzle_hash(tmp_path: Path) -> None:
    lf = load(FIXTURES / "ok")
    crlf = tmp_path / "crlf"
    shutil.copytree(FIXTURES / "ok", crlf)
    for path in [*crlf.glob("*.sql"), *crlf.glob("seeds/*.sql")]:
        raw = path.read_bytes()
        assert b"\r" not in raw
        path.write_bytes(b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n"))
    crlf_set = load(crlf)
    assert len(crlf_set.migrations) == len(lf.migrations) == 2
    for a, b in zip(lf.migrations, crlf_set.migrations, strict=True):
        assert a.sha256 == b.sha256
        assert a.drizzle_hash != b.drizzle_hash
        assert b.drizzle_hash == hashlib.sha256((crlf / b.file).read_bytes()).hexdigest()
        assert a.statements == b.statements  # same SQL, same line numbers
    assert [s.sha256 for s in lf.seeds] == [s.sha256 for s in crlf_set.seeds]


def test_whole_default_history_hashes_survive_a_crlf_checkout(tmp_path: Path) -> None:
    crlf = tmp_path / "migrations"
    shutil.copytree(DEFAULT, crlf)
    for path in crlf.rglob("*.sql"):
        path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    assert [m.sha256 for m in load(crlf).migrations] == [m.sha256 for m in load(DEFAULT).migrations]


def test_normalise_and_sha256_text() -> None:
    assert normalise(b"\xef\xbb\xbfa\r\nb\r\n") == "a\nb\n"
    assert normalise("é\n".encode()) == "é\n"
    # A lone CR is content, not a line ending we rewrite.
    assert normalise(b"a\rb") == "a\rb"
    assert sha256_text("a\n") == hashlib.sha256(b"a\n").hexdigest()
    assert sha256_text("a\n") != sha256_text("a\r\n")


def test_content_change_changes_sha256(tmp_path: Path) -> None:
    d = write(tmp_path / "m", {"0000_a.sql": "CREATE TABLE a (id int);\n"})
    before = load(d).migrations[0].sha256
    write(d, {"0000_a.sql": "CREATE TABLE a (id bigint);\n"})
    assert load(d).migrations[0].sha256 != before


# -- statement splitting -----------------------------------------------------------------------------------------


def test_split_on_breakpoints_with_line_numbers() -> None:
    text = (
        "CREATE TABLE a (id int);\n"  # 1
        f"{BREAKPOINT}\n"  # 2
        "\n"  # 3
        "CREATE TABLE b (\n"  # 4
        "  id int\n"  # 5
        ");\n"  # 6
        f"{BREAKPOINT}\n"  # 7
        "ALTER TABLE b ADD x int;\n"  # 8
    )
    stmts = split_statements(text)
    assert [(s.number, s.line) for s in stmts] == [(1, 1), (2, 4), (3, 8)]
    assert stmts[1].sql == "CREATE TABLE b (\n  id int\n);"
    assert all(BREAKPOINT not in s.sql for s in stmts)


def test_split_drizzle_same_line_breakpoint() -> None:
    # drizzle-kit writes the breakpoint right after the semicolon, on the statement's own line.
    text = (
        'CREATE TABLE "a" ("id" integer);--> statement-breakpoint\n'  # 1
        'CREATE TABLE "b" ("id" integer);--> statement-breakpoint\n'  # 2
        'ALTER TABLE "a"\n'  # 3
        '  ADD COLUMN "x" text;'  # 4
    )
    stmts = split_statements(text)
    assert [s.sql for s in stmts] == [
        'CREATE TABLE "a" ("id" integer);',
        'CREATE TABLE "b" ("id" integer);',
        'ALTER TABLE "a"\n  ADD COLUMN "x" text;',
    ]
    assert [s.line for s in stmts] == [1, 2, 3]
    assert [s.number for s in stmts] == [1, 2, 3]


def test_empty_chunks_are_skipped() -> None:
    stmts = split_statements(f"{BREAKPOINT}\nSELECT 1;\n{BREAKPOINT}\n\n{BREAKPOINT}\nSELECT 2;\n")
    assert [(s.number, s.line, s.sql) for s in stmts] == [(1, 2, "SELECT 1;"), (2, 6, "SELECT 2;")]


def test_chunk_without_breakpoint_keeps_several_statements_together() -> None:
    (stmt,) = split_statements("SELECT 1;\nSELECT 2;\n")
    assert stmt.sql == "SELECT 1;\nSELECT 2;"


def test_single_mode_splits_each_chunk_into_lone_statements() -> None:
    text = (
        f"{NO_TRANSACTION_MARKER}\n"  # 1
        "CREATE INDEX CONCURRENTLY i ON a (id);\n"  # 2
        "CREATE INDEX CONCURRENTLY j\n"  # 3
        "  ON a (id);\n"  # 4
        f"{BREAKPOINT}\n"  # 5
        "VACUUM a;\n"  # 6
    )
    stmts = split_statements(text, single=True)
    assert [(s.number, s.line) for s in stmts] == [(1, 2), (2, 3), (3, 6)]
    assert stmts[0].sql == "CREATE INDEX CONCURRENTLY i ON a (id)"
    assert stmts[1].sql == "CREATE INDEX CONCURRENTLY j\n  ON a (id)"
    assert stmts[2].sql == "VACUUM a"


def test_loaded_crlf_file_has_lf_statements_and_right_lines(tmp_path: Path) -> None:
    d = write(tmp_path / "m", {"0000_a.sql": b"SELECT 1;\r\n--> statement-breakpoint\r\n\r\nSELECT\r\n  2;\r\n"})
    stmts = load(d).migrations[0].statements
    assert [(s.line, s.sql) for s in stmts] == [(1, "SELECT 1;"), (4, "SELECT\n  2;")]


# -- where a file runs ---------------------------------------------------------------------------------------------


def test_concurrently_in_a_transactional_file_is_refused_naming_the_marker(tmp_path: Path) -> None:
    d = write(
        tmp_path / "m",
        {
            "0000_a.sql": "CREATE TABLE a (id int);\n",
            "0001_idx.sql": f'CREATE TABLE b (id int);\n{BREAKPOINT}\n\nCREATE INDEX CONCURRENTLY "b_idx" ON b (id);\n',
        },
    )
    (problem,) = problems_of(d)
    assert problem.startswith("0001_idx.sql: statement 2 (line 4) cannot run inside a transaction")
    assert f"'{NO_TRANSACTION_MARKER}'" in problem


def test_begin_and_commit_in_a_file_split_it_where_it_says(tmp_path: Path) -> None:
    # drizzle-kit sends them as written: COMMIT ends the transaction, what follows runs outside any until BEGIN.
    body = (
        "CREATE TABLE b (id int);\n"  # 1
        "COMMIT;\n"  # 2
        "CREATE INDEX CONCURRENTLY b_idx ON b (id);\n"  # 3
        "BEGIN;\n"  # 4
        "ALTER TABLE b ADD COLUMN c int;\n"  # 5
    )
    d = write(tmp_path / "m", {"0000_a.sql": "CREATE TABLE a (id int);\n", "0001_b.sql": body})
    mixed = load(d).by_version[1]
    assert not mixed.transactional
    assert [(p.number, p.transactional, [s.line for s in p.statements]) for p in mixed.parts] == [
        (1, True, [1]),
        (2, False, [3]),
        (3, True, [5]),
    ]
    # A file wrapped in BEGIN ... COMMIT is one transaction, as before.
    write(d, {"0001_b.sql": "BEGIN;\nCREATE TABLE b (id int);\nCOMMIT;\n"})
    wrapped = load(d).by_version[1]
    assert wrapped.transactional
    assert [s.sql for p in wrapped.parts for s in p.statements] == ["CREATE TABLE b (id int)"]
    # ROLLBACK would throw away what the file did: refused, with its own statement and line.
    write(d, {"0001_b.sql": "CREATE TABLE b (id int);\n\nROLLBACK;\n"})
    (problem,) = problems_of(d)
    assert problem.startswith("0001_b.sql: statement 2 (line 3): ROLLBACK")


def test_marker_must_be_the_first_line(tmp_path: Path) -> None:
    body = f"CREATE TABLE b (id int);\n{NO_TRANSACTION_MARKER}\nCREATE INDEX CONCURRENTLY b_idx ON b (id);\n"
    d = write(tmp_path / "m", {"0000_a.sql": body})
    (problem,) = problems_of(d)
    assert NO_TRANSACTION_MARKER in problem


def test_concurrently_in_a_comment_or_string_is_not_a_statement(tmp_path: Path) -> None:
    body = "-- CREATE INDEX CONCURRENTLY x ON a (id);\nCOMMENT ON TABLE a IS 'CREATE INDEX CONCURRENTLY';\n"
    d = write(tmp_path / "m", {"0000_a.sql": "CREATE TABLE a (id int);\n", "0001_b.sql": body})
    assert load(d).migrations[1].transactional


def test_no_transaction_file_loads_as_non_transactional() -> None:
    ms = load(FIXTURES / "no_tx")
    flags = [(m.version, m.transactional) for m in ms.migrations]
    assert flags == [(0, True), (1, False), (2, True)]
    stmts = ms.by_version[1].statements
    assert [(s.number, s.line) for s in stmts] == [(1, 2), (2, 4)]
    assert all(s.sql.startswith("CREATE INDEX CONCURRENTLY") for s in stmts)


def test_marker_with_crlf_and_bom_is_recognised(tmp_path: Path) -> None:
    raw = (FIXTURES / "no_tx" / "0001_concurrent_index.sql").read_bytes()
    d = tmp_path / "m"
    shutil.copytree(FIXTURES / "no_tx", d)
    (d / "0001_concurrent_index.sql").write_bytes(b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n"))
    assert not load(d).by_version[1].transactional


def test_enum_add_value_file_commits_after() -> None:
    ms = load(FIXTURES / "enum_add")
    assert [(m.version, m.commits_after) for m in ms.migrations] == [(0, False), (1, False), (2, True), (3, False)]
