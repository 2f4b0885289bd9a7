"""What every tool layout's loader shares: reading a file, cutting the part the tool runs into statements, and
turning the files, in the tool's order, into :class:`Migration` values with the service's ordinal versions."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from service.history import parts as file_parts
from service.history import statements
from service.history.migrations import Migration, Part, Statement, normalise, sha256_text
from service.history.origin import Origin


@dataclass(frozen=True, slots=True)
class ToolFile:
    """One file as its tool would run it: the statements of its "up" part, and its transaction mode.

    ``transaction`` is the file's own say (dbmate's ``transaction:false``, goose's ``NO TRANSACTION``), or
    ``None`` where the tool decides by what the statements need (golang-migrate, Flyway, Prisma).
    ``no_transaction_hint`` is what a user adds to the file to run it outside a transaction.
    """

    file: str
    raw: bytes
    text: str
    statements: tuple[Statement, ...]
    origin: Origin
    transaction: bool | None = None
    no_transaction_hint: str = ""


def read(path: Path, label: str, problems: list[str]) -> tuple[bytes, str] | None:
    """The raw bytes and the normalised text (BOM dropped, CRLF as LF), or ``None`` with a problem noted."""
    raw = path.read_bytes()
    try:
        return raw, normalise(raw)
    except UnicodeDecodeError as exc:
        problems.append(f"{label}: not valid UTF-8 ({exc.reason} at byte {exc.start})")
        return None


def cut(text: str, start: int = 0, end: int | None = None) -> tuple[Statement, ...]:
    """The single statements of ``text[start:end]``, numbered from 1, with the file line each starts on."""
    stop = len(text) if end is None else end
    part = text[start:stop]
    out: list[Statement] = []
    for at, piece in statements.split(part):
        stripped = piece.strip()
        if not stripped or statements.is_blank(stripped):
            continue
        position = start + at + (len(piece) - len(piece.lstrip()))
        out.append(Statement(number=len(out) + 1, line=text.count("\n", 0, position) + 1, sql=stripped))
    return tuple(out)


def build(files: Sequence[ToolFile], problems: list[str]) -> tuple[Migration, ...]:
    """Migrations in the tool's order, versioned 0, 1, 2, … (the service's ordinal version)."""
    return tuple(_migration(version, tool_file, problems) for version, tool_file in enumerate(files))


def _migration(version: int, tool_file: ToolFile, problems: list[str]) -> Migration:
    """One file, with its transaction parts: the file's own ``BEGIN``/``COMMIT`` split it as they split it under
    its tool (:mod:`service.history.parts`); without them it is one part, inside a transaction unless the file says
    otherwise or a statement cannot run in one."""
    kinds = [statements.classify(s.sql) for s in tool_file.statements]
    if any(k.controls_transaction for k in kinds):
        split = file_parts.split(
            tool_file.file, tool_file.statements, kinds, starts_in_transaction=tool_file.transaction is not False
        )
        problems.extend(split.problems)
        parts = split.parts
    else:
        needs_alone = [s for s, k in zip(tool_file.statements, kinds, strict=True) if k.needs_no_transaction]
        inside = not needs_alone if tool_file.transaction is None else tool_file.transaction
        if inside and needs_alone:
            problems.append(
                f"{tool_file.file}: statement {needs_alone[0].number} (line {needs_alone[0].line}) cannot run inside "
                f"a transaction; {tool_file.no_transaction_hint}"
            )
        parts = (Part(1, inside, tool_file.statements),)
    return Migration(
        file=tool_file.file,
        sha256=sha256_text(tool_file.text),
        drizzle_hash=hashlib.sha256(tool_file.raw).hexdigest(),
        statements=tool_file.statements,
        version=version,
        name=tool_file.origin.name,
        transactional=len(parts) == 1 and parts[0].transactional,
        commits_after=any(k.adds_enum_value for k in kinds),
        origin=tool_file.origin,
        parts=parts,
    )


def without_table(migrations: Sequence[Migration]) -> tuple[Migration, ...]:
    """The same files with the tool's history table switched off (``TENANTS_TOOL_TABLE=false``)."""
    return tuple(
        replace(m, origin=replace(m.origin, keep_table=False)) if m.origin is not None else m for m in migrations
    )


def duplicates(versions: dict[str, list[str]]) -> list[str]:
    """A problem for each tool version claimed by more than one file."""
    return [
        f"version {version} is used by more than one file: {', '.join(names)}"
        for version, names in versions.items()
        if len(names) > 1
    ]
