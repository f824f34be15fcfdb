"""DRBD fencing through drbdha: the peer channel on the service network.

DRBD calls a fence-peer handler when it must make sure the peer's copy cannot be promoted:
a Primary that lost the replication link (with `fencing resource-and-stonith` its I/O is
frozen until the handler returns), or a Secondary promoting while the peer is unknown.
`drbdha fence-peer` (handler.py) asks the peer's drbdha (server.py) over the network VRRP
runs on, not DRBD's link, to mark its copy Outdated, and exits with the code DRBD defines
for what it learned. Messages are authenticated with a shared secret (wire.py).
"""
