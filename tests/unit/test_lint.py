"""`tenantctl check --lint`: squawk's lock and rewrite findings on new files only; its style rules stay quiet."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from service import cli
from service.errors import LintUnavailable
from service.history import checks, lint
from tests.conftest import DEFAULT_MIGRATIONS

BREAK = "\n--> statement-breakpoint\n"


def _file(tmp_path: Path, name: str, *statements: str) -> Path:
    path = tmp_path / name
    path.write_text(BREAK.join(statements) + "\n")
    return path


def _rules(path: Path, transactional: bool = True) -> list[tuple[int, str]]:
    return [(f.line, f.rule) for f in lint.lint([(path, transactional)])]


def test_a_not_null_column_without_default_is_flagged(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "0011_x.sql",
        'ALTER TABLE "invoices" ADD COLUMN "due" date NOT NULL;',
        'ALTER TABLE "invoices" ADD COLUMN "paid" boolean DEFAULT false NOT NULL;',
    )
    assert _rules(path) == [(1, "adding-required-field")]


def test_an_index_is_flagged_on_an_existing_table_only(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "0011_x.sql",
        'CREATE TABLE "tags" ("id" bigint PRIMARY KEY, "name" text NOT NULL);',
        'CREATE INDEX "tags_name_idx" ON "tags" ("name");',
        'CREATE INDEX "invoices_due_idx" ON "invoices" ("due");',
    )
    assert _rules(path) == [(5, "require-concurrent-index-creation")]


def test_a_concurrent_index_in_a_no_transaction_file_is_fine(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "0011_x.sql",
        '-- tenants:no-transaction\nCREATE INDEX CONCURRENTLY "invoices_due_idx" ON "invoices" ("due");',
    )
    assert _rules(path, transactional=False) == []


def test_type_changes_and_other_heavy_locks_are_flagged(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "0011_x.sql",
        'ALTER TABLE "invoices" ALTER COLUMN "number" SET DATA TYPE varchar(100);',
        'ALTER TABLE "invoices" ALTER COLUMN "notes" SET NOT NULL;',
        'ALTER TABLE "invoices" ADD CONSTRAINT "invoices_number_key" UNIQUE ("number");',
        'DROP INDEX "invoices_status_idx";',
    )
    assert _rules(path) == [
        (1, "changing-column-type"),
        (3, "adding-not-nullable-field"),
        (5, "constraint-missing-not-valid"),
        (5, "disallowed-unique-constraint"),
        (7, "require-concurrent-index-deletion"),
    ]


def test_style_rules_are_not_reported(tmp_path: Path) -> None:
    # squawk itself would ask for bigint, identity, text and IF NOT EXISTS here.
    path = _file(tmp_path, "0011_x.sql", 'CREATE TABLE "t" ("id" serial PRIMARY KEY, "n" integer, "s" varchar(20));')
    assert _rules(path) == []


def test_findings_carry_file_line_and_squawks_help(tmp_path: Path) -> None:
    path = _file(tmp_path, "0011_x.sql", "SELECT 1;", 'ALTER TABLE "invoices" ADD COLUMN "due" date NOT NULL;')
    (finding,) = lint.lint([(path, True)])
    assert (finding.file, finding.line, finding.column, finding.rule) == ("0011_x.sql", 3, 24, "adding-required-field")
    assert finding.help == "Make the field nullable or add a non-VOLATILE DEFAULT"


def test_check_lints_every_file_when_there_is_no_sum(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(DEFAULT_MIGRATIONS, folder)
    (folder / "tenants.sum").unlink()
    report = checks.check(folder, lint_new=True)
    assert len(report.linted) == 11
    assert [(w.file, w.line, w.rule) for w in report.warnings] == [
        ("0001_add_client_notes_tags.sql", 20, "require-concurrent-index-creation"),
        ("0003_sessions_payment_fields.sql", 13, "constraint-missing-not-valid"),
        ("0003_sessions_payment_fields.sql", 15, "require-concurrent-index-creation"),
        ("0003_sessions_payment_fields.sql", 17, "require-concurrent-index-creation"),
        ("0007_session_cancellations.sql", 19, "require-concurrent-index-creation"),
        ("0008_add_sessions_project_id.sql", 3, "constraint-missing-not-valid"),
        ("0008_add_sessions_project_id.sql", 3, "adding-foreign-key-constraint"),
        ("0008_add_sessions_project_id.sql", 5, "require-concurrent-index-creation"),
    ]
    assert report.errors == ()
    assert (report.exit_code(lint=False), report.exit_code(lint=True)) == (0, 1)


def test_check_lints_only_files_the_sum_does_not_pin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "m"
    shutil.copytree(DEFAULT_MIGRATIONS, folder)
    (folder / "meta").joinpath("_journal.json").unlink()
    _file(folder, "0011_due_dates.sql", 'ALTER TABLE "invoices" ADD COLUMN "due" date NOT NULL;')
    report = checks.check(folder, lint_new=True)
    assert report.linted == ("0011_due_dates.sql",)
    assert [w.message for w in report.warnings] == [
        "adding-required-field: Adding a new column that is `NOT NULL` and has no default value to an existing "
        "table effectively makes it required."
    ]
    with pytest.raises(SystemExit) as caught:
        cli.main(["check", str(folder), "--lint", "--json"])
    assert caught.value.code == 1
    out = json.loads(capsys.readouterr().out)
    assert [(e["kind"], e["file"]) for e in out["errors"]] == [("sum", "0011_due_dates.sql")]
    assert [(w["file"], w["line"], w["rule"]) for w in out["warnings"]] == [
        ("0011_due_dates.sql", 1, "adding-required-field")
    ]


def test_lint_findings_fail_only_with_lint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    _file(folder, "0000_due.sql", 'ALTER TABLE "invoices" ADD COLUMN "due" date NOT NULL;')
    for args, expected in ((["check", str(folder)], 0), (["check", str(folder), "--lint"], 1)):
        with pytest.raises(SystemExit) as caught:
            cli.main(args)
        assert caught.value.code == expected
    out = capsys.readouterr().out
    assert "warning: 0000_due.sql:1: adding-required-field: Adding a new column" in out


def test_a_missing_squawk_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(LintUnavailable, match=r"pip install squawk-cli"):
        lint.squawk()
