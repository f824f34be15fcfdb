"""drbdha: a storage-aware VRRP failover daemon for DRBD-replicated NFS servers."""

__version__ = "0.1.0"
