"""The driver's interrupt callbacks run as interrupt handlers: in hardirq context, hardirqs off,
in the ``irq/virtio-balloon`` kernel task (actors.guest.balloon.common, ``interrupts``)."""

from __future__ import annotations

from collections import Counter

import pytest

from actors.guest.balloon.common import VirtioBalloon
from actors.kernel import current, in_irq, irqs_disabled

from .conftest import small_session

CALLBACKS = ("balloon_ack", "stats_request", "virtballoon_changed")


@pytest.mark.parametrize("driver", ["v9", "v3.8"])
def test_virtqueue_and_config_callbacks_run_in_hardirq_context(
        monkeypatch: pytest.MonkeyPatch, driver: str) -> None:
    """Every call of the inflate/deflate ack, the stats request and the config-change callback
    happens with in_irq() true and hardirqs disabled, in the interrupt task -- so a sleeping
    primitive there is reported, and a lock taken there is IN-HARDIRQ-W."""
    seen: Counter[tuple[str, bool, bool, str]] = Counter()

    def spy(name: str) -> None:
        original = getattr(VirtioBalloon, name)

        def called(self: VirtioBalloon) -> None:
            seen[(name, in_irq(), irqs_disabled(), current().name)] += 1
            original(self)

        monkeypatch.setattr(VirtioBalloon, name, called)

    for name in CALLBACKS:
        spy(name)
    out, _ = small_session(f"guest.driver={driver}")
    assert out.reason == "completed"
    assert {name for name, *_ in seen} == set(CALLBACKS)
    assert all(key[1:] == (True, True, "irq/virtio-balloon") for key in seen), seen
