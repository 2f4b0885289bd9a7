"""service.drift.compare: each difference once, containers explain their contents, a stable order."""

from __future__ import annotations

from service.schema.compare import compare
from service.schema.snapshot import Entry, Snapshot

TABLE = Entry("table", "public.t", {"kind": "table"}, (("schema", "public"),))
ID = Entry("column", "public.t.id", {"type": "integer", "nullable": False}, (("table", "public.t"),))
NOTE = Entry("column", "public.t.note", {"type": "text", "nullable": True}, (("table", "public.t"),))
PKEY = Entry(
    "primary_key",
    "public.t.t_pkey",
    {"definition": "PRIMARY KEY (id)"},
    (("table", "public.t"), ("column", "public.t.id")),
)
NOTE_IDX = Entry(
    "index", "public.t_note_idx", {"definition": "…"}, (("table", "public.t"), ("column", "public.t.note"))
)
SCHEMA = Entry("schema", "public", {})
BASE = Snapshot.of([SCHEMA, TABLE, ID, NOTE, PKEY, NOTE_IDX])


def _triples(expected: Snapshot, actual: Snapshot) -> list[tuple[str, str, str]]:
    return [(d.object, d.name, d.change) for d in compare(expected, actual)]


def test_identical_snapshots_have_no_difference() -> None:
    assert compare(BASE, Snapshot.of(BASE.entries.values())) == []


def test_a_missing_table_is_one_difference() -> None:
    assert _triples(BASE, Snapshot.of([SCHEMA])) == [("table", "public.t", "missing")]
    assert _triples(Snapshot.of([SCHEMA]), BASE) == [("table", "public.t", "unexpected")]


def test_a_dropped_column_takes_its_index_along() -> None:
    assert _triples(BASE, Snapshot.of([SCHEMA, TABLE, ID, PKEY])) == [("column", "public.t.note", "missing")]


def test_a_changed_object_names_only_the_changed_attributes() -> None:
    changed = Entry("column", "public.t.note", {"type": "varchar(9)", "nullable": True}, NOTE.depends)
    [difference] = compare(BASE, Snapshot.of([SCHEMA, TABLE, ID, changed, PKEY, NOTE_IDX]))
    assert (difference.change, difference.expected, difference.actual) == (
        "changed",
        {"type": "text"},
        {"type": "varchar(9)"},
    )
    assert difference.as_dict()["object"] == "column"


def test_order_is_by_name_then_kind() -> None:
    other = Entry("table", "public.a", {"kind": "table"}, (("schema", "public"),))
    actual = Snapshot.of([SCHEMA, other, TABLE, ID, PKEY])
    assert _triples(BASE, actual) == [
        ("table", "public.a", "unexpected"),
        ("column", "public.t.note", "missing"),
    ]
