"""A replica whose queue builders run in a child process lends it part of its connection budget: the two together
stay within the replica's share, and a server too small for both refuses the start saying why."""

from __future__ import annotations

import pytest

from service.errors import ConnectionBudgetTooSmall
from service.store.budget import MIN_FREE, Budgets, builder_ceiling


def test_the_builder_is_lent_its_ceiling_out_of_the_share() -> None:
    lent = builder_ceiling(2)
    assert lent == 3 + 2 + MIN_FREE  # catalog pool, admin pool, tenant work
    budget = Budgets(0.5, lent=lent).of("postgresql://db:5432/x", "default")
    budget.learn(40, 3)  # 37 usable, half of it 18
    assert budget.ceiling == 18 - lent
    budget.reserve_pool(3, "catalog pool")
    with pytest.raises(ConnectionBudgetTooSmall, match="lent to the queue's builder process"):
        budget.reserve_pool(3, "admin pool")


def test_a_fixed_ceiling_is_shared_too() -> None:
    budget = Budgets(ceiling=30, lent=builder_ceiling(4)).of("postgresql://db:5432/x", "default")
    assert budget.ceiling == 30 - (5 + 4 + 4)
    assert Budgets(ceiling=30).of("postgresql://db:5432/x", "default").ceiling == 30
