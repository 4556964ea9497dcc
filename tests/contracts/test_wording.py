"""The shape of a long list in a one-line message (contracts.wording.first_few)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from contracts.wording import first_few

WORDS = st.lists(st.text(alphabet="abcxyz", min_size=1, max_size=4), max_size=20)


@given(WORDS, st.integers(min_value=1, max_value=8))
def test_the_first_items_are_named_and_the_rest_counted(items: list[str], shown: int) -> None:
    """Every item is either named or counted in `and N more`, never both, never neither."""
    line = first_few(items, shown, "; ")
    named, _, more = line.partition(" and ")
    assert named.split("; ") == (items[:shown] or [""])
    assert more == (f"{len(items) - shown} more" if len(items) > shown else "")


def test_a_list_just_over_the_limit_counts_one_more() -> None:
    """Six files with five shown: five named, `and 1 more`; five shown in full."""
    assert first_few(["a", "b", "c", "d", "e", "f"]) == "a, b, c, d, e and 1 more"
    assert first_few(["a", "b", "c", "d", "e"]) == "a, b, c, d, e"
