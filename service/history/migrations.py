"""The migration set on disk: ``NNNN_name.sql`` files in Drizzle Kit's format, loaded once and frozen.

A file is split on ``--> statement-breakpoint`` exactly as drizzle-orm's migrator does. Its ``sha256`` is taken
over the text with a leading BOM dropped and CRLF normalised to LF, so a checkout's line endings never change
it; ``drizzle_hash`` is drizzle's own (sha256 of the raw bytes) for reading databases drizzle migrated.
Loading collects *every* problem before failing, so an operator fixes the folder in one pass.

Where we differ from drizzle, on purpose (tests/integration/test_drizzle.py runs the real thing): chunks are sent
trimmed and empty ones skipped (drizzle sends them as they are, to the same effect); a CRLF file's chunks are sent
with LF, which changes only multi-line string literals; a leading BOM is dropped, where drizzle sends it and the
server rejects the first statement (``tenantctl check`` flags a BOM in a journaled folder).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from service.errors import MigrationSetInvalid
from service.history import journal as drizzle_journal
from service.history import statements
from service.history.origin import Origin

BREAKPOINT: Final = "--> statement-breakpoint"
NO_TRANSACTION_MARKER: Final = "-- tenants:no-transaction"
FILE_PATTERN: Final = re.compile(r"^(?P<version>\d{4,})_(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*)\.sql$")
_BOM: Final = "\ufeff"


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement as it is sent to the server, with where it starts in its file (1-based line)."""

    number: int
    line: int
    sql: str


@dataclass(frozen=True, slots=True)
class SqlFile:
    file: str
    sha256: str
    drizzle_hash: str
    statements: tuple[Statement, ...]


@dataclass(frozen=True, slots=True)
class Migration(SqlFile):
    version: int = 0
    name: str = ""
    transactional: bool = True
    # True when the file adds an enum value: the chain commits after it so the next file may use the value.
    commits_after: bool = False
    # Set for a folder another tool wrote (golang-migrate, Flyway, dbmate, goose, Prisma): see history/layouts.
    origin: Origin | None = None


@dataclass(frozen=True, slots=True)
class MigrationSet:
    migrations: tuple[Migration, ...]
    seeds: tuple[SqlFile, ...] = ()
    # The folder's layout (history/layouts): "nnnn" for NNNN_name.sql and Drizzle Kit, else the tool's name.
    layout: str = "nnnn"
    by_version: dict[int, Migration] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_version", {m.version: m for m in self.migrations})

    @property
    def latest_version(self) -> int | None:
        return self.migrations[-1].version if self.migrations else None

    def after(self, version: int | None) -> list[Migration]:
        """The migrations above ``version`` (all of them for ``None``), in order."""
        start = -1 if version is None else version
        return [m for m in self.migrations if m.version > start]


@dataclass(frozen=True, slots=True)
class Batch:
    """Files that run together: in one transaction, or (``transactional=False``) one file alone, outside any."""

    transactional: bool
    migrations: tuple[Migration, ...]
    seed: bool = False


def normalise(raw: bytes) -> str:
    text = raw.decode("utf-8")
    return text.removeprefix(_BOM).replace("\r\n", "\n")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def runs_in_transaction(text: str) -> bool:
    """False for a file whose first line is the no-transaction marker."""
    return text.lstrip().split("\n", 1)[0].strip() != NO_TRANSACTION_MARKER


def split_statements(text: str, *, single: bool = False) -> tuple[Statement, ...]:
    """Split on drizzle's breakpoint; with ``single`` also split each chunk into lone statements."""
    out: list[Statement] = []
    offset = 0
    for chunk in text.split(BREAKPOINT):
        base = offset
        offset += len(chunk) + len(BREAKPOINT)
        pieces = statements.split(chunk) if single else [(0, chunk)]
        for at, piece in pieces:
            stripped = piece.strip()
            if not stripped:
                continue
            start = base + at + (len(piece) - len(piece.lstrip()))
            out.append(Statement(number=len(out) + 1, line=text.count("\n", 0, start) + 1, sql=stripped))
    return tuple(out)


def _read(path: Path, problems: list[str]) -> tuple[bytes, str] | None:
    raw = path.read_bytes()
    try:
        text = normalise(raw)
    except UnicodeDecodeError as exc:
        problems.append(f"{path.name}: not valid UTF-8 ({exc.reason} at byte {exc.start})")
        return None
    if not text.strip():
        problems.append(f"{path.name}: empty file")
        return None
    return raw, text


def _load_migration(path: Path, version: int, name: str, problems: list[str]) -> Migration | None:
    read = _read(path, problems)
    if read is None:
        return None
    raw, text = read
    transactional = runs_in_transaction(text)
    stmts = split_statements(text, single=not transactional)
    if all(statements.is_blank(s.sql) for s in stmts):
        problems.append(f"{path.name}: no SQL statements (comments only)")
        return None
    kinds = [statements.classify(s.sql) for s in stmts]
    if transactional:
        for stmt, kind in zip(stmts, kinds, strict=True):
            if kind.needs_no_transaction:
                problems.append(
                    f"{path.name}: statement {stmt.number} (line {stmt.line}) cannot run inside a transaction; "
                    f"make '{NO_TRANSACTION_MARKER}' the file's first line"
                )
    return Migration(
        file=path.name,
        sha256=sha256_text(text),
        drizzle_hash=hashlib.sha256(raw).hexdigest(),
        statements=stmts,
        version=version,
        name=name,
        transactional=transactional,
        commits_after=any(k.adds_enum_value for k in kinds),
    )


def load_seeds(directory: Path, problems: list[str]) -> tuple[SqlFile, ...]:
    if not directory.is_dir():
        return ()
    seeds: list[SqlFile] = []
    for path in sorted(directory.glob("*.sql")):
        read = _read(path, problems)
        if read is None:
            continue
        raw, text = read
        seeds.append(
            SqlFile(
                file=path.name,
                sha256=sha256_text(text),
                drizzle_hash=hashlib.sha256(raw).hexdigest(),
                statements=split_statements(text),
            )
        )
    return tuple(seeds)


def load(
    directory: Path,
    seeds_directory: Path | None = None,
    *,
    journal: Literal["strict", "ignore"] = "strict",
) -> MigrationSet:
    """Load and validate a migration folder.

    Raises :class:`MigrationSetInvalid` listing every problem: a missing folder, a bad file name, a duplicate
    version, a gap, an empty or non-UTF-8 file, a statement that cannot run where the file would run it, and
    (``journal="strict"``, when ``meta/_journal.json`` exists) a journal that disagrees with the files.
    """
    problems: list[str] = []
    if not directory.is_dir():
        raise MigrationSetInvalid([f"{directory}: migrations folder not found"])
    found: dict[int, list[tuple[Path, str]]] = {}
    sql_files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() == ".sql")
    for path in sql_files:
        match = FILE_PATTERN.fullmatch(path.name)
        if match is None:
            problems.append(f"{path.name}: bad file name (expected NNNN_name.sql)")
            continue
        found.setdefault(int(match["version"]), []).append((path, match["name"]))
    for version, entries in sorted(found.items()):
        if len(entries) > 1:
            names = ", ".join(p.name for p, _ in entries)
            problems.append(f"version {version} is used by more than one file: {names}")
    problems.extend(_gaps(found))
    if not found and not problems:
        problems.append(f"{directory}: no migration files")
    migrations = [
        m
        for version, entries in sorted(found.items())
        if len(entries) == 1 and (m := _load_migration(entries[0][0], version, entries[0][1], problems)) is not None
    ]
    seeds = load_seeds(seeds_directory if seeds_directory is not None else directory / "seeds", problems)
    if journal == "strict":
        problems.extend(drizzle_journal.problems(directory, (p.name for p in sql_files)))
    if problems:
        raise MigrationSetInvalid(problems)
    return MigrationSet(migrations=tuple(migrations), seeds=seeds)


def _gaps(found: dict[int, list[tuple[Path, str]]]) -> Iterable[str]:
    if not found:
        return []
    missing = sorted(set(range(max(found) + 1)) - set(found))
    if not missing:
        return []
    return [f"missing version(s) {', '.join(f'{v:04d}' for v in missing)}: versions must be contiguous from 0000"]


def plan(pending: Sequence[Migration], *, seed: bool = False) -> list[Batch]:
    """Group pending files into as few transactions as PostgreSQL allows.

    A no-transaction file runs alone; a file that adds an enum value closes its transaction. The seed, when
    asked for, joins the last transaction unless that one just closed (the seed may use the new value).
    """
    batches: list[Batch] = []
    current: list[Migration] = []
    for migration in pending:
        if not migration.transactional:
            if current:
                batches.append(Batch(True, tuple(current)))
                current = []
            batches.append(Batch(False, (migration,)))
            continue
        current.append(migration)
        if migration.commits_after:
            batches.append(Batch(True, tuple(current)))
            current = []
    if current or seed:
        batches.append(Batch(True, tuple(current), seed=seed))
    return batches
