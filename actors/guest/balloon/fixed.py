"""``v9`` with each defect our tools found corrected. Every correction is named ``FIX(...)``,
says what v9 does wrong, and is proven by a test whose scenario+seed fails on ``v9`` and passes
here (tests/actors/guest/balloon/test_fixed.py).

FIX(fill-unlock): v9's ``fill_balloon`` takes ``balloon_lock`` before allocating and, when the
  round gets no page at all ("Out of puff" on the first page), returns through ``/* Didn't get
  any? Oh well. */`` with the mutex still held. The balloon kthread's next round (or a
  compaction thread's ``virtballoon_migratepage``) then blocks on the mutex forever: lockdep
  reports recursion on ``vb->balloon_lock`` and the hung-task watchdog fires. Proven by the
  ``overcommit`` scenario. The correction is the one upstream took before merging (v3.8
  ``fill_balloon``): tell the host only if we got pages, always unlock.
"""

from __future__ import annotations

from actors.guest.balloon.common import INFLATEQ
from actors.guest.balloon.v9 import V9Balloon
from actors.kernel.lockdep import context
from protocol.balloon import VIRTIO_BALLOON_ARRAY_PFNS_MAX


class FixedBalloon(V9Balloon):
    """The seed patch with its defects corrected."""

    @context()
    async def fill_balloon(self, num: int) -> None:
        """fill_balloon() with FIX(fill-unlock)."""
        num = min(num, VIRTIO_BALLOON_ARRAY_PFNS_MAX)
        await self.balloon_lock.mutex_lock()
        await self._fill_balloon_loop(num, self.gfp_mask)
        # FIX(fill-unlock): /* Did we get any? */ if (vb->num_pfns != 0) tell_host(...);
        if self.num_pfns != 0:
            await self.tell_host(INFLATEQ)
        self.balloon_lock.mutex_unlock()  # FIX(fill-unlock): always released
