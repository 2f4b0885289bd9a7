"""``tenantctl new``, ``check --fix-journal`` and the syntax gate, in-process on copies of real folders.

drizzle-kit itself applying what ``new`` wrote is proved in tests/integration/test_drizzle.py.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import pytest

from service import cli
from service.history import checks, journal, migrations
from tests.conftest import DEFAULT_MIGRATIONS, FIXTURES


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as caught:
        cli.main(list(args))
    out, err = capsys.readouterr()
    return int(caught.value.code or 0), out, err


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_new_in_a_drizzle_folder_writes_file_journal_entry_and_sum_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _copy(DEFAULT_MIGRATIONS, tmp_path / "m")
    before = json.loads((folder / journal.JOURNAL).read_text())
    started = int(time.time() * 1000)
    sql = 'ALTER TABLE "clients" ADD COLUMN "vat_id" text;'
    code, out, _ = _run(capsys, "new", "add_client_vat", "--sql", sql, "--dir", str(folder))
    assert code == 0, out
    assert out.splitlines()[-1] == "ok"
    assert (folder / "0011_add_client_vat.sql").read_text() == sql + "\n"
    after = json.loads((folder / journal.JOURNAL).read_text())
    assert after["entries"][:-1] == before["entries"]
    entry = after["entries"][-1]
    # Exactly drizzle-kit's keys, in its order, and a `when` that is now (later than every earlier entry).
    assert list(entry) == ["idx", "version", "when", "tag", "breakpoints"]
    assert (entry["idx"], entry["version"], entry["tag"], entry["breakpoints"]) == (
        11,
        "7",
        "0011_add_client_vat",
        True,
    )
    assert started <= entry["when"] <= int(time.time() * 1000)
    assert (folder / journal.JOURNAL).read_text() == json.dumps(after, indent=2) + "\n"
    report = checks.check(folder)
    assert (report.files, report.journal, report.sum, report.errors) == (12, "ok", "ok", ())
    assert checks.read_sum(folder) is not None
    assert "0011_add_client_vat.sql" in checks.read_sum(folder).files  # type: ignore[union-attr]
    # The service loads it, strictly, as the next version.
    loaded = migrations.load(folder)
    assert (loaded.latest_version, loaded.migrations[-1].transactional) == (11, True)


def test_new_in_an_nnnn_folder_and_without_a_transaction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(FIXTURES / "ok", tmp_path / "m")
    sql = 'CREATE INDEX CONCURRENTLY "accounts_name_idx" ON "accounts" ("name");'
    code, out, _ = _run(capsys, "new", "index-names", "--no-transaction", "--sql", sql, "--dir", str(folder))
    assert code == 0, out
    assert not (folder / "meta").exists()  # no journal made where there was none
    assert not (folder / checks.SUM_FILE).exists()  # nor a sum: nothing was pinned before
    text = (folder / "0002_index-names.sql").read_text()
    assert text.splitlines()[0] == migrations.NO_TRANSACTION_MARKER
    assert migrations.load(folder).migrations[-1].transactional is False
    assert checks.check(folder).errors == ()


def test_new_reads_stdin_and_without_sql_leaves_a_placeholder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _copy(DEFAULT_MIGRATIONS, tmp_path / "m")
    code, out, _ = _run(capsys, "new", "empty_one", "--dir", str(folder))
    assert code == 0
    assert "edit it" in out
    # A placeholder is not pinned, and check refuses it until it holds SQL.
    assert "0011_empty_one.sql" not in checks.read_sum(folder).files  # type: ignore[union-attr]
    assert any("no SQL statements" in f.message for f in checks.check(folder).errors)
    monkeypatch.setattr("sys.stdin", io.StringIO("SELECT 1;\n"))
    code, _, err = _run(capsys, "new", "bad name", "--sql", "-", "--dir", str(folder))
    assert code == 2
    assert "bad migration name" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("SELECT 1;\n"))
    code, _, _ = _run(capsys, "new", "from_stdin", "--sql", "-", "--dir", str(folder))
    assert (folder / "0012_from_stdin.sql").read_text() == "SELECT 1;\n"


def test_fix_journal_adds_hand_written_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(DEFAULT_MIGRATIONS, tmp_path / "m")
    (folder / "0011_by_hand.sql").write_text("ALTER TABLE clients ADD COLUMN a text;\n")
    (folder / "0012_also.sql").write_text("ALTER TABLE clients ADD COLUMN b text;\n")
    code, out, _ = _run(capsys, "check", str(folder))
    # Not journaled: neither drizzle-kit nor the service would run them (and the sum does not pin them).
    assert code == 1
    assert "0011_by_hand.sql is not in meta/_journal.json" in out
    assert "`tenantctl check --fix-journal` adds it" in out
    code, out, err = _run(capsys, "check", str(folder), "--fix-journal", "--write-sum")
    assert code == 0, out
    assert err.splitlines() == ["added 0011_by_hand to the journal", "added 0012_also to the journal"]
    entries = json.loads((folder / journal.JOURNAL).read_text())["entries"]
    assert [(e["idx"], e["tag"]) for e in entries[-2:]] == [(11, "0011_by_hand"), (12, "0012_also")]
    assert entries[-1]["when"] > entries[-2]["when"] > entries[-3]["when"]
    report = checks.check(folder)
    assert (report.errors, report.warnings) == ((), ())
    assert migrations.load(folder).latest_version == 12


def test_a_syntax_error_fails_check_with_file_line_and_column_pinned_or_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _copy(FIXTURES / "ok", tmp_path / "m")
    broken = (
        "ALTER TABLE accounts ADD COLUMN a text;\n--> statement-breakpoint\n\n  ALTER TABLE accounts ADD COLUMN ;\n"
    )
    (folder / "0002_broken.sql").write_text(broken)
    code, out, _ = _run(capsys, "check", str(folder))
    assert code == 1
    assert 'error: 0002_broken.sql:4:35: syntax error at or near ";"' in out.splitlines()
    # Pinning it does not make it pass: --write-sum refuses, and a sum written anyway changes nothing.
    code, out, _ = _run(capsys, "check", str(folder), "--write-sum")
    assert code == 1
    assert not (folder / checks.SUM_FILE).exists()
    names = sorted(p.name for p in folder.glob("*.sql"))
    (folder / checks.SUM_FILE).write_text(checks.render_sum({n: checks.file_sha256(folder / n) for n in names}))
    code, out, _ = _run(capsys, "check", str(folder), "--json")
    report = json.loads(out)
    assert (code, report["sum"], report["ok"]) == (1, "ok", False)
    assert [(e["kind"], e["file"], e["line"], e["column"]) for e in report["errors"]] == [
        ("syntax", "0002_broken.sql", 4, 35)
    ]


def test_new_refuses_another_tools_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "flyway"
    folder.mkdir()
    (folder / "V1__init.sql").write_text("CREATE TABLE a (id int);\n")
    code, _, err = _run(capsys, "new", "next", "--sql", "SELECT 1;", "--dir", str(folder))
    assert code == 2
    assert "is a flyway folder" in err
    assert sorted(p.name for p in folder.iterdir()) == ["V1__init.sql"]


def test_syntax_is_checked_in_a_prisma_folder_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(FIXTURES.parent / "layouts" / "prisma", tmp_path / "p")
    assert checks.check(folder).errors == ()
    script = folder / "20240301000000_email_index" / "migration.sql"
    script.write_text(script.read_text() + "\nSELEC 1;\n")
    code, out, _ = _run(capsys, "check", str(folder))
    assert code == 1
    assert [line for line in out.splitlines() if "20240301000000_email_index/migration.sql:" in line], out
