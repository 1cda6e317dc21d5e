"""The mm side of the series (patches 1/5 and 2/5): balloon page mapping and mobility helpers.

mm/balloon_compaction.c and include/linux/balloon_compaction.h as of v9. A balloon page is
recognised by its ``page->mapping`` being the balloon's special address space (here: the
``PG_balloon`` flag, set by ``assign_balloon_mapping``). Compaction workers call
``isolate_balloon_page`` / ``balloon_page_migrate`` / ``putback_balloon_page``; those call the
driver's ``a_ops`` callbacks (``virtballoon_isolatepage`` / ``_migratepage`` /
``_putbackpage``) with the page lock held, in the compaction worker's own task.

Preemption points precede each read of shared state outside the lock that protects it
(``isolate_balloon_page``: the reference on the caller's lockless test, the page lock, and the
``page_count`` re-check, which the page lock does not protect); ``putback_balloon_page`` and
``balloon_page_migrate`` read the mapping under the page lock and have none.
"""

from __future__ import annotations

from typing import Any, Protocol

from actors.guest.mm import pages as P
from actors.guest.mm.pages import PageFrames
from actors.kernel.kernel import Kernel
from actors.kernel.locks import lock_page, trylock_page, unlock_page

#: virtballoon_migratepage's return: "balloon migrated", mm then frees the old page.
BALLOON_MIGRATION_RETURN = 0xBA1100
EAGAIN = 11  # Linux errno values: migration returns them negated
ENOMEM = 12


class BalloonAops(Protocol):
    """The balloon mapping's address_space_operations (DEFINE_BALLOON_MAPPING_AOPS), plus the
    handshake ids of the driver's latest tell_host per queue (to link a migration's two)."""

    @property
    def last_hs(self) -> dict[int, int]: ...

    @property
    def warn_on_lost_page(self) -> bool:
        """Whether the balloon core WARNs when a page it took a reference to stopped being a
        balloon page before it got the page lock (the v9 series does; 3.8 dropped it)."""
        ...

    async def virtballoon_isolatepage(self, page: int, mode: int) -> None: ...

    async def virtballoon_migratepage(self, newpage: int, page: int, mode: int) -> int: ...

    async def virtballoon_putbackpage(self, page: int) -> None: ...

    def migratepage_gives_up(self) -> bool:
        """FAST PATH (not in the C): whether ``virtballoon_migratepage`` would return
        -EAGAIN right now without touching anything (see ``balloon_page_migrate_fails``)."""
        ...


class BalloonError(RuntimeError):
    """A WARN()/BUG() in the mm-side helpers."""


def assign_balloon_mapping(frames: PageFrames, page: int) -> None:
    """page->mapping = balloon mapping; smp_mb();"""
    frames.flags[page] |= P.PG_balloon
    frames.mapping[page] = P.OWNER_BALLOON


def clear_balloon_mapping(frames: PageFrames, page: int) -> None:
    """page->mapping = NULL; smp_mb();  (the page is still the driver's until freed)"""
    frames.flags[page] &= ~P.PG_balloon


def __is_movable_balloon_page(frames: PageFrames, page: int) -> bool:
    """mapping_balloon(ACCESS_ONCE(page->mapping)): lockless, re-check under the page lock."""
    return bool(frames.flags[page] & P.PG_balloon)



def get_page_unless_zero(frames: PageFrames, page: int) -> bool:
    """Take a reference unless the page is free (refcount 0)."""
    if frames.refcount[page] == 0:
        return False
    frames.refcount[page] += 1
    return True


def put_page(frames: PageFrames, page: int) -> None:
    """Drop a reference (never the last one here: mm frees balloon pages explicitly)."""
    if frames.refcount[page] <= 1:
        raise BalloonError(f"put_page: pfn {page} refcount {frames.refcount[page]}")
    frames.refcount[page] -= 1


async def isolate_balloon_page(kernel: Kernel, frames: PageFrames, vb: BalloonAops,
                               page: int) -> bool:
    """isolate_balloon_page(): take a movable balloon page off the driver's list for migration.

    Its C steps are separate, with a scheduling point between each, as another CPU can act
    between them: the caller's lockless ``balloon_page_movable()`` test,
    ``get_page_unless_zero``, ``trylock_page`` and the re-check under the page lock (the lock
    does not protect ``page_count``: other compactors take references without it). The
    re-check's ``dump_page(); __WARN();`` branch (the page stopped being a balloon page
    meanwhile: leaked by the driver) is reachable.
    """
    await kernel.preempt("isolate_balloon_page")  # after the lockless movable test
    # if (likely(get_page_unless_zero(page))) {
    if get_page_unless_zero(frames, page):
        await kernel.preempt("isolate_balloon_page")
        # if (likely(trylock_page(page))) {
        if trylock_page(kernel, frames, page):
            await kernel.preempt("isolate_balloon_page")  # page_count(): not the lock's
            # if (__is_movable_balloon_page(page) && (page_count(page) == 2)) {
            if __is_movable_balloon_page(frames, page) and frames.refcount[page] == 2:
                # __isolate_balloon_page(page): mapping->a_ops->invalidatepage(page, 0)
                await vb.virtballoon_isolatepage(page, 0)
                frames.flags[page] |= P.PG_isolated
                unlock_page(kernel, frames, page)
                return True
            # } else if (unlikely(!__is_movable_balloon_page(page))) {
            if vb.warn_on_lost_page and not __is_movable_balloon_page(frames, page):
                # dump_page(page); __WARN();
                kernel.warn("isolate_balloon_page", "page is no longer a movable balloon page",
                            dump_page(frames, page))
            unlock_page(kernel, frames, page)
        # /* The page is either under migration, or it's isolated already. */
        put_page(frames, page)  # drop the reference we took above
    return False


def dump_page(frames: PageFrames, page: int) -> dict[str, Any]:
    """What dump_page() prints of a page: pfn, flags, count and mapping."""
    owner = frames.mapping[page]
    return {"pfn": page, "flags": P.page_flag_names(int(frames.flags[page])),
            "count": int(frames.refcount[page]),
            "mapping": P.OWNER_NAMES[owner] if owner < len(P.OWNER_NAMES) else owner}


async def putback_balloon_page(kernel: Kernel, frames: PageFrames, vb: BalloonAops,
                               page: int) -> None:
    """putback_balloon_page(): return an isolated, unmigrated page to the driver's list."""
    await lock_page(kernel, frames, page)  # lock_page(page);  (may sleep)
    if __is_movable_balloon_page(frames, page):
        frames.flags[page] &= ~P.PG_isolated
        await vb.virtballoon_putbackpage(page)  # __putback_balloon_page(page)
        put_page(frames, page)  # put_page(page);
    else:
        unlock_page(kernel, frames, page)
        raise BalloonError(f"putback_balloon_page: pfn {page} is not a balloon page")  # __WARN()
    unlock_page(kernel, frames, page)


async def balloon_page_migrate(kernel: Kernel, frames: PageFrames, vb: BalloonAops,
                               newpage: int, page: int, mode: int = 0) -> int:
    """balloon_page_migrate(): the driver's migratepage, under both page locks.

    The caller holds the old page's lock; ``newpage`` is a free page compaction captured.
    Returns the driver's code (BALLOON_MIGRATION_RETURN) or -EAGAIN.
    """
    # BUG_ON(!trylock_page(newpage));
    if not trylock_page(kernel, frames, newpage):
        raise BalloonError(f"balloon_page_migrate: newpage {newpage} already locked")
    # if (WARN_ON(!__is_movable_balloon_page(page))) { ...; return -EAGAIN; }
    if not __is_movable_balloon_page(frames, page):
        unlock_page(kernel, frames, newpage)
        return -EAGAIN
    rc = await vb.virtballoon_migratepage(newpage, page, mode)
    unlock_page(kernel, frames, newpage)  # unlock_page(newpage);
    return rc


def balloon_page_migrate_fails(frames: PageFrames, vb: BalloonAops, page: int) -> bool:
    """FAST PATH (not in the C): whether ``balloon_page_migrate`` would return -EAGAIN at
    once, having done nothing but lock and unlock the new page (the caller accounts that)."""
    return not __is_movable_balloon_page(frames, page) or vb.migratepage_gives_up()


def balloon_page_migrate_fail_ops(frames: PageFrames, page: int) -> int:
    """FAST PATH (not in the C): the lock operations of a ``balloon_page_migrate`` that
    ``balloon_page_migrate_fails``: trylock and unlock of the new page, and the driver's
    failed ``mutex_trylock`` when the page was still movable (so it was asked)."""
    return 3 if __is_movable_balloon_page(frames, page) else 2
