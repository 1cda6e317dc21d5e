"""Shared helpers for the protocol tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from protocol.errors import ProtocolError

NamesFn = Callable[..., None]


def _assert_names(
    err: ProtocolError | pytest.ExceptionInfo[ProtocolError],
    *,
    queue: str,
    role: str,
    state: str,
    value: object,
) -> None:
    """Assert an error's message names its queue, role, state and offending value."""
    exc = err.value if isinstance(err, pytest.ExceptionInfo) else err
    msg = str(exc)
    assert f"queue={queue}" in msg, msg
    assert f"role={role}" in msg, msg
    assert f"state={state}" in msg, msg
    assert f"value={value!r}" in msg, msg
    assert (exc.queue, exc.role, exc.state, exc.value) == (queue, role, state, value)


@pytest.fixture
def names() -> NamesFn:
    """The assertion that a protocol error names queue, role, state and offending value."""
    return _assert_names
