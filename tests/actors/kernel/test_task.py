"""Kernel task identity: declaration, naming, the task table, misuse."""

from __future__ import annotations

import anyio
import pytest
import trio
from anyio.abc import TaskStatus

from actors.kernel import Mutex, NoKernelTaskError, TaskSharingError, current
from actors.kernel.task import current_or_none
from tests.actors.kernel.conftest import Rig


async def test_task_scope_sets_current(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """Inside `with kernel.task(name)` current() is that task; outside there is none."""
    k = rig.kernel
    assert current_or_none() is None
    with k.task("vballoon") as t:  # no await: cannot hang
        assert current() is t and t.name == "vballoon" and k.tasks == {"vballoon": t}
    assert current_or_none() is None and k.tasks == {} and t.state == "dead"


async def test_no_kernel_task_is_an_error(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """Locking outside any kernel task raises and says how to declare one."""
    m = Mutex(rig.kernel, "m")
    with pytest.raises(NoKernelTaskError, match=r"kernel\.task\(name\)"):
        await m.mutex_lock()


async def test_names_unique_and_table_ordered(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """Duplicate names get -1, -2 suffixes at spawn time; the table keeps creation order."""
    k = rig.kernel
    names: list[str] = []

    async def body() -> None:
        names.append(current().name)
        await anyio.sleep(1)

    async def started(*, task_status: TaskStatus[str]) -> None:
        task_status.started(current().name)
        await anyio.sleep(1)

    with trio.fail_after(10):
        async with anyio.create_task_group() as tg:
            spawned = [k.spawn(tg, "kcompactd", body).name for _ in range(3)]
            assert await k.start(tg, "kcompactd", started) == "kcompactd-3"
            assert spawned == ["kcompactd", "kcompactd-1", "kcompactd-2"]
            assert list(k.tasks) == [*spawned, "kcompactd-3"]
        assert sorted(names) == spawned
        with k.task("kcompactd") as again:
            assert again.name == "kcompactd-4"  # names are never reused


async def test_child_without_own_task_is_caught(rig: Rig, autojump_clock: trio.abc.Clock
                                                ) -> None:
    """A child anyio task that inherits its parent's kernel task is caught when both block."""
    k = rig.kernel
    m = Mutex(k, "m")

    async def child() -> None:
        await m.mutex_lock()

    with trio.fail_after(10), k.task("parent"), pytest.raises(BaseExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            await m.mutex_lock()
            tg.start_soon(child)  # no kernel.spawn: it runs as "parent" too, and blocks
            await anyio.sleep(1)
            await k.msleep(1)  # "parent" cannot sleep: it is already blocked on m
    assert info.group_contains(TaskSharingError, match="'parent' is already blocked on 'm'")
