"""Slow, idempotent actions on the kernel and its tools (DRBD, mounts, nfsd).

Never imports vrrp/ or net/.
"""
