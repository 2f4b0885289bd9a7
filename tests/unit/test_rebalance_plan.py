"""The moves a rebalance plans (service/fleet/moves.plan): fullest to emptiest with room, until within one."""

from __future__ import annotations

from service.fleet.moves import plan


def test_evens_counts_moving_the_newest_first() -> None:
    moves = plan({"a": 5, "b": 0}, {"a": ["t1", "t2", "t3", "t4", "t5"]}, {"a": None, "b": None})
    assert moves == [("t5", "b"), ("t4", "b")]


def test_three_servers_end_within_one() -> None:
    movable = {"a": [f"a{i}" for i in range(7)], "b": ["b0"], "c": []}
    moves = plan({"a": 7, "b": 1, "c": 0}, movable, {"a": None, "b": None, "c": None})
    counts = {"a": 7, "b": 1, "c": 0}
    for _, to in moves:
        counts["a"] -= 1
        counts[to] += 1
    assert max(counts.values()) - min(counts.values()) <= 1
    assert len(moves) == 4


def test_respects_capacity_and_unmovable_tenants() -> None:
    # b is full at 2: nothing goes there; c only takes one before the difference is one
    assert plan({"a": 4, "b": 2, "c": 2}, {"a": ["x", "y"]}, {"a": None, "b": 2, "c": None}) == [("y", "c")]
    # the fullest server has nothing movable (adopted tenants): no move
    assert plan({"a": 4, "b": 0}, {}, {"a": None, "b": None}) == []
    # only the servers given (a draining one is left out by the caller)
    assert plan({"a": 4, "b": 0, "d": 9}, {"a": ["p", "q"], "d": ["z"]}, {"a": None, "b": None}) == [
        ("q", "b"),
        ("p", "b"),
    ]
