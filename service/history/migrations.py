"""The migration set: files as their tool wrote them, loaded once and frozen; and the plan of transactions.

The layout of a folder decides which files run and in what order: a Drizzle Kit folder (``meta/_journal.json``)
runs its journal's entries in journal order (:mod:`service.history.drizzle_kit`), any other folder its
``NNNN_name.sql`` files in number order (:mod:`service.history.nnnn`). Each loader hands a file's text to
:func:`build`, which is common to every layout: statements, transaction parts, hashes.

A file is split on ``--> statement-breakpoint`` exactly as drizzle-orm's migrator does; a file without
breakpoints, and one that controls its own transactions, is split further into single statements by
PostgreSQL's own parser, so an error names its own statement and line. Its ``sha256`` is taken over the text with
a leading BOM dropped and CRLF normalised to LF, so a checkout's line endings never change it; ``drizzle_hash``
is drizzle's own (sha256 of the raw bytes). Loading collects *every* problem before failing, so an operator fixes
the folder in one pass; warnings (files a journal does not list) never stop it.

Where we differ from drizzle, on purpose (tests/integration/test_drizzle.py runs the real thing): chunks are sent
trimmed and empty ones skipped (drizzle sends them as they are, to the same effect); a CRLF file's chunks are sent
with LF, which changes only multi-line string literals; a leading BOM is dropped, where drizzle sends it and the
server rejects the first statement (``tenantctl check`` flags a BOM in a journaled folder); after a file's
``COMMIT`` drizzle runs the rest of the whole chain in autocommit, where the service opens a new transaction at
the next file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from service.errors import MigrationSetInvalid
from service.history import parts as file_parts
from service.history import statements
from service.history.origin import Origin
from service.history.parts import NO_TRANSACTION_MARKER, Part, Statement

__all__ = ["NO_TRANSACTION_MARKER", "Part", "Statement"]

BREAKPOINT: Final = "--> statement-breakpoint"
_BOM: Final = "\ufeff"


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
    # The file's transactions as written in it (BEGIN/COMMIT, the no-transaction marker); one part for most files.
    parts: tuple[Part, ...] = ()
    # The journal entry's `when` (ms) of a Drizzle Kit file: drizzle's own history row gets it as created_at.
    drizzle_when: int | None = None

    def __post_init__(self) -> None:
        if not self.parts:  # built elsewhere (history/layouts): the file is one part, as its mode says
            object.__setattr__(self, "parts", (Part(1, self.transactional, self.statements),))


@dataclass(frozen=True, slots=True)
class MigrationSet:
    migrations: tuple[Migration, ...]
    seeds: tuple[SqlFile, ...] = ()
    # The folder's layout (history/layouts): "nnnn", "drizzle", or the tool's name.
    layout: str = "nnnn"
    # Files present but never run (not in the journal): shown by GET /migrations and tenantctl check.
    warnings: tuple[str, ...] = ()
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
    """Files that run together: in one transaction, or (``transactional=False``) one file alone, part by part."""

    transactional: bool
    migrations: tuple[Migration, ...]
    seed: bool = False


@dataclass(slots=True)
class Findings:
    """What loading a folder found: problems stop the start, journal problems are the journal's, warnings don't."""

    problems: list[str] = field(default_factory=list)
    journal: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def all_problems(self) -> list[str]:
        return self.problems + self.journal


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


def read_text(path: Path, problems: list[str]) -> tuple[bytes, str] | None:
    """A file's raw bytes and normalised text; ``None`` (with the problem noted) when empty or not UTF-8."""
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


def build(
    path: Path, version: int, name: str, problems: list[str], *, drizzle_when: int | None = None
) -> Migration | None:
    """One migration file, whatever its layout; ``None`` (with its problems noted) when it cannot run."""
    read = read_text(path, problems)
    if read is None:
        return None
    raw, text = read
    starts_in_transaction = runs_in_transaction(text)
    # A file without breakpoints holding several statements is split, so that an error names its own statement.
    stmts = split_statements(text, single=BREAKPOINT not in text and len(statements.split(text)) > 1)
    kinds = [statements.classify(s.sql) for s in stmts]
    if not starts_in_transaction or any(k.controls_transaction or k.needs_no_transaction for k in kinds):
        stmts = split_statements(text, single=True)  # the transaction boundaries fall between statements
        kinds = [statements.classify(s.sql) for s in stmts]
    if all(statements.is_blank(s.sql) for s in stmts):
        problems.append(f"{path.name}: no SQL statements (comments only)")
        return None
    split = file_parts.split(path.name, stmts, kinds, starts_in_transaction=starts_in_transaction)
    problems.extend(split.problems)
    return Migration(
        file=path.name,
        sha256=sha256_text(text),
        drizzle_hash=hashlib.sha256(raw).hexdigest(),
        statements=stmts,
        version=version,
        name=name,
        transactional=len(split.parts) == 1 and split.parts[0].transactional,
        commits_after=any(k.adds_enum_value for k in kinds),
        parts=split.parts,
        drizzle_when=drizzle_when,
    )


def load_seeds(directory: Path, problems: list[str]) -> tuple[SqlFile, ...]:
    if not directory.is_dir():
        return ()
    seeds: list[SqlFile] = []
    for path in sorted(directory.glob("*.sql")):
        read = read_text(path, problems)
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


def inspect(
    directory: Path,
    seeds_directory: Path | None = None,
    *,
    journal: Literal["strict", "ignore"] = "strict",
) -> tuple[MigrationSet, Findings]:
    """Load a folder without failing: the set (of the files that could be read) and everything found."""
    from service.history import drizzle_kit, nnnn  # the loaders build on this module's types

    found = Findings()
    if not directory.is_dir():
        found.problems.append(f"{directory}: migrations folder not found")
        return MigrationSet(()), found
    layout = "drizzle" if journal == "strict" and drizzle_kit.is_drizzle(directory) else "nnnn"
    if layout == "drizzle":
        loaded = drizzle_kit.load_files(directory, found)
    else:
        loaded = nnnn.load_files(directory, found.problems)
    seeds = load_seeds(seeds_directory if seeds_directory is not None else directory / "seeds", found.problems)
    return MigrationSet(tuple(loaded), seeds, layout, tuple(found.warnings)), found


def load(
    directory: Path,
    seeds_directory: Path | None = None,
    *,
    journal: Literal["strict", "ignore"] = "strict",
) -> MigrationSet:
    """Load and validate a migration folder.

    Raises :class:`MigrationSetInvalid` listing every problem: a missing folder, a bad file name, a duplicate
    version or a gap (``NNNN`` layout), a journal entry without its file or with a ``when`` not after the one
    before (Drizzle layout), an empty or non-UTF-8 file, a statement that cannot run where the file would run it.
    With ``journal="ignore"`` a Drizzle folder is read as an ``NNNN`` folder, its journal unread.
    """
    migration_set, found = inspect(directory, seeds_directory, journal=journal)
    if found.all_problems():
        raise MigrationSetInvalid(found.all_problems())
    return migration_set


def plan(pending: Sequence[Migration], *, seed: bool = False) -> list[Batch]:
    """Group pending files into as few transactions as PostgreSQL allows.

    A file with a part outside a transaction (or several parts) runs alone, part by part; a file that adds an
    enum value closes its transaction. The seed, when asked for, joins the last transaction unless that one just
    closed (the seed may use the new value).
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
