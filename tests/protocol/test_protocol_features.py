"""Tests of the balloon's identity: ids, queues, feature negotiation, page-size mapping."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from protocol import FeatureError, ProtocolError
from protocol.balloon import (
    DEFLATEQ,
    FREE_PAGE_VQ,
    INFLATEQ,
    REPORTING_VQ,
    STATSQ,
    VIRTIO_BALLOON_PFN_SHIFT,
    VIRTIO_ID_BALLOON,
    BalloonFeature,
    BalloonQueue,
    feature_mask,
    feature_names,
    has_feature,
    negotiate,
    pages_per_page,
    queues_for,
    select_features,
    transport_index,
)

NamesFn = Callable[..., None]
F = BalloonFeature


def test_constants_match_the_spec() -> None:
    """Device id, queue numbers, feature bit numbers and the PFN shift are the spec's."""
    assert VIRTIO_ID_BALLOON == 5
    assert VIRTIO_BALLOON_PFN_SHIFT == 12
    assert [INFLATEQ, DEFLATEQ, STATSQ, FREE_PAGE_VQ, REPORTING_VQ] == [0, 1, 2, 3, 4]
    assert [f.value for f in F] == [0, 1, 2, 3, 4, 5, 32]
    assert F.STATS_VQ.mask == 2 and F.VERSION_1.mask == 1 << 32
    assert STATSQ.queue_name == "statsq" and FREE_PAGE_VQ.queue_name == "free_page_vq"


def test_feature_helpers_build_and_read_masks() -> None:
    """feature_mask sets bits by number; has_feature and feature_names read them back."""
    mask = feature_mask(F.MUST_TELL_HOST, F.PAGE_REPORTING, 40)
    assert mask == 0b100001 | 1 << 40
    assert has_feature(mask, F.PAGE_REPORTING) and not has_feature(mask, F.STATS_VQ)
    assert feature_names(mask) == ["MUST_TELL_HOST", "PAGE_REPORTING", "bit40"]


def test_negotiation_returns_the_accepted_subset() -> None:
    """A driver accepting a subset of the offer gets exactly that subset."""
    offered = feature_mask(F.MUST_TELL_HOST, F.STATS_VQ, F.DEFLATE_ON_OOM, F.VERSION_1)
    wanted = feature_mask(F.STATS_VQ, F.PAGE_REPORTING, F.VERSION_1)
    accepted = select_features(offered, wanted)
    assert accepted == feature_mask(F.STATS_VQ, F.VERSION_1)
    assert negotiate(offered, accepted) == accepted
    assert negotiate(offered, accepted, required=F.STATS_VQ.mask) == accepted


NEGOTIATION_ERRORS: list[tuple[str, int, int, int, str, str, object]] = [
    (
        "bit-not-offered",
        feature_mask(F.STATS_VQ),
        feature_mask(F.STATS_VQ, F.PAGE_POISON),
        0,
        "driver",
        "offered=['STATS_VQ']",
        ["PAGE_POISON"],
    ),
    (
        "required-bit-refused",
        feature_mask(F.MUST_TELL_HOST, F.STATS_VQ),
        feature_mask(F.STATS_VQ),
        feature_mask(F.MUST_TELL_HOST),
        "driver",
        "accepted=['STATS_VQ']",
        ["MUST_TELL_HOST"],
    ),
    ("negative-driver-mask", 3, -1, 0, "driver", "negotiating", -1),
    ("device-mask-too-wide", 1 << 64, 0, 0, "device", "negotiating", 1 << 64),
]


@pytest.mark.parametrize(
    ("case", "device", "driver", "required", "role", "state", "value"),
    NEGOTIATION_ERRORS,
    ids=[c[0] for c in NEGOTIATION_ERRORS],
)
def test_negotiation_errors_name_the_bits(
    names: NamesFn,
    case: str,
    device: int,
    driver: int,
    required: int,
    role: str,
    state: str,
    value: object,
) -> None:
    """negotiate refuses unoffered, missing-required and malformed feature sets by name."""
    with pytest.raises(FeatureError) as err:
        negotiate(device, driver, required=required)
    names(err, queue="features", role=role, state=state, value=value)


@pytest.mark.parametrize(
    ("features", "queues"),
    [
        (0, (INFLATEQ, DEFLATEQ)),
        (F.STATS_VQ.mask, (INFLATEQ, DEFLATEQ, STATSQ)),
        (F.PAGE_REPORTING.mask, (INFLATEQ, DEFLATEQ, REPORTING_VQ)),
        (
            feature_mask(F.STATS_VQ, F.FREE_PAGE_HINT, F.PAGE_REPORTING, F.MUST_TELL_HOST),
            (INFLATEQ, DEFLATEQ, STATSQ, FREE_PAGE_VQ, REPORTING_VQ),
        ),
    ],
)
def test_queues_exist_per_feature(features: int, queues: tuple[BalloonQueue, ...]) -> None:
    """statsq, free_page_vq and reporting_vq exist only with their features."""
    assert queues_for(features) == queues


@pytest.mark.parametrize(
    ("queue", "features", "index"),
    [
        (DEFLATEQ, 0, 1),
        (STATSQ, F.STATS_VQ.mask, 2),
        (REPORTING_VQ, F.PAGE_REPORTING.mask, 2),
        (REPORTING_VQ, feature_mask(F.STATS_VQ, F.PAGE_REPORTING), 3),
        (REPORTING_VQ, feature_mask(F.STATS_VQ, F.FREE_PAGE_HINT, F.PAGE_REPORTING), 4),
    ],
)
def test_transport_index_skips_absent_queues(
    queue: BalloonQueue, features: int, index: int
) -> None:
    """On the transport, queues that do not exist take no index (as Linux's find_vqs does)."""
    assert transport_index(queue, features) == index


def test_transport_index_of_absent_queue_is_refused(names: NamesFn) -> None:
    """Asking for a queue the features do not create names the queue and the features."""
    with pytest.raises(FeatureError) as err:
        transport_index(STATSQ, F.MUST_TELL_HOST.mask)
    names(err, queue="statsq", role="driver", state="negotiated=['MUST_TELL_HOST']", value=2)


@pytest.mark.parametrize(("size", "ppp"), [(4096, 1), (16384, 4), (65536, 16)])
def test_pages_per_page(size: int, ppp: int) -> None:
    """Each supported guest page size maps to PAGE_SIZE >> 12 wire PFNs."""
    assert pages_per_page(size) == ppp


@pytest.mark.parametrize("size", [0, 2048, 8192, 32768, 1 << 21])
def test_unsupported_page_size_is_refused(names: NamesFn, size: int) -> None:
    """Only 4, 16 and 64 KiB guest pages are accepted."""
    with pytest.raises(ProtocolError) as err:
        pages_per_page(size)
    names(err, queue="config", role="driver", state="probe", value=size)
