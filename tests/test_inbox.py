"""The inbox: events in order, None once the deadline has passed, the timerfd under it."""

from __future__ import annotations

import asyncio
import select
import socket
import time

from drbdha.daemon.inbox import Inbox, TimerFd


def test_events_come_out_in_order_before_any_deadline() -> None:
    async def main() -> list[object]:
        inbox = Inbox()
        for e in ("a", "b", "c"):
            inbox.put(e)
        far = time.monotonic() + 3600
        got = [await inbox.get(far) for _ in range(3)]
        inbox.close()
        return got

    assert asyncio.run(main()) == ["a", "b", "c"]


def test_get_returns_none_only_once_the_deadline_has_passed() -> None:
    async def main() -> tuple[object, float, float]:
        inbox = Inbox()
        deadline = time.monotonic() + 0.02
        got = await inbox.get(deadline)
        woke = time.monotonic()
        inbox.close()
        return got, deadline, woke

    got, deadline, woke = asyncio.run(main())
    assert got is None
    assert woke >= deadline  # a timerfd never fires early


def test_an_event_put_by_a_callback_wakes_a_waiting_get() -> None:
    async def main() -> object:
        inbox = Inbox()
        asyncio.get_running_loop().call_soon(inbox.put, "packet")
        got = await inbox.get(None)
        inbox.close()
        return got

    assert asyncio.run(main()) == "packet"


def _get_with_a_deadline(seconds_from_now: float) -> object:
    """What a fresh inbox's get() returns with nothing put and that deadline."""

    async def main() -> object:
        inbox = Inbox()
        got = await inbox.get(time.monotonic() + seconds_from_now)
        inbox.close()
        return got

    return asyncio.run(main())


def test_a_deadline_in_the_past_returns_at_once() -> None:
    assert _get_with_a_deadline(-1) is None


def test_timerfd_fires_for_a_past_time_and_not_when_disarmed() -> None:
    timer = TimerFd()
    try:
        poller = select.poll()
        poller.register(timer.fd, select.POLLIN)
        timer.arm(time.monotonic() + 3600)
        timer.disarm()
        assert poller.poll(0) == []
        timer.arm(time.monotonic() - 1)
        assert poller.poll(1000) == [(timer.fd, select.POLLIN)]
        timer.clear()
        assert poller.poll(0) == []
    finally:
        timer.close()


def test_a_late_get_reads_what_arrived_before_it_reports_the_deadline() -> None:
    # The loop came late (its deadline passed while it was busy): an advert the kernel queued
    # meanwhile must come out before "the deadline passed", or a backup declares a live
    # master down (seen in the lab: a backup starting in a busy VM promoted for 0.2 s).
    async def main() -> object:
        loop = asyncio.get_running_loop()
        inbox = Inbox()
        r, w = socket.socketpair()
        loop.add_reader(r.fileno(), lambda: inbox.put(r.recv(16)))
        w.send(b"advert")
        time.sleep(0.01)  # noqa: ASYNC251 (busy on purpose: the reader callback has not run)
        got = await inbox.get(time.monotonic() - 0.005)
        loop.remove_reader(r.fileno())
        r.close()
        w.close()
        inbox.close()
        return got

    assert asyncio.run(main()) == b"advert"


def test_a_late_get_with_nothing_queued_still_reports_the_deadline() -> None:
    assert _get_with_a_deadline(-1.0) is None


def test_the_timer_serves_deadline_after_deadline_without_disarming() -> None:
    # The timerfd stays armed between waits (a one-shot that fired needs no disarm): every
    # deadline in a row still ends its get(), never early.
    async def main() -> list[bool]:
        inbox = Inbox()
        out = []
        deadline = time.monotonic()
        for _ in range(5):
            deadline += 0.005
            got = await inbox.get(deadline)
            out.append(got is None and time.monotonic() >= deadline)
        inbox.close()
        return out

    assert asyncio.run(main()) == [True] * 5


def test_an_event_before_the_deadline_leaves_that_deadline_armed() -> None:
    # Woken by an event, the next get() for the same deadline re-arms nothing and still
    # reports the deadline; a get() without one is not ended by the timer armed before.
    async def main() -> tuple[object, object, bool, object]:
        loop = asyncio.get_running_loop()
        inbox = Inbox()
        deadline = time.monotonic() + 0.03
        loop.call_later(0.005, inbox.put, "packet")
        first = await inbox.get(deadline)
        second = await inbox.get(deadline)
        on_time = time.monotonic() >= deadline
        loop.call_later(0.05, inbox.put, "later")
        inbox_deadline = time.monotonic() + 0.01
        third = await inbox.get(inbox_deadline)
        fourth = await inbox.get(None)
        inbox.close()
        return first, second, on_time, (third, fourth)

    first, second, on_time, rest = asyncio.run(main())
    assert (first, second, on_time) == ("packet", None, True)
    assert rest == (None, "later")
