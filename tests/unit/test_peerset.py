"""PeerSet behaves as a set of ints, and stays small where a set is not."""

from __future__ import annotations

import sys

from hypothesis import given
from hypothesis import strategies as st

from outpost_server.control.peerset import PeerSet

OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "discard"]),
        st.one_of(st.integers(-20, 300), st.integers(0, 10**7)),
    ),
    max_size=200,
)


@given(st.sets(st.integers(-(10**6), 10**9)), OPS, st.integers(-(10**6), 10**9))
def test_behaves_like_a_set(initial: set[int], ops: list[tuple[str, int]], probe: int) -> None:
    model = set(initial)
    ps = PeerSet(initial)
    for op, v in ops:
        getattr(model, op)(v)
        getattr(ps, op)(v)
        assert len(ps) == len(model)
    assert list(ps) == sorted(model)
    assert (probe in ps) == (probe in model)
    assert set(ps - {probe}) == model - {probe}
    ps.difference_update(list(model)[:3])
    model.difference_update(list(model)[:3])
    assert ps == model


def test_a_full_mesh_of_1000_takes_bits_not_a_hash_table() -> None:
    ids = range(1, 1001)
    ps = PeerSet(ids)
    assert ps.nbytes() <= 1000 // 8 + 1
    assert sys.getsizeof(set(ids)) > 200 * ps.nbytes()


def test_sparse_ids_use_the_sorted_form_and_come_back_to_bits_when_dense() -> None:
    ps = PeerSet(range(0, 10**5, 10**4))  # 10 ids over a range of 10^5
    assert ps.nbytes() == 8 * 10
    for v in range(1, 10**4):
        ps.add(v)
    assert ps.nbytes() <= 10**5 // 8 + 1 < 8 * len(ps)  # a bitmap now
    assert len(ps) == 10 + 9999 and 9999 in ps and 5 * 10**4 in ps and 10**4 + 1 not in ps


def test_non_int_members_are_simply_absent() -> None:
    assert "1" not in PeerSet([1])


def test_an_id_far_from_the_others_never_allocates_the_gap() -> None:
    ps = PeerSet([75_842_566])
    ps.add(0)
    ps.add(2**40)
    assert ps.nbytes() == 8 * 3
    assert list(ps) == [0, 75_842_566, 2**40]
