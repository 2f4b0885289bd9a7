"""A normalised snapshot of one database's catalog: what its schema *is*, independent of OIDs and of who made it.

Every object is an :class:`Entry` keyed by ``(kind, name)`` with a fully qualified name (``public.invoices``,
``public.invoices.sent_at``, ``public.touch(integer)``) and a small dict of attributes rendered by the server's
own ``pg_get_*def`` functions. The snapshot is read with ``search_path = pg_catalog`` so that every rendered type,
default and definition is schema-qualified the same way in every database, whatever its settings.

Left out on purpose: the service's history schema (``_tenants``), drizzle's (``drizzle``), system schemas,
objects that belong to an extension (the extension itself is listed with its version), owners, grants,
comments and statistics, and column order (an ORM addresses columns by name; a dropped and re-added column
moves to the end without changing what the application sees).

``depends`` names the objects whose absence explains this one's (its table, its schema, the columns an index or
constraint is built on): a dropped table is one difference, not one per column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg

from service.store.db import Conn

Key = tuple[str, str]

# Kinds in the order a reader expects them (containers first); also the sort order of differences on one name.
KINDS: Final = (
    "schema",
    "extension",
    "enum",
    "sequence",
    "table",
    "view",
    "column",
    "primary_key",
    "unique",
    "foreign_key",
    "check",
    "exclusion",
    "index",
    "function",
    "trigger",
    "policy",
)
EXCLUDED_SCHEMAS: Final = ("pg_catalog", "information_schema", "_tenants", "drizzle")

_CONSTRAINT_KINDS: Final = {"p": "primary_key", "u": "unique", "f": "foreign_key", "c": "check", "x": "exclusion"}
_TABLE_KINDS: Final = {"r": "table", "p": "partitioned", "f": "foreign"}
_IDENTITY: Final = {"a": "always", "d": "by_default"}
_GENERATED: Final = {"s": "stored", "v": "virtual"}
_TRIGGER_ENABLED: Final = {"O": "enabled", "D": "disabled", "R": "replica", "A": "always"}
_POLICY_COMMANDS: Final = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
_FUNCTION_KINDS: Final = {"f": "function", "p": "procedure", "a": "aggregate", "w": "window"}
_VOLATILITY: Final = {"i": "immutable", "s": "stable", "v": "volatile"}

# $1 is EXCLUDED_SCHEMAS. System schemas pg_toast, pg_temp_N... all start with pg_, which users cannot create.
# Arrays are cast to text[]: asyncpg has no built-in codec for name[] and would introspect it on every new
# connection, which costs more than the whole snapshot.
_NS: Final = r"n.nspname <> ALL($1::text[]) AND n.nspname NOT LIKE 'pg\_%'"


def _not_extension_member(catalog: str, oid: str) -> str:
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = '{catalog}'::regclass "
        f"AND x.objid = {oid} AND x.deptype = 'e')"
    )


_SCHEMAS: Final = f"""
SELECT n.nspname AS name FROM pg_namespace n
WHERE {_NS} AND {_not_extension_member("pg_namespace", "n.oid")}"""

_EXTENSIONS: Final = """
SELECT e.extname AS name, e.extversion AS version, n.nspname AS schema
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"""

_ENUMS: Final = f"""
SELECT n.nspname AS schema, t.typname AS name, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) AS labels
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_enum e ON e.enumtypid = t.oid
WHERE {_NS} AND {_not_extension_member("pg_type", "t.oid")}
GROUP BY n.nspname, t.typname"""

_RELATIONS: Final = f"""
SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind, c.relpersistence = 'u' AS unlogged,
       c.relrowsecurity AS rls, c.relforcerowsecurity AS force_rls,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid, true) END AS definition,
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partition_key,
       CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END AS partition_bound,
       (SELECT pn.nspname || '.' || pc.relname FROM pg_inherits i
          JOIN pg_class pc ON pc.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace
        WHERE c.relispartition AND i.inhrelid = c.oid) AS partition_of
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm') AND {_NS} AND {_not_extension_member("pg_class", "c.oid")}"""

_COLUMNS: Final = f"""
SELECT n.nspname AS schema, c.relname AS table, a.attname AS name,
       format_type(a.atttypid, a.atttypmod) AS type, NOT a.attnotnull AS nullable,
       CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END AS "default",
       a.attidentity::text AS identity, a.attgenerated::text AS generated_kind,
       CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END AS generated,
       CASE WHEN a.attcollation <> t.typcollation
            THEN quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END AS collation
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'f')
  AND {_NS} AND {_not_extension_member("pg_class", "c.oid")}"""

_CONSTRAINTS: Final = f"""
SELECT n.nspname AS schema, c.relname AS table, k.conname AS name, k.contype::text AS kind,
       pg_get_constraintdef(k.oid, true) AS definition,
       ARRAY(SELECT a.attname::text FROM unnest(k.conkey) AS u(num)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.num) AS columns,
       rn.nspname AS ref_schema, rc.relname AS ref_table
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class rc ON rc.oid = k.confrelid LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE k.contype IN ('p', 'u', 'f', 'c', 'x') AND {_NS} AND {_not_extension_member("pg_class", "c.oid")}"""

# Indexes that back a primary key, unique or exclusion constraint are described by the constraint.
_INDEXES: Final = f"""
SELECT n.nspname AS schema, ic.relname AS name, tn.nspname AS table_schema, c.relname AS table,
       c.relkind::text AS table_kind, pg_get_indexdef(i.indexrelid) AS definition, i.indisvalid AS valid,
       ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) AS u(num)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.num) AS columns
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace tn ON tn.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND {_NS} AND {_not_extension_member("pg_class", "c.oid")}
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k
                  WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x'))"""

# Identity sequences (deptype 'i') are part of their column; serial ones (deptype 'a') are listed, with owner.
_SEQUENCES: Final = f"""
SELECT n.nspname AS schema, c.relname AS name, format_type(s.seqtypid, NULL) AS type, s.seqstart AS start,
       s.seqincrement AS increment, s.seqmin AS min, s.seqmax AS max, s.seqcache AS cache, s.seqcycle AS cycle,
       own.schema AS owner_schema, own.table AS owner_table, own.column AS owner_column
FROM pg_sequence s
JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN LATERAL (
    SELECT tn.nspname AS schema, tc.relname AS table, a.attname AS column
    FROM pg_depend d
    JOIN pg_class tc ON tc.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = tc.relnamespace
    JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
      AND d.deptype = 'a'
    LIMIT 1
) own ON true
WHERE {_NS} AND {_not_extension_member("pg_class", "c.oid")}
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'i')"""

_FUNCTIONS: Final = f"""
SELECT n.nspname AS schema, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS name,
       p.prokind::text AS kind, pg_get_function_result(p.oid) AS returns, l.lanname AS language,
       p.provolatile::text AS volatility, p.proisstrict AS strict, p.prosecdef AS security_definer,
       p.proconfig AS config,
       encode(sha256(convert_to(CASE WHEN p.prokind = 'a' THEN ''
                                     WHEN p.prosqlbody IS NOT NULL THEN pg_get_functiondef(p.oid)
                                     ELSE p.prosrc END, 'UTF8')), 'hex') AS body_sha256
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
WHERE {_NS} AND {_not_extension_member("pg_proc", "p.oid")}"""

_TRIGGERS: Final = f"""
SELECT n.nspname AS schema, c.relname AS table, t.tgname AS name, pg_get_triggerdef(t.oid, true) AS definition,
       t.tgenabled::text AS enabled, pn.nspname AS function_schema,
       p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS function
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace
WHERE NOT t.tgisinternal AND {_NS} AND {_not_extension_member("pg_class", "c.oid")}"""

_POLICIES: Final = f"""
SELECT n.nspname AS schema, c.relname AS table, p.polname AS name, p.polcmd::text AS command,
       p.polpermissive AS permissive,
       ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END
             FROM unnest(p.polroles) AS r ORDER BY 1) AS roles,
       pg_get_expr(p.polqual, p.polrelid) AS "using", pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_NS}"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One schema object: its attributes, and the objects whose absence would explain its own."""

    kind: str
    name: str
    attrs: Mapping[str, Any]
    depends: tuple[Key, ...] = ()

    @property
    def key(self) -> Key:
        return (self.kind, self.name)


@dataclass(frozen=True, slots=True)
class Snapshot:
    entries: Mapping[Key, Entry] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> Snapshot:
        return cls({e.key: e for e in entries})

    def objects(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The public JSON form: kind → fully qualified name → attributes, every level sorted."""
        out: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
        for (kind, name), entry in sorted(self.entries.items()):
            out.setdefault(kind, {})[name] = dict(entry.attrs)
        return out

    def dump(self) -> dict[str, Any]:
        """The stored form (``objects`` plus ``depends``); :meth:`load` reads it back."""
        depends = {f"{k}:{n}": [list(d) for d in e.depends] for (k, n), e in sorted(self.entries.items()) if e.depends}
        return {"objects": self.objects(), "depends": depends}

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Snapshot:
        depends: Mapping[str, list[list[str]]] = data.get("depends", {})
        return cls.of(
            Entry(kind, name, attrs, tuple((d[0], d[1]) for d in depends.get(f"{kind}:{name}", ())))
            for kind, by_name in data["objects"].items()
            for name, attrs in by_name.items()
        )


async def read(conn: Conn) -> Snapshot:
    """Read the snapshot of the database ``conn`` is connected to, in one read-only transaction."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # Rendered names are qualified against this path: pin it so two databases render alike. JIT only ever
        # slows these small catalog queries down.
        await conn.execute("SET LOCAL search_path = pg_catalog; SET LOCAL jit = off")
        entries: list[Entry] = []
        for query, build in _READERS:
            rows = await conn.fetch(query, list(EXCLUDED_SCHEMAS)) if "$1" in query else await conn.fetch(query)
            entries.extend(build(row) for row in rows)
    return Snapshot.of(entries)


def _schema(row: asyncpg.Record) -> Entry:
    return Entry("schema", row["name"], {})


def _extension(row: asyncpg.Record) -> Entry:
    return Entry("extension", row["name"], {"version": row["version"], "schema": row["schema"]})


def _enum(row: asyncpg.Record) -> Entry:
    return Entry("enum", f"{row['schema']}.{row['name']}", {"labels": list(row["labels"])}, _in(row["schema"]))


def _relation(row: asyncpg.Record) -> Entry:
    name = f"{row['schema']}.{row['name']}"
    if row["kind"] in ("v", "m"):
        attrs: dict[str, Any] = {"materialized": row["kind"] == "m", "definition": row["definition"]}
        return Entry("view", name, attrs, _in(row["schema"]))
    attrs = {
        "kind": _TABLE_KINDS[row["kind"]],
        "unlogged": row["unlogged"],
        "rls": row["rls"],
        "force_rls": row["force_rls"],
    }
    for optional in ("partition_key", "partition_of", "partition_bound"):
        if row[optional] is not None:
            attrs[optional] = row[optional]
    return Entry("table", name, attrs, _in(row["schema"]))


def _column(row: asyncpg.Record) -> Entry:
    table = f"{row['schema']}.{row['table']}"
    generated = None
    if row["generated"] is not None:
        generated = f"{row['generated']} {_GENERATED.get(row['generated_kind'], row['generated_kind']).upper()}"
    attrs = {
        "type": row["type"],
        "nullable": row["nullable"],
        "default": row["default"],
        "identity": _IDENTITY.get(row["identity"]),
        "generated": generated,
        "collation": row["collation"],
    }
    return Entry("column", f"{table}.{row['name']}", attrs, (("table", table),))


def _constraint(row: asyncpg.Record) -> Entry:
    table = f"{row['schema']}.{row['table']}"
    depends = [("table", table), *_columns(table, row["columns"])]
    if row["ref_table"] is not None:
        depends.append(("table", f"{row['ref_schema']}.{row['ref_table']}"))
    kind = _CONSTRAINT_KINDS[row["kind"]]
    return Entry(kind, f"{table}.{row['name']}", {"definition": row["definition"]}, tuple(depends))


def _index(row: asyncpg.Record) -> Entry:
    table = f"{row['table_schema']}.{row['table']}"
    parent = ("view" if row["table_kind"] == "m" else "table", table)
    attrs = {"table": table, "definition": row["definition"], "valid": row["valid"]}
    return Entry("index", f"{row['schema']}.{row['name']}", attrs, (parent, *_columns(table, row["columns"])))


def _sequence(row: asyncpg.Record) -> Entry:
    owned_by = None
    depends: list[Key] = list(_in(row["schema"]))
    if row["owner_table"] is not None:
        table = f"{row['owner_schema']}.{row['owner_table']}"
        owned_by = f"{table}.{row['owner_column']}"
        depends += [("table", table), ("column", owned_by)]
    attrs = {
        "type": row["type"],
        "start": row["start"],
        "increment": row["increment"],
        "min": row["min"],
        "max": row["max"],
        "cache": row["cache"],
        "cycle": row["cycle"],
        "owned_by": owned_by,
    }
    return Entry("sequence", f"{row['schema']}.{row['name']}", attrs, tuple(depends))


def _function(row: asyncpg.Record) -> Entry:
    attrs = {
        "kind": _FUNCTION_KINDS.get(row["kind"], row["kind"]),
        "returns": row["returns"],
        "language": row["language"],
        "volatility": _VOLATILITY.get(row["volatility"], row["volatility"]),
        "strict": row["strict"],
        "security_definer": row["security_definer"],
        "config": sorted(row["config"] or []),
        "body_sha256": row["body_sha256"],
    }
    return Entry("function", f"{row['schema']}.{row['name']}", attrs, _in(row["schema"]))


def _trigger(row: asyncpg.Record) -> Entry:
    table = f"{row['schema']}.{row['table']}"
    attrs = {"definition": row["definition"], "enabled": _TRIGGER_ENABLED.get(row["enabled"], row["enabled"])}
    depends = (("table", table), ("function", f"{row['function_schema']}.{row['function']}"))
    return Entry("trigger", f"{table}.{row['name']}", attrs, depends)


def _policy(row: asyncpg.Record) -> Entry:
    table = f"{row['schema']}.{row['table']}"
    attrs = {
        "command": _POLICY_COMMANDS.get(row["command"], row["command"]),
        "permissive": row["permissive"],
        "roles": list(row["roles"]),
        "using": row["using"],
        "with_check": row["with_check"],
    }
    return Entry("policy", f"{table}.{row['name']}", attrs, (("table", table),))


def _in(schema: str) -> tuple[Key, ...]:
    return (("schema", schema),)


def _columns(table: str, names: Iterable[str]) -> list[Key]:
    return [("column", f"{table}.{name}") for name in names]


_READERS: Final = (
    (_SCHEMAS, _schema),
    (_EXTENSIONS, _extension),
    (_ENUMS, _enum),
    (_RELATIONS, _relation),
    (_COLUMNS, _column),
    (_CONSTRAINTS, _constraint),
    (_INDEXES, _index),
    (_SEQUENCES, _sequence),
    (_FUNCTIONS, _function),
    (_TRIGGERS, _trigger),
    (_POLICIES, _policy),
)
