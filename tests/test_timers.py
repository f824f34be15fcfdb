"""RFC timer formulas against the worked numbers of performance.md §1.1 and the RFCs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drbdha.vrrp.timers import master_down_interval, skew_time

# performance.md §1.1 table "Master_Down_Interval for common settings", in ms as printed
# (rounded to 0.1 ms), with the exact value the formula gives. A is the advert interval.
MDI_TABLE = [
    # version, A (s), P, printed ms, exact s
    (2, 1.0, 100, 3609.4, 3 + 156 / 256),
    (2, 1.0, 200, 3218.8, 3 + 56 / 256),
    (2, 1.0, 254, 3007.8, 3 + 2 / 256),
    (3, 1.0, 100, 3609.4, 3 + 156 / 256),
    (3, 1.0, 200, 3218.8, 3 + 56 / 256),
    (3, 1.0, 254, 3007.8, 3 + 2 / 256),
    (3, 0.1, 100, 360.9, 0.3609375),
    (3, 0.1, 200, 321.9, 0.321875),
    (3, 0.1, 254, 300.8, 0.30078125),
    (3, 0.01, 100, 36.1, 0.036093750),
    (3, 0.01, 200, 32.2, 0.0321875),
    (3, 0.01, 254, 30.1, 0.030078125),
]


@pytest.mark.parametrize(("version", "interval", "priority", "printed_ms", "exact"), MDI_TABLE)
def test_master_down_interval_table(
    version: int, interval: float, priority: int, printed_ms: float, exact: float
) -> None:
    mdi = master_down_interval(version, priority, interval)
    assert mdi == pytest.approx(exact, rel=1e-12)
    assert round(mdi * 1000, 1) == printed_ms


@pytest.mark.parametrize(
    ("interval", "priority", "low_ms", "high_ms"),
    [
        (1.0, 100, 2609, 3609),
        (0.1, 100, 260.9, 360.9),
        (0.01, 100, 26.1, 36.1),
        (0.01, 254, 20.1, 30.1),
    ],
)
def test_detection_window(interval: float, priority: int, low_ms: float, high_ms: float) -> None:
    # The MDI counts from the last advert heard, so detection after the failure itself falls
    # in (MDI - A, MDI]: the table's "window" column.
    mdi = master_down_interval(3, priority, interval)
    assert round((mdi - interval) * 1000, 1) == pytest.approx(low_ms, abs=0.5)
    assert round(mdi * 1000, 1) == pytest.approx(high_ms, abs=0.5)


@pytest.mark.parametrize(
    ("version", "priority", "interval", "skew"),
    [
        (2, 100, 1.0, 0.609375),  # v2 graceful stop: takeover after 609.4 ms (§1.2, #1206)
        (2, 100, 5.0, 0.609375),  # v2 skew does not scale with the interval (RFC 3768 §6.1)
        (2, 255, 1.0, 1 / 256),  # the address owner waits least
        (2, 1, 1.0, 255 / 256),
        (3, 100, 0.1, 0.0609375),  # v3 graceful stop at 100 ms: 60.9 ms
        (3, 100, 1.0, 0.609375),
        (3, 200, 1.0, 0.21875),  # FRR prints 210 ms (whole cs); exact is 218.75 ms
        (3, 254, 0.01, 0.000078125),
        (3, 255, 40.95, 40.95 / 256),
    ],
)
def test_skew_time(version: int, priority: int, interval: float, skew: float) -> None:
    assert skew_time(version, priority, interval) == pytest.approx(skew, rel=1e-12)


def test_v2_graceful_stop_matches_measured_keepalived() -> None:
    # performance.md §1.2: keepalived took over 609.7 ms after SIGTERM (theory 609.4).
    assert round(skew_time(2, 100, 1.0) * 1000, 1) == 609.4
    assert round(skew_time(3, 100, 0.1) * 1000, 1) == 60.9


def test_frr_integer_skew_is_within_one_centisecond() -> None:
    # performance.md §1.1: FRR's whole-centisecond skew (P=200, A=1000 ms -> 210 ms, MDI
    # 3210 ms) differs from the exact value by less than 1 cs.
    frr_skew_cs = (256 - 200) * 100 // 256
    assert frr_skew_cs == 21
    exact = skew_time(3, 200, 1.0)
    assert 0 <= exact - frr_skew_cs / 100 < 0.01
    assert 0 <= master_down_interval(3, 200, 1.0) - 3.210 < 0.01


def test_textbook_figure() -> None:
    # "the failover will happen at most 3.6 seconds after the master goes down" (A=1 s, P=100)
    assert master_down_interval(2, 100, 1) == pytest.approx(3.609375)
    assert round(master_down_interval(2, 100, 1), 1) == 3.6


priorities = st.integers(1, 255)
v3_intervals = st.integers(1, 4095).map(lambda cs: cs / 100)


@given(priorities, v3_intervals)
def test_mdi_is_three_intervals_plus_skew(priority: int, interval: float) -> None:
    for version in (2, 3):
        mdi = master_down_interval(version, priority, interval)
        skew = skew_time(version, priority, interval)
        assert mdi == pytest.approx(3 * interval + skew)
        assert 3 * interval < mdi


@given(priorities, v3_intervals)
def test_v3_skew_is_below_one_interval(priority: int, interval: float) -> None:
    skew = skew_time(3, priority, interval)
    assert 0 < skew < interval
    assert skew == pytest.approx(skew_time(2, priority, 1.0) * interval)


@given(st.integers(1, 254), v3_intervals)
def test_higher_priority_takes_over_first(priority: int, interval: float) -> None:
    # The point of the skew: of two backups, the higher priority's timer fires first.
    for version in (2, 3):
        assert master_down_interval(version, priority + 1, interval) < master_down_interval(
            version, priority, interval
        )
