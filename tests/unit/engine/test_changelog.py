"""A changelog's records make the state a save at a time: a save cut short counts for
nothing (`journeys.streams.changelog.committed`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from journeys.streams.changelog import Committed, committed
from journeys.streams.engine.store import MemoryStore

META = b"m:stage"


def test_records_count_once_their_save_is_committed() -> None:
    records = [
        (b"h:a", b"1"), (b"h:b", b"1"), (META, b"{offset: 1}"),
        (b"h:a", b"2"), (b"h:b", None), (META, b"{offset: 2}"),
        (b"h:a", b"3"), (b"x:a", b"9"),  # a save cut short: no commit record
    ]  # fmt: skip
    state, torn = committed(records, META)
    assert state == {b"h:a": b"2", META: b"{offset: 2}"}
    assert torn == {b"h:a", b"x:a"}


def test_saves_read_into_a_store_make_the_same_state_and_leave_a_cut_save_out() -> None:
    """With journeys on disk the state goes to the store a save at a time (`load_into`)."""
    records = [
        (b"h:a", b"1"), (b"h:b", b"1"), (META, b"{offset: 1}"),
        (b"h:a", b"2"), (b"h:b", None), (META, b"{offset: 2}"),
        (b"h:a", b"3"), (b"x:a", b"9"),  # a save cut short: no commit record
    ]  # fmt: skip
    store = MemoryStore()
    applied = Committed(META, store)
    for key, value in records:
        applied.add(key, value)
    assert store.records == committed(records, META)[0] and applied.state == {}
    assert applied.torn == {b"h:a", b"x:a"}


def test_a_log_with_no_committed_save_is_empty() -> None:
    assert committed([(b"h:a", b"1")], META) == ({}, {b"h:a"})
    assert committed([], META) == ({}, set())


def test_a_repair_written_after_a_cut_save_restores_the_saved_values() -> None:
    """What `Changelog.load` writes after a save cut short (the keys' saved values, then
    the commit key) makes the cut records count for nothing, in any later load."""
    records: list[tuple[bytes, bytes | None]] = [
        (b"h:a", b"1"), (META, b"m1"), (b"h:a", b"2"), (b"h:b", b"2"),
    ]  # fmt: skip
    state, torn = committed(records, META)
    repair: list[tuple[bytes, bytes | None]] = [(key, state.get(key)) for key in sorted(torn)]
    later: list[tuple[bytes, bytes | None]] = [(META, state[META]), (b"h:c", b"3"), (META, b"m3")]
    assert committed(records + repair + later, META) == (
        {b"h:a": b"1", b"h:c": b"3", META: b"m3"},
        set(),
    )


saves = st.lists(
    st.dictionaries(
        st.sampled_from([b"h:a", b"h:b", b"h:c", b"x:a"]),
        st.one_of(st.none(), st.binary(max_size=3)),
        max_size=4,
    ),
    max_size=6,
)


@given(saves, st.data())
def test_a_log_cut_anywhere_gives_the_state_of_the_last_whole_save(
    changes: list[dict[bytes, bytes | None]], data: st.DataObject
) -> None:
    log: list[tuple[bytes, bytes | None]] = []
    states: list[dict[bytes, bytes]] = [{}]
    for i, change in enumerate(changes):
        log += [*change.items(), (META, str(i).encode())]
        state = {**states[-1], **{k: v for k, v in change.items() if v is not None}}
        states.append({k: v for k, v in state.items() if change.get(k, b"") is not None})
        states[-1][META] = str(i).encode()
    cut = data.draw(st.integers(0, len(log)))
    ends = [i + 1 for i, (key, _) in enumerate(log) if key == META and i < cut]
    assert committed(log[:cut], META)[0] == states[len(ends)]
