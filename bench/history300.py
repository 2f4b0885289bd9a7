"""A generated Drizzle Kit project of N files (default 300), as a long-lived real one looks.

Tables with foreign keys and indexes, columns added and altered, enums and enum values added (each splits the
chain: PostgreSQL uses a new value only after its transaction commits), views, a few files that ``COMMIT`` half-way
to build an index ``CONCURRENTLY``, a journal (``"dialect": "pg"``, version 5, timestamp tags) with a number missing
from the names and an abandoned draft beside it. Deterministic: the same N gives the same bytes.

    python -m bench.history300 OUT_DIR [--files 300]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BP = "--> statement-breakpoint\n"
_START_MS = 1_690_000_000_000


def _file(i: int, tables: list[str]) -> str:
    """File ``i``'s SQL; ``tables`` holds the tables made so far (appended to)."""
    kind = i % 10
    if i == 0 or kind in (1, 5) or not tables:
        table = f"t{i:03d}"
        ref = tables[-1] if tables else None
        fk = f',\n\t"{ref}_id" integer REFERENCES "{ref}"("id") ON DELETE cascade' if ref is not None else ""
        tables.append(table)
        return (
            f'CREATE TABLE IF NOT EXISTS "{table}" (\n\t"id" serial PRIMARY KEY NOT NULL,\n\t"name" text NOT NULL,\n'
            f'\t"created_at" timestamp DEFAULT now() NOT NULL{fk}\n);\n{BP}'
            f'CREATE INDEX IF NOT EXISTS "{table}_name_idx" ON "{table}" USING btree ("name");'
        )
    table = tables[(i * 7) % len(tables)]
    if kind in (2, 6):
        return (
            f'ALTER TABLE "{table}" ADD COLUMN "c{i}" varchar(64);{BP}'
            f'ALTER TABLE "{table}" ADD COLUMN "n{i}" integer DEFAULT 0 NOT NULL;'
        )
    if kind == 3:
        return f'CREATE TYPE "public"."e{i}" AS ENUM(\'a\', \'b\');{BP}ALTER TABLE "{table}" ADD COLUMN "e{i}" "e{i}";'
    if kind == 4 and i % 40 == 4:
        previous = f"e{i - 1}" if (i - 1) % 10 == 3 else "e3"
        return f'ALTER TYPE "public"."{previous}" ADD VALUE \'c{i}\';'
    if kind == 7:
        return f'CREATE OR REPLACE VIEW "v{i}" AS SELECT "id", "name" FROM "{table}";'
    if kind == 8 and i % 50 == 8:
        return (
            f'ALTER TABLE "{table}" ADD COLUMN "k{i}" text;{BP}COMMIT;{BP}'
            f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{table}_k{i}_idx" ON "{table}" USING btree ("k{i}");{BP}'
            f"BEGIN;{BP}"
            f'COMMENT ON COLUMN "{table}"."k{i}" IS \'built concurrently\';'
        )
    return f'CREATE INDEX IF NOT EXISTS "{table}_c{i}_idx" ON "{table}" USING btree ("created_at", "id");'


def generate(out: Path, files: int = 300) -> Path:
    """Write the project into ``out`` (created); return it."""
    (out / "meta").mkdir(parents=True, exist_ok=True)
    tables: list[str] = []
    entries = []
    for i in range(files):
        number = i if i < 150 else i + 1  # 0150 was dropped with `drizzle-kit drop`: the names skip it
        tag = f"{number:04d}_step_{i}"
        (out / f"{tag}.sql").write_text(_file(i, tables))
        entries.append({"idx": i, "version": "5", "when": _START_MS + i * 60_000, "tag": tag, "breakpoints": True})
    (out / "0200_abandoned_draft.sql").write_text('CREATE TABLE "never_run" ("id" integer);\n')
    journal = {"version": "5", "dialect": "pg", "entries": entries}
    (out / "meta" / "_journal.json").write_text(json.dumps(journal, indent=2))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--files", type=int, default=300)
    args = parser.parse_args()
    print(generate(args.out, args.files))
