"""``struct virtio_balloon`` and the driver functions the seed patch leaves unchanged.

drivers/virtio/virtio_balloon.c as of v3.6 (the patch's base): ``tell_host``,
``set_page_pfns``, ``release_pages_by_pfn``, ``balloon_ack``, ``update_balloon_stats``,
``stats_request``, ``virtballoon_changed``, ``init_vqs`` and the ``balloon`` kthread. The
variants (``legacy``, ``v9``, ``fixed``) subclass it and supply the functions the patch changes.
A "page" here is a guest PFN; its ``struct page`` is the row of the guest's ``PageFrames``.

Modelling notes that apply to every variant:
- ``alloc_page`` goes through the allocator actor. ``fill_balloon`` asks for its whole round
  in one batched request and then runs the C loop body over the pages it got, taking the
  C ``if (!page)`` branch where the batch came back short.
- Kicks, config writes and interrupts are messages on the transport (``actors.transport``); the
  rings are shared memory, so the host's conformance monitor sees adds as they happen.
- The virtqueue and config-change callbacks run in hardirq context (``interrupts``: the
  ``vring_interrupt``/``vp_interrupt`` handlers of 3.x), so a sleeping primitive there is
  reported and a lock taken there is ``IN-HARDIRQ-W``.
- Every read of shared state outside the lock that protects it is a preemption point named by
  its C function, placed before the read (a wait condition that reads it: before each
  evaluation, ``reads=``): ``towards_target`` (the host's config target, in the kthread's
  wait condition), ``balloon`` (``vb->need_stats_update``, set by the stats interrupt),
  ``tell_host`` (``virtqueue_get_buf``'s read of the used ring the device writes, in the wait
  condition), ``stats_handle_request`` (the same for the stats queue) and
  ``update_balloon_stats`` (``si_meminfo`` and the event counters, read without their
  locks). ``vb->num_pages`` has none: only the kthread writes it (fill and leak run there,
  ``remove_common`` after ``kthread_stop``), so its reads are not shared.
"""

from __future__ import annotations

import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import anyio
from anyio.abc import TaskStatus
from structlog.typing import FilteringBoundLogger

from actors.guest.mm import gfp as G
from actors.guest.mm import pages as P
from actors.guest.mm.allocator import AllocatorClient
from actors.guest.mm.balloon_compaction import BalloonAops
from actors.guest.mm.compaction import Compactor
from actors.guest.mm.pages import CostedPageList, PageFrames
from actors.guest.mm.vmstat import VmStat
from actors.kernel.irq import hardirq
from actors.kernel.kernel import Kernel
from actors.kernel.locks import Atomic, WaitQueue
from actors.sim import schema, streams
from actors.sim.costs import CostModel
from actors.sim.transport import (
    ConfigChanged,
    ConfigWrite,
    DeviceReset,
    Interrupt,
    Notify,
    Transport,
)
from protocol import conformance as C
from protocol.balloon import (
    QUEUE_NAMES,
    VIRTIO_BALLOON_ARRAY_PFNS_MAX,
    BalloonQueue,
    StatTag,
    encode_pfns,
    encode_stats,
    pages_per_page,
)
from protocol.errors import QueueFull

INFLATEQ, DEFLATEQ, STATSQ = BalloonQueue.INFLATEQ, BalloonQueue.DEFLATEQ, BalloonQueue.STATSQ


class KernelBug(RuntimeError):
    """A BUG()/BUG_ON() fired in translated kernel code: the guest kernel would oops here."""


@dataclass
class MemInfo:
    """``totalram_pages`` (MemTotal) as the driver adjusts it."""

    totalram: int


class VirtioBalloon:
    """``struct virtio_balloon`` plus the functions every variant shares."""

    #: The allocation mask of balloon pages (v9/fixed: the mapping's, i.e. movable).
    gfp_mask: int = int(G.GFP_HIGHUSER)
    #: The compactor of the balloon compaction core the variant runs with (mm's side of
    #: the series: v9's hooks, or 3.8's as merged); the guest builds its compactors with it.
    compactor_class: ClassVar[type[Compactor]] = Compactor

    def __init__(
        self,
        *,
        kernel: Kernel,
        frames: PageFrames,
        allocator: AllocatorClient,
        transport: Transport,
        meminfo: MemInfo,
        vmstat: VmStat,
        costs: CostModel,
        log: FilteringBoundLogger,
        freeram: Callable[[], int],
    ) -> None:
        self.kernel = kernel
        self.freeram = freeram
        self.frames = frames
        self.allocator = allocator
        self.vdev = transport
        self.meminfo = meminfo
        self.vmstat = vmstat
        self.costs = costs
        self.log = log
        self.PAGES_PER_PAGE = pages_per_page(frames.page_size)
        # struct virtio_balloon (the fields of the base driver)
        self.config_change = WaitQueue(kernel, "vb->config_change")
        self.acked = WaitQueue(kernel, "vb->acked")
        self.num_pages = Atomic(0)  # v3.6: unsigned int; v9: atomic_t (same ops here)
        self.pages = CostedPageList(frames, kernel.charge, costs.list_op + costs.page_flag_op)
        self.num_pfns = 0
        self.pfns = array.array("I", bytes(4 * VIRTIO_BALLOON_ARRAY_PFNS_MAX))
        self.need_stats_update = 0
        self.stats: dict[int, int] = {}
        self.should_stop = False
        #: The kthread's exit completion (``kthread->exited``), which kthread_stop waits on.
        self.thread_started = False
        self.thread_exited = False
        self.exited = WaitQueue(kernel, "kthread->exited")
        #: virtballoon_remove has finished: the device is gone (not in the C struct).
        self.removed = False
        #: virtballoon_remove() has begun (an unplug is under way or done).
        self.removing = False
        # bookkeeping for the summary (not in the C struct)
        self.inflated = 0
        self.deflated = 0
        self.out_of_puff = 0
        #: The handshake id of the latest tell_host per queue (links a migration's two).
        self.last_hs: dict[int, int] = {}
        #: The a_ops of the balloon mapping the driver registers at probe, through which
        #: compaction isolates, migrates and puts back balloon pages (mm reaches the driver
        #: only through them); None: no mapping, the balloon's pages are not movable.
        self.a_ops: BalloonAops | None = None

    # -- helpers with kernel names -------------------------------------------------------------
    def page_to_balloon_pfn(self, page: int) -> int:
        """Convert pfn from Linux page size to balloon page size (4 KiB)."""
        return page * self.PAGES_PER_PAGE

    def set_page_pfns(self, pfns: array.array[int], at: int, page: int) -> None:
        """Set balloon pfns pointing at this page; the first pfn points at its start."""
        base = self.page_to_balloon_pfn(page)
        for i in range(self.PAGES_PER_PAGE):
            pfns[at + i] = base + i
        self.kernel.charge(self.PAGES_PER_PAGE * self.costs.pfn_copy)

    def _set_pfns_batch(self, pfns: array.array[int], at: int, pages: Sequence[int]) -> None:
        """set_page_pfns() for many pages at once, into consecutive slots from ``at``."""
        ppp = self.PAGES_PER_PAGE
        if ppp == 1:
            pfns[at:at + len(pages)] = array.array("I", pages)
            self.kernel.charge(len(pages) * self.costs.pfn_copy)
            return
        for page in pages:
            self.set_page_pfns(pfns, at, page)
            at += ppp

    def guest_pages(self, pfns: array.array[int], num: int) -> array.array[int]:
        """The guest PFNs behind the first ``num`` balloon PFNs (a copy: logs keep it)."""
        ppp = self.PAGES_PER_PAGE
        if ppp == 1:
            return pfns[:num]
        return array.array("I", [pfns[i] // ppp for i in range(0, num, ppp)])

    # -- virtqueue handshakes ------------------------------------------------------------------
    async def tell_host(self, vq: int) -> None:
        """tell_host(): add vb->pfns[0..num_pfns) to ``vq``, kick, sleep until it is used."""
        transport = self.vdev
        wire = self.pfns[:self.num_pfns]
        # sg_init_one(&sg, vb->pfns, sizeof(vb->pfns[0]) * vb->num_pfns);
        data = encode_pfns(wire, queue=QUEUE_NAMES[vq])
        # /* We should always be able to add one buffer to an empty queue. */
        # if (virtqueue_add_buf(vq, &sg, 1, 0, vb, GFP_KERNEL) < 0) BUG();
        try:
            hs, _head = transport.add_outbuf(vq, data, self)
        except QueueFull as e:
            raise KernelBug(f"tell_host: virtqueue_add_buf failed: {e}") from None
        self.last_hs[vq] = hs
        self.log.info(schema.VQ_ADD, queue=QUEUE_NAMES[vq], hs=hs, pfns=wire)
        transport.observe(C.InflateAdded(wire) if vq == INFLATEQ else C.DeflateAdded(wire))
        # virtqueue_kick(vq);
        if transport.vqs[vq].driver.kick():
            await streams.send(transport.to_device, Notify(vq))
        # /* When host has read buffer, this completes via balloon_ack */
        # wait_event(vb->acked, virtqueue_get_buf(vq, &len));
        driver = transport.vqs[vq].driver
        await self.acked.wait_event(lambda: driver.get_buf() is not None, reads="tell_host")
        self.log.info(schema.VQ_ACK, queue=QUEUE_NAMES[vq], hs=hs)

    def balloon_ack(self) -> None:
        """Interrupt callback of the inflate and deflate queues."""
        self.acked.wake_up()

    async def release_pages_by_pfn(self, pfns: array.array[int], num: int) -> None:
        """Find pfns pointing at start of each page, get pages and free them."""
        pages = self.guest_pages(pfns, num)
        # __free_page(balloon_pfn_to_page(pfns[i])); totalram_pages++;  (one batch)
        self.meminfo.totalram += len(pages)
        self.log.info(schema.BALLOON_RELEASE, pfns=pages)
        await self.allocator.free(pages, 0)

    async def alloc_pages(self, num: int, gfp: int) -> array.array[int]:
        """The round's ``alloc_page()`` calls as one batched allocator request."""
        return await self.allocator.alloc(num, 0, gfp, P.OWNER_BALLOON)

    # -- stats ---------------------------------------------------------------------------------
    def update_balloon_stats(self) -> None:
        """update_balloon_stats(): the 2012 driver's six tags, from the guest memory model."""
        page_size = self.frames.page_size
        vm = self.vmstat
        free = self.freeram()  # si_meminfo(): read without the zone lock, as the kernel does
        self.stats = {
            StatTag.SWAP_IN: 0,  # pages_to_bytes(events[PSWPIN]): no swap modelled
            StatTag.SWAP_OUT: 0,
            StatTag.MAJFLT: 0,
            StatTag.MINFLT: vm.get("pgalloc"),  # events[PGFAULT]: one fault per page handed out
            StatTag.MEMFREE: free * page_size,
            StatTag.MEMTOT: self.meminfo.totalram * page_size,
        }

    def stats_request(self) -> None:
        """Interrupt callback of the stats queue: the host used our buffer, wants fresh stats."""
        self.need_stats_update = 1
        self.config_change.wake_up()

    async def add_stats_buf(self) -> None:
        """virtqueue_add_buf(vq, &sg(vb->stats), 1, 0, vb, GFP_KERNEL) + virtqueue_kick(vq)."""
        transport = self.vdev
        data = encode_stats(self.stats)
        try:
            hs, _ = transport.add_outbuf(STATSQ, data, self)
        except QueueFull as e:
            raise KernelBug(f"stats: virtqueue_add_buf failed: {e}") from None
        self.log.info(schema.VQ_ADD, queue="statsq", hs=hs, pfns=[])
        if transport.vqs[STATSQ].driver.kick():
            await streams.send(transport.to_device, Notify(STATSQ))

    async def stats_handle_request(self) -> None:
        """stats_handle_request() (v3.6): refill and re-add the buffer the host handed back."""
        await self._stats_handle_request_body()

    async def _stats_handle_request_body(self) -> bool:
        """The v3.6 body; False where the C code takes its early ``return``."""
        k = self.kernel
        # vb->need_stats_update = 0;
        self.need_stats_update = 0
        # update_balloon_stats(vb);
        await k.preempt("update_balloon_stats")  # si_meminfo(), all_vm_events(): lockless
        self.update_balloon_stats()
        # vq = vb->stats_vq; if (!virtqueue_get_buf(vq, &len)) return;
        await k.preempt("stats_handle_request")  # the used ring the device writes
        if self.vdev.vqs[STATSQ].driver.get_buf() is None:
            return False
        # sg_init_one(&sg, vb->stats, sizeof(vb->stats));
        # if (virtqueue_add_buf(vq, &sg, 1, 0, vb, GFP_KERNEL) < 0) BUG(); virtqueue_kick(vq);
        await self.add_stats_buf()
        return True

    def virtballoon_changed(self) -> None:
        """Config-change interrupt: the host set a new target."""
        self.config_change.wake_up()

    # -- config space --------------------------------------------------------------------------
    def read_num_pages(self) -> int:
        """vb->vdev->config->get(vb->vdev, offsetof(..., num_pages), &v, sizeof(v))."""
        return self.vdev.config.num_pages

    async def write_actual(self, actual: int) -> None:
        """vb->vdev->config->set(vb->vdev, offsetof(..., actual), &actual, sizeof(actual))."""
        self.log.info(schema.CONFIG_ACTUAL, actual=actual)
        self.vdev.observe(C.ActualWritten(actual))
        await streams.send(self.vdev.to_device, ConfigWrite(actual))

    # -- towards_target and update_balloon_size (v3.6, v9 and v3.8 alike) ---------------------
    @staticmethod
    def settles_at(target: int, ppp: int) -> int:
        """The balloon size (4 KiB units) towards_target() steers to for a host ``target``, not
        C: ``towards_target() == settles_at(target, ppp) - num_pages`` in every variant. Here
        the target itself; ``vballoon check`` reads it to know when a driver has nothing to do
        (its log does not say when a leak round starts taking pages off the list)."""
        return target

    def towards_target(self) -> int:
        """towards_target(): target - vb->num_pages (v9: atomic_read(&vb->num_pages))."""
        return self.read_num_pages() - self.num_pages.atomic_read()

    async def update_balloon_size(self) -> None:
        """update_balloon_size(): write vb->num_pages to config space ``actual``."""
        await self.write_actual(self.num_pages.atomic_read())

    # -- what fill_balloon and leak_balloon of every variant share -----------------------------
    async def puff(self, wanted: int) -> None:
        """fill_balloon()'s ``if (!page)`` branch: "Out of puff!", then msleep(200)."""
        # dev_printk(KERN_INFO, &vb->vdev->dev, "Out of puff! Can't get %zu pages\n", num);
        self.out_of_puff += 1
        self.log.warning(schema.BALLOON_PUFF, wanted=wanted, got=self.num_pfns)
        # /* Sleep for at least 1/5 of a second before retry. */
        # msleep(200);
        await self.kernel.msleep(self.costs.out_of_puff_sleep)

    def count_inflated(self) -> None:
        """The round's inflated pages in the summary and /proc/vmstat (not C)."""
        self.inflated += self.num_pfns // self.PAGES_PER_PAGE
        self.vmstat.inc("balloon_inflate", self.num_pfns // self.PAGES_PER_PAGE)

    def _leaked(self, pfns: array.array[int], num_pfns: int) -> None:
        """Counters and the ``balloon.leak`` record of one leak round (not C)."""
        ppp = self.PAGES_PER_PAGE
        self.deflated += num_pfns // ppp
        self.vmstat.inc("balloon_deflate", num_pfns // ppp)
        self.log.info(schema.BALLOON_LEAK, pfns=self.guest_pages(pfns, num_pfns),
                      num_pages=self.num_pages.atomic_read())

    # -- variant hooks -------------------------------------------------------------------------
    async def fill_balloon(self, num: int) -> None:
        raise NotImplementedError

    async def leak_balloon(self, num: int) -> None:
        raise NotImplementedError

    # -- the kthread and the interrupt handler -------------------------------------------------
    async def init_vqs(self) -> None:
        """init_vqs(): prime the stats queue with one buffer so the host can signal us."""
        if self.vdev.stats_vq:
            self.update_balloon_stats()
            await self.add_stats_buf()

    async def balloon(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                      ) -> None:
        """The "vballoon" kthread: chase the target until stopped."""
        with self.kernel.task("vballoon"):
            self.thread_started = True
            await self.init_vqs()
            task_status.started()
            diff = 0

            def woken() -> bool:
                nonlocal diff
                diff = self.towards_target()
                return diff != 0 or bool(self.need_stats_update) or self.should_stop

            while not self.should_stop:  # while (!kthread_should_stop()) {
                # wait_event_interruptible(vb->config_change, (diff = towards_target(vb)) != 0
                #     || vb->need_stats_update || kthread_should_stop() || freezing(current));
                await self.config_change.wait_event_interruptible(woken, reads="towards_target")
                # if (vb->need_stats_update)   (set by the stats interrupt, no lock)
                await self.kernel.preempt("balloon")
                if self.need_stats_update:
                    await self.stats_handle_request()
                if diff > 0:
                    await self.fill_balloon(diff)
                elif diff < 0:
                    await self.leak_balloon(-diff)
                await self.update_balloon_size()
            # do_exit() -> complete(&kthread->exited)
            self.thread_exited = True
            self.exited.wake_up()

    # -- removal (virtballoon_remove) ---------------------------------------------------------
    async def virtballoon_remove(self) -> None:
        """virtballoon_remove(): the device goes away; give the host every page back first."""
        self.removing = True
        self.log.info(schema.BALLOON_REMOVE, phase="start", num_pages=self.num_pages.atomic_read())
        self.vdev.observe(C.DriverRemoving())
        # kthread_stop(vb->thread);
        await self.kthread_stop()
        # remove_common(vb);
        await self.remove_common()
        # kfree(vb);  (v9: kfree(vb->mapping) first)
        self.removed = True
        self.log.info(schema.BALLOON_REMOVE, phase="done", num_pages=self.num_pages.atomic_read())

    async def kthread_stop(self) -> None:
        """kthread_stop(k): set should-stop, wake the thread, wait until it has exited."""
        self.should_stop = True
        # wake_up_process(k): the kthread sleeps in wait_event_interruptible(vb->config_change)
        self.config_change.wake_up()
        # wait_for_completion(&kthread->exited);
        if self.thread_started:
            await self.exited.wait_event(lambda: self.thread_exited)

    async def remove_common(self) -> None:
        """remove_common() (v3.6): there might be pages left in the balloon: free them."""
        # while (vb->num_pages)
        #         leak_balloon(vb, vb->num_pages);
        while num_pages := self.num_pages.atomic_read():
            await self.leak_balloon(num_pages)
        # update_balloon_size(vb);
        await self.update_balloon_size()
        await self.reset_device()

    async def reset_device(self) -> None:
        """remove_common()'s last lines: reset the device, then delete the queues."""
        # /* Now we reset the device so we can clean up the queues. */
        # vb->vdev->config->reset(vb->vdev);
        # vb->vdev->config->del_vqs(vb->vdev);
        await streams.send(self.vdev.to_device, DeviceReset())

    async def interrupts(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                         ) -> None:
        """vring_interrupt / virtio config interrupt: dispatch to the driver's callbacks, each
        in hardirq context (irq_enter() ... irq_exit()), as the kernel runs them."""
        k = self.kernel
        with k.task("irq/virtio-balloon"):
            task_status.started()
            inbox = self.vdev.driver_inbox
            async with inbox:
                while True:
                    try:
                        msg = await streams.receive(inbox)
                    except anyio.EndOfStream:
                        break
                    if isinstance(msg, Interrupt):
                        with hardirq(k):
                            if msg.queue == STATSQ:
                                self.stats_request()
                            else:
                                self.balloon_ack()
                    elif isinstance(msg, ConfigChanged):
                        with hardirq(k):
                            self.virtballoon_changed()

    # -- views ---------------------------------------------------------------------------------
    def isolated(self) -> int:
        return 0

    def summary(self) -> dict[str, int]:
        return {
            "target": self.read_num_pages(),
            "actual": self.num_pages.atomic_read(),
            "pages_in_list": len(self.pages),
            "isolated": self.isolated(),
            "inflated": self.inflated,
            "deflated": self.deflated,
            "out_of_puff": self.out_of_puff,
            "totalram": self.meminfo.totalram,
        }
