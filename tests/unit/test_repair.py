"""Which accepted hashes become repairs: pure planning, no database."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.errors import RepairRejected
from service.history.drizzle import DrizzleRow, match
from service.history.migrations import MigrationSet, load
from service.history.table import Applied
from service.tenants.repair import Accept, repairs_for


def _set(tmp_path: Path, *texts: str) -> MigrationSet:
    for version, text in enumerate(texts):
        (tmp_path / f"{version:04d}_f{version}.sql").write_text(text)
    return load(tmp_path)


def _applied(ms: MigrationSet, version: int, sha256: str, accepted: str | None = None) -> Applied:
    m = ms.by_version[version]
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return Applied(version, m.name, m.file, sha256, m.drizzle_hash, at, 1.0, "applied", accepted)


def test_only_hashes_not_yet_in_force_become_repairs(tmp_path: Path) -> None:
    ms = _set(tmp_path, "CREATE TABLE a (id int);\n", "CREATE TABLE b (id int);\n")
    a, b = ms.by_version[0].sha256, ms.by_version[1].sha256
    applied = [_applied(ms, 0, "0" * 64), _applied(ms, 1, "1" * 64, accepted=b)]
    repairs = repairs_for(applied, ms, [Accept(0, a), Accept(1, b)])
    assert [(r.version, r.old_sha256, r.new_sha256) for r in repairs] == [(0, "0" * 64, a)]
    assert applied[1].effective_sha256 == b


def test_every_refusal_is_listed_and_nothing_is_planned(tmp_path: Path) -> None:
    ms = _set(tmp_path, "CREATE TABLE a (id int);\n")
    applied = [_applied(ms, 0, "0" * 64)]
    with pytest.raises(RepairRejected) as caught:
        repairs_for(applied, ms, [Accept(0, ms.by_version[0].sha256), Accept(0, "f" * 64), Accept(4, "f" * 64)])
    assert [(r["version"], r["reason"]) for r in caught.value.details["rejected"]] == [
        (0, "duplicate"),
        (4, "not_applied"),
    ]


def test_identical_files_share_a_drizzle_hash_and_are_matched_in_order(tmp_path: Path) -> None:
    ms = _set(tmp_path, "CREATE TABLE a (id int);\n", "SELECT 1;\n", "SELECT 1;\n")
    same = ms.by_version[1].drizzle_hash
    rows = [DrizzleRow(1, ms.by_version[0].drizzle_hash, 10), DrizzleRow(2, same, 20), DrizzleRow(3, same, 30)]
    found = match(rows, ms)
    assert [(a.version, a.applied_at.timestamp()) for a in found.applied] == [(0, 0.01), (1, 0.02), (2, 0.03)]
    assert found.unknown == ()
    extra = match([*rows, DrizzleRow(4, same, 40)], ms)
    assert extra.unknown == (DrizzleRow(4, same, 40),)
