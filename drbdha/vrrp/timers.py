"""RFC timer formulas, in seconds. Pure functions of priority and interval.

RFC 3768 §6.1 (v2): Skew_Time = (256 - Priority) / 256 seconds, independent of the interval.
RFC 5798 §6.1 (v3): Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256.
Both: Master_Down_Interval = 3 * interval + Skew_Time.
"""

from __future__ import annotations


def skew_time(version: int, priority: int, master_adver_interval: float) -> float:
    if version == 2:
        return (256 - priority) / 256
    return (256 - priority) * master_adver_interval / 256


def master_down_interval(version: int, priority: int, master_adver_interval: float) -> float:
    return 3 * master_adver_interval + skew_time(version, priority, master_adver_interval)
