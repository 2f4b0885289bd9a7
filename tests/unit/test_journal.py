"""Drizzle's meta/_journal.json against the files: every problem named, and the service's strict/ignore switch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.errors import MigrationSetInvalid
from service.history import journal, migrations
from tests.conftest import DEFAULT_MIGRATIONS, FIXTURES


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.sql"))


def _problems(folder: Path) -> list[str]:
    return journal.problems(folder, _files(folder))


def _write_journal(folder: Path, data: object) -> None:
    (folder / "meta").mkdir(parents=True, exist_ok=True)
    (folder / "meta" / "_journal.json").write_text(json.dumps(data))


def _entries(*tags_and_whens: tuple[str, int]) -> dict[str, object]:
    return {
        "version": "7",
        "dialect": "postgresql",
        "entries": [
            {"idx": i, "version": "7", "when": when, "tag": tag, "breakpoints": True}
            for i, (tag, when) in enumerate(tags_and_whens)
        ],
    }


def _folder(tmp_path: Path, *names: str) -> Path:
    for name in names:
        (tmp_path / name).write_text('CREATE TABLE "a" ("id" integer);\n')
    return tmp_path


def test_the_default_history_agrees_with_its_journal() -> None:
    found, problems = journal.read(DEFAULT_MIGRATIONS)
    assert problems == []
    assert found is not None
    assert [e.file for e in found.entries] == _files(DEFAULT_MIGRATIONS)
    assert journal.check(found, _files(DEFAULT_MIGRATIONS)) == []
    assert found.when("0010_add_invoices_columns.sql") == 1769512916748


def test_a_folder_without_a_journal_has_no_journal_problems() -> None:
    assert journal.read(FIXTURES / "gap") == (None, [])
    assert _problems(FIXTURES / "gap") == []


def test_a_file_missing_from_the_journal_is_a_warning_and_never_runs() -> None:
    folder = FIXTURES / "journal_unlisted"
    assert _problems(folder) == []
    loaded = migrations.load(folder)
    assert [m.file for m in loaded.migrations] == ["0000_accounts.sql"]
    assert loaded.warnings == (
        "0001_account_name.sql is not in meta/_journal.json: it is never run (drizzle-kit runs only the journal's "
        "entries)",
    )


def test_a_journal_entry_without_its_file_is_named() -> None:
    assert _problems(FIXTURES / "journal_no_file") == [
        "meta/_journal.json lists 0001_account_name but 0001_account_name.sql does not exist"
    ]


def test_a_when_older_than_an_earlier_version_is_named() -> None:
    assert _problems(FIXTURES / "journal_when_order") == [
        "0002_notes.sql: journal when 1700000100000 (2023-11-14T22:15:00Z) is not after 0001_account_name.sql's "
        "1700000200000 (2023-11-14T22:16:40Z); drizzle-kit migrate would skip it"
    ]


def test_when_is_compared_with_the_newest_so_far_as_drizzle_does(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "0000_a.sql", "0001_b.sql", "0002_c.sql", "0003_d.sql")
    _write_journal(folder, _entries(("0000_a", 100), ("0001_b", 900), ("0002_c", 200), ("0003_d", 300)))
    assert _problems(folder) == [
        "0002_c.sql: journal when 200 (1970-01-01T00:00:00Z) is not after 0001_b.sql's 900 (1970-01-01T00:00:00Z); "
        "drizzle-kit migrate would skip it",
        "0003_d.sql: journal when 300 (1970-01-01T00:00:00Z) is not after 0001_b.sql's 900 (1970-01-01T00:00:00Z); "
        "drizzle-kit migrate would skip it",
    ]


def test_an_equal_when_is_a_problem_because_drizzle_needs_a_later_one(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "0000_a.sql", "0001_b.sql")
    _write_journal(folder, _entries(("0000_a", 5000), ("0001_b", 5000)))
    assert _problems(folder) == [
        "0001_b.sql: journal when 5000 (1970-01-01T00:00:05Z) is not after 0000_a.sql's 5000 (1970-01-01T00:00:05Z); "
        "drizzle-kit migrate would skip it"
    ]


def test_idx_is_not_read_as_drizzle_does_not_read_it(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "0000_a.sql", "0001_b.sql")
    data = _entries(("0000_a", 100), ("0001_b", 200))
    data["entries"][0]["idx"] = 1  # type: ignore[index]
    del data["entries"][1]["idx"]  # type: ignore[attr-defined]
    _write_journal(folder, data)
    assert _problems(folder) == []
    assert [m.file for m in migrations.load(folder).migrations] == ["0000_a.sql", "0001_b.sql"]


def test_a_tag_listed_twice_is_named(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "0000_a.sql")
    _write_journal(folder, _entries(("0000_a", 100), ("0000_a", 200)))
    problems = _problems(folder)
    assert problems[0] == "meta/_journal.json: 0000_a is listed more than once"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "meta/_journal.json: not valid JSON"),
        ("[]", 'meta/_journal.json: expected an object with an "entries" list'),
        ('{"entries": {}}', 'meta/_journal.json: expected an object with an "entries" list'),
    ],
)
def test_an_unreadable_journal_is_one_problem(tmp_path: Path, content: str, expected: str) -> None:
    folder = _folder(tmp_path, "0000_a.sql")
    (folder / "meta").mkdir()
    (folder / "meta" / "_journal.json").write_text(content)
    problems = _problems(folder)
    assert len(problems) == 1
    assert problems[0].startswith(expected)


def test_malformed_entries_and_another_dialect_are_named(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "0000_a.sql")
    _write_journal(
        folder,
        {
            "dialect": "mysql",
            "entries": [
                {"idx": 0, "when": 1, "tag": "0000_a"},
                {"idx": "1", "when": 2, "tag": "0001_b"},
                {"idx": 2, "when": True, "tag": "0002_c"},
                "0003_d",
            ],
        },
    )
    assert _problems(folder) == [
        'meta/_journal.json: dialect is "mysql", expected "postgresql" (or "pg", its older name)',
        "meta/_journal.json: entry #2 needs an integer when and a string tag",
        "meta/_journal.json: entry #3 needs an integer when and a string tag",
        "meta/_journal.json lists 0001_b but 0001_b.sql does not exist",
    ]


def test_strict_loading_refuses_naming_every_journal_problem(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(FIXTURES / "journal_when_order", folder)
    (folder / "0003_more.sql").write_text('ALTER TABLE "notes" ADD COLUMN "title" text;\n')
    with pytest.raises(MigrationSetInvalid) as caught:
        migrations.load(folder)
    assert caught.value.problems == [
        "0002_notes.sql: journal when 1700000100000 (2023-11-14T22:15:00Z) is not after 0001_account_name.sql's "
        "1700000200000 (2023-11-14T22:16:40Z); drizzle-kit migrate would skip it",
    ]
    assert "0002_notes.sql: journal when" in str(caught.value)
    # the file the journal does not list is no problem: it is a warning, and never runs
    (found := migrations.inspect(folder)[1])
    assert found.warnings == [
        "0003_more.sql is not in meta/_journal.json: it is never run (drizzle-kit runs only the journal's entries)"
    ]


def test_ignore_runs_from_the_files_alone() -> None:
    loaded = migrations.load(FIXTURES / "journal_when_order", journal="ignore")
    assert [m.version for m in loaded.migrations] == [0, 1, 2]
    assert [m.version for m in migrations.load(FIXTURES / "journal_unlisted", journal="ignore").migrations] == [0, 1]


def test_a_number_missing_from_the_names_does_not_matter_to_a_journal(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "0000_a.sql", "0002_c.sql", "0003_c_abandoned.sql")
    _write_journal(folder, _entries(("0000_a", 100), ("0002_c", 200)))
    loaded = migrations.load(folder)
    assert [(m.version, m.name, m.file, m.drizzle_when) for m in loaded.migrations] == [
        (0, "a", "0000_a.sql", 100),
        (1, "c", "0002_c.sql", 200),
    ]
    assert loaded.layout == "drizzle"
    assert len(loaded.warnings) == 1
    assert loaded.warnings[0].startswith("0003_c_abandoned.sql is not in")
    # ...where a folder without a journal must be contiguous
    (folder / "meta" / "_journal.json").unlink()
    with pytest.raises(MigrationSetInvalid) as caught:
        migrations.load(folder)
    assert caught.value.problems[0] == "missing version(s) 0001: versions must be contiguous from 0000"


@pytest.mark.parametrize(
    ("dialect", "version", "entry_extra"),
    [
        ("pg", "5", {"version": "5", "breakpoints": True}),
        ("pg", "6", {"version": "6", "breakpoints": True}),
        ("postgresql", "7", {"version": "7", "breakpoints": True}),
        ("pg", None, {}),  # the oldest journals: no version, no breakpoints flag
        ("postgresql", "7", {"version": "7", "breakpoints": False}),  # drizzle splits on breakpoints anyway
    ],
)
def test_every_journal_drizzle_kit_has_written_is_read(
    tmp_path: Path, dialect: str, version: str | None, entry_extra: dict[str, object]
) -> None:
    folder = _folder(tmp_path, "0000_a.sql", "20240101120000_b.sql")
    data: dict[str, object] = {
        "dialect": dialect,
        "entries": [{"idx": 0, "when": 100, "tag": "0000_a", **entry_extra}, {"when": 200, "tag": "20240101120000_b"}],
    }
    if version is not None:
        data["version"] = version
    _write_journal(folder, data)
    loaded = migrations.load(folder)
    assert [(m.version, m.name, m.drizzle_when) for m in loaded.migrations] == [(0, "a", 100), (1, "b", 200)]
    assert (loaded.layout, loaded.warnings) == ("drizzle", ())
