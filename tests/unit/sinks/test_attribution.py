"""Which aliases and accounts a batch can re-attribute, and where merge chains end."""

from __future__ import annotations

from clickhouse_connect.driver.binding import format_bind_value
from hypothesis import given
from hypothesis import strategies as st

from journeys.schemas.rows import IdentityLink, Output, StoredEvent
from journeys.sinks.clickhouse.attribution import (
    Candidates,
    StringArray,
    candidates,
    follow_merges,
)
from journeys.sinks.reference import attributed_account
from tests.unit.engine.journey import ev


def test_candidates_take_linked_aliases_unattributed_events_aliases_and_accounts() -> None:
    out = Output(
        events=[
            StoredEvent(ev("page_view", 0, anonymous_id="v2", email="j@b.nl"), None),
            StoredEvent(ev("page_view", 0, anonymous_id="v3", contact_id="c3"), "acme"),
            StoredEvent(ev("page_view", 0, contact_id="c1"), None),
        ],
        links=[
            IdentityLink("anonymous_id", "v1", "acme", 1),
            IdentityLink("email", "j@b.nl", "b.nl", 1),
            IdentityLink("account", "b.nl", "erp-2", 1),
        ],
    )
    assert candidates(out) == Candidates(
        aliases={"contact_id": ["c1"], "anonymous_id": ["v1", "v2"], "email": ["j@b.nl"]},
        merged=["b.nl"],
        accounts=["acme"],
    )


def test_an_empty_batch_has_nothing_to_re_attribute() -> None:
    assert not candidates(Output())
    assert candidates(Output(links=[IdentityLink("account", "a", "b", 0)]))


def test_chains_end_at_the_last_account_with_the_latest_link_time() -> None:
    merges = {"a": ("b", 50), "b": ("c", 10), "c": ("d", 20), "x": ("y", 5)}
    assert follow_merges(merges) == {
        "a": ("d", 50),
        "b": ("d", 20),
        "c": ("d", 20),
        "x": ("y", 5),
    }


def test_a_loop_stops_where_the_reference_stops() -> None:
    # attributed_account: a -> b -> a, stop at the account seen before: a stays a.
    assert follow_merges({"a": ("b", 1), "b": ("a", 2)}) == {}
    assert follow_merges({"s": ("a", 1), "a": ("b", 1), "b": ("a", 2)}) == {"s": ("a", 2)}


@given(
    st.dictionaries(
        st.sampled_from("abcdef"), st.tuples(st.sampled_from("abcdef"), st.integers(0, 9))
    )
)
def test_chains_agree_with_the_reference_on_any_merge_graph(
    merges: dict[str, tuple[str, int]],
) -> None:
    links = {
        ("account", a): IdentityLink("account", a, into, at) for a, (into, at) in merges.items()
    }
    moves = follow_merges(merges)
    for account in "abcdef":
        row = StoredEvent(ev("page_view", 0, account_id=account), account)
        assert moves.get(account, (account, 0))[0] == attributed_account(row, links)


@given(st.lists(st.text(max_size=6)))
def test_string_arrays_bind_exactly_as_the_driver_binds_a_list(values: list[str]) -> None:
    assert format_bind_value(StringArray(values)) == format_bind_value(values)
