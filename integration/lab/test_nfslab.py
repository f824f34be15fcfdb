"""nfslab's reading of the client's capture (no VM needed): which resets were refusals."""

from __future__ import annotations

from nfslab import count_resets

C, V = "10.77.1.13", "10.77.1.100"
CAPTURE = f"""\
21:00:01.000000 IP {C}.801 > {V}.2049: Flags [S], seq 1, win 64240, length 0
21:00:01.000100 IP {V}.2049 > {C}.801: Flags [R.], seq 0, ack 2, win 0, length 0
21:00:02.000000 IP {C}.802 > {V}.2049: Flags [S], seq 5, win 64240, length 0
21:00:02.000100 IP {V}.2049 > {C}.802: Flags [S.], seq 9, ack 6, win 65160, length 0
21:00:03.000000 IP {V}.2049 > {C}.700: Flags [R], seq 77, win 0, length 0
21:00:04.000000 IP {V}.2049 > {C}.802: Flags [R], seq 10, win 0, length 0
tcpdump: 6 packets captured
"""


def test_a_reset_answering_a_syn_is_a_refusal_any_other_a_reset() -> None:
    # 801: SYN answered by RST (refused); 700: a connection from before the capture, reset;
    # 802: connected (SYN-ACK), later reset.
    assert count_resets(CAPTURE) == (1, 2)


def test_nothing_captured() -> None:
    assert count_resets("") == (0, 0)
