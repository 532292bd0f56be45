from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imagelabels.sources.listing import ListingStats, batched, in_window, list_objects_in_window

START = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
END = START + timedelta(hours=1)


class PagesClient:
    """Serves fixed ListObjectsV2 pages: S3 cannot be told which LastModified to store, so the
    window boundaries are tested on pages we build (the moto tests cover real pagination)."""

    def __init__(self, pages: list[list[dict]]) -> None:
        self.pages = pages
        self.calls: list[dict] = []

    def get_paginator(self, name: str) -> PagesClient:
        assert name == "list_objects_v2"
        return self

    def paginate(self, **kwargs):  # type: ignore[no-untyped-def]
        self.calls.append(kwargs)
        for page in self.pages:
            yield {"Contents": page} if page else {}


def obj(key: str, when: datetime, size: int = 10) -> dict:
    return {"Key": key, "LastModified": when, "Size": size, "ETag": f'"{key}-etag"'}


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (START - timedelta(seconds=1), False),
        (START, True),  # start is inclusive
        (START + timedelta(minutes=30), True),
        (END - timedelta(seconds=1), True),
        (END, False),  # end is exclusive: it belongs to the next run
        (END + timedelta(seconds=1), False),
    ],
)
def test_window_is_half_open(when: datetime, expected: bool) -> None:
    assert in_window(when, START, END) is expected


def test_adjacent_windows_take_a_boundary_object_exactly_once() -> None:
    boundary = obj("on-the-hour.jpg", END)
    client = PagesClient([[boundary]])
    first = list(list_objects_in_window(client, "b", "", START, END))
    second = list(list_objects_in_window(client, "b", "", END, END + timedelta(hours=1)))
    assert [o.key for o in first + second] == ["on-the-hour.jpg"]
    assert [o.key for o in second] == ["on-the-hour.jpg"]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        in_window(datetime(2026, 1, 1), START, END)


def test_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match="empty listing window"):
        list(list_objects_in_window(PagesClient([]), "b", "", END, START))


def test_listing_filters_streams_and_counts() -> None:
    pages = [
        [obj("a.jpg", START), obj("folder/", START, size=0), obj("old.jpg", START - timedelta(days=1))],
        [obj("_imagelabels/manifests/x.jsonl", START), obj("b.png", END - timedelta(seconds=1))],
        [],
    ]
    client = PagesClient(pages)
    stats = ListingStats()
    listed = list(
        list_objects_in_window(
            client, "bucket", "p/", START, END, exclude_prefixes=["_imagelabels/"], stats=stats, page_size=2
        )
    )
    assert [(o.key, o.etag, o.size) for o in listed] == [
        ("a.jpg", "a.jpg-etag", 10),
        ("b.png", "b.png-etag", 10),
    ]
    assert client.calls == [{"Bucket": "bucket", "Prefix": "p/", "PaginationConfig": {"PageSize": 2}}]
    assert (stats.pages, stats.scanned, stats.selected) == (3, 5, 2)
    assert (stats.outside_window, stats.excluded, stats.skipped_folders) == (1, 1, 1)


def test_listing_is_lazy() -> None:
    def endless_pages():  # type: ignore[no-untyped-def]
        n = 0
        while True:
            yield [obj(f"k{n}", START)]
            n += 1

    class Endless(PagesClient):
        def paginate(self, **kwargs):  # type: ignore[no-untyped-def]
            for page in endless_pages():
                yield {"Contents": page}

    first_three = []
    for item in list_objects_in_window(Endless([]), "b", "", START, END):
        first_three.append(item.key)
        if len(first_three) == 3:
            break
    assert first_three == ["k0", "k1", "k2"]


@pytest.mark.parametrize(
    ("n", "size", "expected"),
    [(0, 3, []), (1, 3, [1]), (3, 3, [3]), (7, 3, [3, 3, 1]), (1000, 100, [100] * 10)],
)
def test_batched_sizes(n: int, size: int, expected: list[int]) -> None:
    assert [len(b) for b in batched(range(n), size)] == expected


def test_batched_keeps_order_and_rejects_zero() -> None:
    assert [x for b in batched(iter(range(10)), 4) for x in b] == list(range(10))
    with pytest.raises(ValueError, match="at least 1"):
        list(batched([1], 0))
