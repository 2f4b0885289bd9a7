"""`tenantctl check`: every folder problem reported by name, the sum file's format and verdicts, exit codes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from service import cli
from service.history import checks, migrations
from tests.conftest import DEFAULT_MIGRATIONS, FIXTURES

WRITE = "`tenantctl check --write-sum`"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _errors(folder: Path) -> list[str]:
    return [f.message for f in checks.check(folder).errors]


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as caught:
        cli.main(args)
    out, err = capsys.readouterr()
    return int(caught.value.code or 0), out, err


def test_the_default_history_is_clean_and_pinned() -> None:
    report = checks.check(DEFAULT_MIGRATIONS)
    assert (report.files, report.journal, report.sum, report.errors) == (11, "ok", "ok", ())
    assert report.exit_code(lint=False) == 0


def test_the_committed_sum_is_what_write_sum_produces() -> None:
    hashes = {m.file: m.sha256 for m in migrations.load(DEFAULT_MIGRATIONS).migrations}
    assert (DEFAULT_MIGRATIONS / "tenants.sum").read_text() == checks.render_sum(hashes)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("gap", ["missing version(s) 0002, 0003: versions must be contiguous from 0000"]),
        ("duplicate", ["version 1 is used by more than one file: 0001_b.sql, 0001_c.sql"]),
        (
            "bad_name",
            [
                "0001_add column.sql: bad file name (expected NNNN_name.sql)",
                "1_b.sql: bad file name (expected NNNN_name.sql)",
            ],
        ),
        ("empty", ["0001_nothing.sql: empty file"]),
        ("journal_no_file", ["meta/_journal.json lists 0001_account_name but 0001_account_name.sql does not exist"]),
        (
            "journal_when_order",
            [
                "0002_notes.sql: journal when 1700000100000 (2023-11-14T22:15:00Z) is not after "
                "0001_account_name.sql's 1700000200000 (2023-11-14T22:16:40Z); drizzle-kit migrate would skip it"
            ],
        ),
        (
            "edited_applied/edited",
            [
                "0001_account_name.sql was edited after it was recorded in tenants.sum (recorded ebb85133c76a…, now "
                "d38130bfd2b6…): a released migration must not change; revert the edit, or if it is intended run "
                f"{WRITE} and accept it on each tenant that ran it (POST /tenants/{{id}}/repair)"
            ],
        ),
    ],
)
def test_each_problem_is_reported_by_name(case: str, expected: list[str]) -> None:
    report = checks.check(FIXTURES / case)
    assert [f.message for f in report.errors] == expected
    assert report.exit_code(lint=False) == 1


def test_problem_kinds_tell_which_check_failed() -> None:
    assert [f.kind for f in checks.check(FIXTURES / "gap").errors] == ["files"]
    assert [f.kind for f in checks.check(FIXTURES / "journal_no_file").errors] == ["journal"]
    unlisted = checks.check(FIXTURES / "journal_unlisted")
    assert (unlisted.errors, unlisted.exit_code(lint=True)) == ((), 0)
    assert [(f.kind, f.file) for f in unlisted.warnings] == [("journal", "0001_account_name.sql")]
    assert "warning: 0001_account_name.sql is not in meta/_journal.json: it is never run" in checks.human(unlisted)
    edited = checks.check(FIXTURES / "edited_applied" / "edited")
    assert [(f.kind, f.file) for f in edited.errors] == [("sum", "0001_account_name.sql")]
    assert (edited.journal, edited.sum) == ("ok", "mismatch")


def test_the_original_of_the_edited_file_matches_the_sum() -> None:
    assert checks.check(FIXTURES / "edited_applied" / "original").errors == ()


def test_crlf_and_lf_files_have_the_same_hash_so_one_sum_fits_both() -> None:
    lf, crlf = FIXTURES / "line_endings" / "lf", FIXTURES / "line_endings" / "crlf"
    assert b"\r\n" in (crlf / "0000_accounts.sql").read_bytes()
    assert b"\r\n" not in (lf / "0000_accounts.sql").read_bytes()
    assert (lf / "tenants.sum").read_bytes() == (crlf / "tenants.sum").read_bytes()
    report = checks.check(crlf)
    assert (report.errors, report.sum) == ((), "ok")
    a, b = migrations.load(lf).migrations, migrations.load(crlf).migrations
    assert [m.sha256 for m in a] == [m.sha256 for m in b]
    # drizzle hashes the raw bytes, so its hash does see the line endings
    assert all(x.drizzle_hash != y.drizzle_hash for x, y in zip(a, b, strict=True))


def test_a_file_added_without_updating_the_sum_says_what_to_do(tmp_path: Path) -> None:
    folder = _copy(FIXTURES / "edited_applied" / "original", tmp_path / "m")
    (folder / "0002_more.sql").write_text('ALTER TABLE "accounts" ADD COLUMN "age" integer;\n')
    journal = json.loads((folder / "meta" / "_journal.json").read_text())
    journal["entries"].append(
        {"idx": 2, "version": "7", "when": 1700000200000, "tag": "0002_more", "breakpoints": True}
    )
    (folder / "meta" / "_journal.json").write_text(json.dumps(journal))
    assert _errors(folder) == [f"0002_more.sql is not in tenants.sum: run {WRITE} to add it"]
    report = checks.write_sum(folder)
    assert (report.sum, report.errors) == ("written", ())
    assert _errors(folder) == []


def test_a_pinned_file_that_disappeared_is_named(tmp_path: Path) -> None:
    folder = _copy(FIXTURES / "edited_applied" / "original", tmp_path / "m")
    (folder / "0001_account_name.sql").unlink()
    (folder / "meta" / "_journal.json").write_text(
        json.dumps({"entries": [{"idx": 0, "when": 1700000000000, "tag": "0000_accounts"}]})
    )
    assert _errors(folder) == [
        "0001_account_name.sql is in tenants.sum but missing: restore it (a released migration is never deleted), "
        f"or run {WRITE} if it was never released"
    ]


def test_a_hand_edited_sum_is_caught_by_its_header(tmp_path: Path) -> None:
    folder = _copy(FIXTURES / "edited_applied" / "original", tmp_path / "m")
    lines = (folder / "tenants.sum").read_text().splitlines(keepends=True)
    (folder / "tenants.sum").write_text("".join([lines[0], lines[1], "0001_account_name.sql h1:nonsense\n"]))
    assert _errors(folder) == [
        "tenants.sum: its first line does not match the lines below it (edited by hand, or a merge); review them "
        f"and run {WRITE}",
        "tenants.sum line 3: expected '<file> h1:<sha256>'",
        f"0001_account_name.sql is not in tenants.sum: run {WRITE} to add it",
    ]


def test_the_sum_format_is_a_header_hash_then_one_line_per_file(tmp_path: Path) -> None:
    folder = _copy(FIXTURES / "line_endings" / "crlf", tmp_path / "m")
    (folder / "tenants.sum").unlink()
    checks.write_sum(folder)
    text = (folder / "tenants.sum").read_text()
    header, body = text.split("\n", 1)
    assert header == "h1:" + hashlib.sha256(body.encode()).hexdigest()
    lf = FIXTURES / "line_endings" / "lf"
    assert body == "".join(
        f"{name} h1:{hashlib.sha256((lf / name).read_bytes()).hexdigest()}\n"
        for name in ("0000_accounts.sql", "0001_notes.sql")
    )


def test_a_folder_without_a_sum_passes_and_says_so(tmp_path: Path) -> None:
    folder = _copy(FIXTURES / "journal_unlisted", tmp_path / "m")
    (folder / "meta" / "_journal.json").unlink()
    report = checks.check(folder)
    assert (report.errors, report.sum, report.journal) == ((), "absent", "absent")
    assert "tenants.sum absent (nothing pinned; `tenantctl check --write-sum` pins the files)" in checks.human(report)


def test_write_sum_refuses_while_other_problems_remain(tmp_path: Path) -> None:
    folder = _copy(FIXTURES / "gap", tmp_path / "m")
    report = checks.write_sum(folder)
    assert [f.message for f in report.errors] == [
        "missing version(s) 0002, 0003: versions must be contiguous from 0000"
    ]
    assert not (folder / "tenants.sum").exists()


def test_a_byte_order_mark_is_a_problem_in_a_drizzle_folder(tmp_path: Path) -> None:
    folder = _copy(FIXTURES / "journal_unlisted", tmp_path / "m")
    (folder / "meta" / "_journal.json").write_text(
        json.dumps(
            {
                "entries": [
                    {"idx": 0, "when": 1, "tag": "0000_accounts"},
                    {"idx": 1, "when": 2, "tag": "0001_account_name"},
                ]
            }
        )
    )
    path = folder / "0001_account_name.sql"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert _errors(folder) == [
        "0001_account_name.sql starts with a byte order mark: drizzle-kit migrate fails on it; save it without"
    ]
    (folder / "meta" / "_journal.json").unlink()
    assert _errors(folder) == []  # without a journal drizzle is not involved, and the service drops the mark


def test_cli_exit_codes_and_human_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = _run_cli(["check", str(DEFAULT_MIGRATIONS)], capsys)
    assert code == 0
    assert out.splitlines() == [f"{DEFAULT_MIGRATIONS}: 11 migration file(s); journal ok; tenants.sum ok", "ok"]
    code, out, _ = _run_cli(["check", str(FIXTURES / "journal_no_file")], capsys)
    assert code == 1
    assert out.splitlines()[1:] == [
        "error: meta/_journal.json lists 0001_account_name but 0001_account_name.sql does not exist",
        "1 problem(s), 0 warning(s)",
    ]
    code, _, err = _run_cli(["check", str(tmp_path / "nowhere")], capsys)
    assert (code, err.strip()) == (2, f"tenantctl: {tmp_path / 'nowhere'}: migrations folder not found")
    code, _, _ = _run_cli(["check", "--no-such-flag"], capsys)
    assert code == 2


def test_cli_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run_cli(["check", str(FIXTURES / "edited_applied" / "edited"), "--json"], capsys)
    assert code == 1
    report = json.loads(out)
    assert {k: report[k] for k in ("ok", "files", "journal", "sum", "warnings", "linted")} == {
        "ok": False,
        "files": 2,
        "journal": "ok",
        "sum": "mismatch",
        "warnings": [],
        "linted": [],
    }
    assert [(e["kind"], e["file"]) for e in report["errors"]] == [("sum", "0001_account_name.sql")]


def test_cli_write_sum(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = _copy(FIXTURES / "drizzle_split", tmp_path / "m")
    code, out, _ = _run_cli(["check", str(folder), "--write-sum"], capsys)
    assert code == 0
    assert out.splitlines()[0] == f"{folder}: 2 migration file(s); journal ok; tenants.sum written"
    assert checks.check(folder).sum == "ok"


def test_the_pre_commit_hook_runs_the_check_on_the_migrations_folder() -> None:
    import yaml

    hooks = yaml.safe_load((DEFAULT_MIGRATIONS.parent / ".pre-commit-hooks.yaml").read_text())
    assert hooks == [
        {
            "id": "tenantctl-check",
            "name": "tenantctl check (tenant migrations)",
            "description": "Check the migrations folder against its journal and tenants.sum before it ships.",
            "entry": "tenantctl check",
            "language": "python",
            "files": "^migrations/",
            "pass_filenames": False,
        }
    ]
