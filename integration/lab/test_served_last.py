"""The campaign's split-brain repair keeps the copy the clients wrote to last
(invariants.Sampler.served_last; no VM needed)."""

from __future__ import annotations

from invariants import Sampler


def sampler(fault: int = 74) -> Sampler:
    s = Sampler(None)  # type: ignore[arg-type]  (served_last needs no lab)
    s.fault = fault
    return s


def test_an_isolated_node_serving_again_after_the_heal_is_the_one_written_to() -> None:
    # Seed 100 fault 74: node2 (master) isolated, node1's service link cut; node1 takes
    # over alone; at the heal both hold the VIP, then node1 yields and node2 serves.
    s = sampler()
    s.note_serving(frozenset({"node2"}))
    s.cut_off = frozenset({"node2"})
    s.note_serving(frozenset({"node2"}))  # isolated: no client reaches it
    s.cut_off = frozenset({"node1", "node2"})  # node1's service link cut too
    s.note_serving(frozenset({"node1", "node2"}))
    assert s.served_last(74) == "node2"  # the last server clients reached: before the cut
    s.cut_off = frozenset()  # the heal
    s.note_serving(frozenset({"node1", "node2"}))
    s.note_serving(frozenset({"node2"}))
    assert s.served_last(74) == "node2"


def test_a_node_serving_only_while_cut_off_is_not_the_one_written_to() -> None:
    # Seed 100 fault 5: the isolated master served unreached while node2 took over.
    s = sampler(5)
    s.note_serving(frozenset({"node1"}))
    s.cut_off = frozenset({"node1"})
    s.note_serving(frozenset({"node1", "node2"}))
    s.note_serving(frozenset({"node1"}))
    assert s.served_last(5) == "node2"
    assert s.served_last(4) is None
