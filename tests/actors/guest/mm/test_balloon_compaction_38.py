"""The balloon compaction core of Linux 3.8 (actors.guest.mm.balloon_compaction_38), function by
function, on a bare kernel and page-frame array: what each translated function does, defects
included (the movable test that fails for locked and isolated pages, the lockless dequeue)."""

from __future__ import annotations

import pytest
import trio

from actors.guest.mm import pages as P
from actors.guest.mm.balloon_compaction import EAGAIN, BalloonError
from actors.guest.mm.balloon_compaction_38 import (
    MIGRATEPAGE_BALLOON_SUCCESS,
    BalloonDevInfo,
    balloon_page_isolate,
    balloon_page_movable,
    balloon_page_putback,
    page_flags_cleared,
)
from actors.guest.mm.pages import PageFrames, PageList
from tests.actors.kernel.conftest import Rig, make_rig


class _Aops:
    """A stand-in for the driver's migratepage (records its calls)."""

    def __init__(self) -> None:
        self.last_hs: dict[int, int] = {}
        self.calls: list[tuple[int, int]] = []

    async def virtballoon_migratepage(self, newpage: int, page: int, mode: int) -> int:
        self.calls.append((newpage, page))
        return MIGRATEPAGE_BALLOON_SUCCESS

    def migratepage_gives_up(self) -> bool:
        return False


def _devinfo(rig: Rig, n: int = 512) -> tuple[PageFrames, BalloonDevInfo]:
    frames = PageFrames(n)
    for p in range(n):  # what alloc_page() leaves: one reference, owned by the balloon
        frames.refcount[p] = 1
        frames.mapping[p] = P.OWNER_BALLOON
    return frames, BalloonDevInfo(rig.kernel, frames, PageList(frames), _Aops())


def test_balloon_page_movable_wants_clear_flags_one_reference_and_the_mapping() -> None:
    """balloon_page_movable(): true only for an unlocked, unmapped, once-referenced page with
    the balloon mapping -- so false for a page under the page lock and for an isolated one."""
    frames = PageFrames(512)
    frames.refcount[0] = 1
    frames.flags[0] = P.PG_balloon
    assert page_flags_cleared(frames, 0) and balloon_page_movable(frames, 0, False)
    assert not balloon_page_movable(frames, 0, True)  # page_mapped()
    frames.flags[0] |= P.PG_locked
    assert not page_flags_cleared(frames, 0) and not balloon_page_movable(frames, 0, False)
    frames.flags[0] = P.PG_balloon | P.PG_isolated
    frames.refcount[0] = 2  # isolated: compaction's reference
    assert page_flags_cleared(frames, 0) and not balloon_page_movable(frames, 0, False)
    frames.flags[0], frames.refcount[0] = 0, 1
    assert not balloon_page_movable(frames, 0, False)  # no balloon mapping


def test_enqueue_then_dequeue_takes_an_extra_reference() -> None:
    """balloon_page_enqueue() puts the page on the list with the mapping, unlocked;
    balloon_page_dequeue() takes the first lockable page off with get_page() (refcount 2)."""
    rig = make_rig(level="info")
    frames, info = _devinfo(rig)

    async def main() -> None:
        with rig.kernel.task("vballoon"):
            for p in (3, 4, 5):
                assert await info.balloon_page_enqueue(p) == p
            assert list(info.pages.pfns()) == [5, 4, 3]
            assert all(frames.flags[p] == P.PG_balloon for p in (3, 4, 5))
            frames.flags[5] |= P.PG_locked  # someone else holds the head's page lock
            assert await info.balloon_page_dequeue() == 4  # skipped, not waited for
            assert frames.refcount[4] == 2 and not frames.flags[4] & P.PG_balloon
            assert list(info.pages.pfns()) == [5, 3]

    trio.run(main)


def test_dequeue_returns_none_while_pages_are_isolated_and_bugs_when_none_are() -> None:
    """Nothing lockable: NULL if pages are isolated (they will come back), BUG() if the list
    is empty and nothing is isolated (balloon pages were lost)."""
    rig = make_rig(level="info")
    _, info = _devinfo(rig)

    async def main() -> None:
        with rig.kernel.task("vballoon"):
            info.isolated_pages = 1
            assert await info.balloon_page_dequeue() == -1
            info.isolated_pages = 0
            with pytest.raises(BalloonError, match="lost"):
                await info.balloon_page_dequeue()

    trio.run(main)


def test_isolate_and_putback_move_the_page_and_the_counter() -> None:
    """balloon_page_isolate(): off the list, isolated_pages++, a reference held;
    balloon_page_putback(): back on the list, isolated_pages--, the reference dropped."""
    rig = make_rig(level="info")
    frames, info = _devinfo(rig)

    async def main() -> None:
        with rig.kernel.task("compact"):
            await info.balloon_page_enqueue(7)
            assert await balloon_page_isolate(rig.kernel, frames, info, 7)
            assert info.pages.list_empty() and info.isolated_pages == 1
            assert frames.refcount[7] == 2
            assert not await balloon_page_isolate(rig.kernel, frames, info, 7)  # count 3 != 2
            assert frames.refcount[7] == 2
            assert await balloon_page_putback(rig.kernel, frames, info, 7)
            assert list(info.pages.pfns()) == [7] and info.isolated_pages == 0
            assert frames.refcount[7] == 1

    trio.run(main)


def test_migratepage_goes_to_the_mapping_a_ops() -> None:
    """__migrate_balloon_page(): the mapping's a_ops->migratepage, the driver's return code."""
    rig = make_rig(level="info")
    _, info = _devinfo(rig)
    aops = info.a_ops
    assert isinstance(aops, _Aops)

    async def main() -> None:
        with rig.kernel.task("compact"):
            assert await info.virtballoon_migratepage(2, 1, 0) == MIGRATEPAGE_BALLOON_SUCCESS

    trio.run(main)
    assert aops.calls == [(2, 1)] and EAGAIN == 11


def test_lockless_dequeue_walk_oopses_on_a_page_isolated_under_it() -> None:
    """balloon_page_dequeue() walks the list without pages_lock: a page another CPU isolates
    between the walk reading it as ``tmp`` and following it is a LIST_POISON dereference."""
    rig = make_rig(level="info")
    k = rig.kernel
    frames, info = _devinfo(rig)
    sites: list[str] = []

    async def other_cpu_isolates_2(site: str) -> None:
        sites.append(site)
        if len(sites) == 1:  # the walk is at the head (3) and has saved tmp = 2
            info.pages.list_del(2)
            info.isolated_pages += 1

    async def main() -> None:
        with k.task("vballoon"):
            for p in (1, 2, 3):
                await info.balloon_page_enqueue(p)
            frames.flags[3] |= P.PG_locked  # the head cannot be locked: the walk goes on
            k.preempt = other_cpu_isolates_2  # type: ignore[method-assign]
            with pytest.raises(BalloonError, match="LIST_POISON"):
                await info.balloon_page_dequeue()

    trio.run(main)
    assert sites == ["balloon_page_dequeue"]
