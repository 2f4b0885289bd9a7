"""Two snapshots compared: every difference once, explained by its container where it has one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from service.schema import snapshot
from service.schema.snapshot import Entry, Key, Snapshot

Change = Literal["missing", "unexpected", "changed"]
_KIND_ORDER: Final = {kind: i for i, kind in enumerate(snapshot.KINDS)}
_CHANGE_ORDER: Final = {"missing": 0, "unexpected": 1, "changed": 2}


@dataclass(frozen=True, slots=True)
class Difference:
    object: str
    name: str
    change: Change
    expected: Mapping[str, Any] | None
    actual: Mapping[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": self.object,
            "name": self.name,
            "change": self.change,
            "expected": None if self.expected is None else dict(self.expected),
            "actual": None if self.actual is None else dict(self.actual),
        }


def compare(expected: Snapshot, actual: Snapshot) -> list[Difference]:
    """Every difference once, sorted by name, kind and change.

    An object that is missing (or unexpected) because its container is, is not listed again: a dropped table is
    one difference, not one per column, index and constraint; a dropped column takes its indexes with it.
    """
    want, have = expected.entries, actual.entries
    missing = {k for k in want if k not in have}
    unexpected = {k for k in have if k not in want}
    found = [_absent(want[k], "missing") for k in missing if not _explained(want[k], missing)]
    found += [_absent(have[k], "unexpected") for k in unexpected if not _explained(have[k], unexpected)]
    for key in want.keys() & have.keys():
        before, after = want[key].attrs, have[key].attrs
        if before != after:
            fields = sorted(f for f in before.keys() | after.keys() if before.get(f) != after.get(f))
            found.append(
                Difference(
                    key[0], key[1], "changed", {f: before.get(f) for f in fields}, {f: after.get(f) for f in fields}
                )
            )
    found.sort(key=lambda d: (d.name, _KIND_ORDER.get(d.object, len(_KIND_ORDER)), _CHANGE_ORDER[d.change]))
    return found


def _explained(entry: Entry, absent: set[Key]) -> bool:
    return any(dep in absent for dep in entry.depends)


def _absent(entry: Entry, change: Change) -> Difference:
    attrs = dict(entry.attrs)
    if change == "missing":
        return Difference(entry.kind, entry.name, change, attrs, None)
    return Difference(entry.kind, entry.name, change, None, attrs)
