"""Two namespaces joined by one veth (a0 in a, b0 in b), a with 10.9.0.1/24: the set-up of the
net/ adapter tests that need a peer on the wire."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from netns import Lab


@contextlib.contextmanager
def veth_pair(b_address: str | None = None) -> Iterator[tuple[Lab, str, str]]:
    """(lab, a, b); b gets `b_address` (address/prefix) on b0 when one is given."""
    with Lab() as lab:
        a, b = lab.add_ns("a"), lab.add_ns("b")
        lab.veth(a, "a0", b, "b0")
        lab.ip(a, "addr add 10.9.0.1/24 dev a0")
        if b_address is not None:
            lab.ip(b, f"addr add {b_address} dev b0")
        yield lab, a, b
