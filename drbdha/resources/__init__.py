"""Slow, idempotent actions on the kernel and its tools (DRBD, mounts, nfsd).

Never imports vrrp/ or net/: what a step needs of the network (the NFS clients step's
tickles, the nfsd check's listening port) is passed in by the chain's composition.
"""
