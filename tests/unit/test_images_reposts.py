"""One presigned POST posted again and again while it is valid, with the in-memory stand-ins:
S3 keeps only the latest bytes under the key, and every post is a new notification. The
image is its first upload: later ones are removed unanalysed, whenever they come (before
the first is analysed, during, after), so a link costs one analysis (one Rekognition call,
one set of thumbnails) however often it is posted, and leaves no object behind but the
image's original and thumbnails. The same against moto: test_images_reposts_aws.py."""

from __future__ import annotations

import pytest

from chalicelib.images.model import PROCESSING, READY
from tests.unit.images_fakes import KEY, ORIGINAL, OWNER, Pipeline, jpeg

REPOSTS = 50


def other_bytes(n: int) -> bytes:
    """A different picture each time (another ETag)."""
    return jpeg(200 + n, 100 + n, "blue")


def thumbnail_keys(pipeline: Pipeline) -> list[str]:
    return sorted(k for k in pipeline.storage.objects if k.startswith(f"thumbnails/{OWNER}/"))


@pytest.fixture
def pipeline() -> Pipeline:
    return Pipeline()


def test_fifty_reposts_after_the_analysis_cost_nothing_but_their_removal(
    pipeline: Pipeline,
) -> None:
    first = jpeg(640, 480)
    etag = pipeline.storage.upload(KEY, first)
    pipeline.notify()
    pipeline.run_tasks()
    before = pipeline.record
    thumbnails = thumbnail_keys(pipeline)

    for n in range(REPOSTS):
        pipeline.storage.upload(KEY, other_bytes(n))
        pipeline.notify()
        pipeline.run_tasks()

    assert len(pipeline.detector.calls) == 1, "one Rekognition call"
    assert pipeline.storage.kept == [ORIGINAL] and len(pipeline.storage.writes) == 2
    assert pipeline.record == before, "the image is still its first upload"
    assert pipeline.record["etag"] == etag and pipeline.record["status"] == READY
    assert sorted(pipeline.storage.objects) == sorted([ORIGINAL, *thumbnails])
    assert pipeline.storage.objects[ORIGINAL][0] == first
    assert pipeline.storage.removed.count(KEY) == REPOSTS + 1, "the first, kept; then each"


def test_fifty_reposts_before_any_notification_is_delivered(pipeline: Pipeline) -> None:
    """Every post's notification waits in the queue: those of overwritten uploads find
    another ETag under the key and are ignored; the last upload is the one analysed. Posts
    after it are removed."""
    notifications = []
    for n in range(REPOSTS):
        pipeline.storage.upload(KEY, other_bytes(n))
        notifications.append(pipeline.notification())
    for notification in notifications:
        pipeline.analysis.handle(notification, 1)
    pipeline.run_tasks()
    for n in range(REPOSTS):
        pipeline.storage.upload(KEY, jpeg(10 + n, 10))
        pipeline.notify()
    pipeline.run_tasks()

    record = pipeline.record
    assert (record["width"], record["height"]) == (200 + REPOSTS - 1, 100 + REPOSTS - 1)
    assert record["status"] == READY and len(pipeline.detector.calls) == 1
    assert len(pipeline.storage.writes) == 2
    assert sorted(pipeline.storage.objects) == sorted([ORIGINAL, *thumbnail_keys(pipeline)])


def test_reposts_while_the_first_upload_is_analysed_are_removed(pipeline: Pipeline) -> None:
    """The first upload is read and kept; before its record is written, the link is posted
    again (each post's notification handled at once, by other runs): each finds the claim
    of another ETag and is removed. The image, its labels and thumbnails are the first's."""
    pipeline.storage.upload(KEY, jpeg(640, 480))

    def repost_many() -> None:
        for n in range(REPOSTS):
            pipeline.storage.upload(KEY, other_bytes(n))
            pipeline.notify()

    pipeline.records.before_write = lambda: setattr(
        pipeline.records, "before_write", repost_many
    )  # the claim first, then the analysed record
    pipeline.notify()
    pipeline.run_tasks()

    record = pipeline.record
    assert record["status"] == READY and (record["width"], record["height"]) == (640, 480)
    assert record["thumbnails"]["128"]["height"] == 96
    assert len(pipeline.detector.calls) == 1 and len(pipeline.storage.writes) == 2
    assert sorted(pipeline.storage.objects) == sorted([ORIGINAL, *thumbnail_keys(pipeline)])


def test_the_same_bytes_posted_again_fifty_times_cost_no_analysis(pipeline: Pipeline) -> None:
    """The same file has the same ETag: a post during the analysis finds the run's lease
    and does nothing; one while the thumbnails are made sends no second task; one after
    is removed."""
    data = jpeg(640, 480)
    pipeline.storage.upload(KEY, data)

    def repost_same() -> None:
        for _ in range(REPOSTS):
            pipeline.storage.upload(KEY, data)
            pipeline.notify()

    pipeline.records.before_write = lambda: setattr(pipeline.records, "before_write", repost_same)
    pipeline.notify()
    assert pipeline.record["status"] == PROCESSING and len(pipeline.tasks.sent) == 1
    repost_same()  # while the thumbnail task waits
    assert len(pipeline.tasks.sent) == 1, "no second thumbnail task"
    pipeline.run_tasks()
    repost_same()
    pipeline.run_tasks()

    assert len(pipeline.detector.calls) == 1 and len(pipeline.storage.writes) == 2
    assert pipeline.record["status"] == READY
    assert sorted(pipeline.storage.objects) == sorted([ORIGINAL, *thumbnail_keys(pipeline)])


def test_a_repost_of_a_failed_upload_is_not_analysed_either(pipeline: Pipeline) -> None:
    """A file refused (here: not a picture) is the image too: the link is spent; the client
    requests a new one (which the daily quotas count)."""
    pipeline.storage.upload(KEY, b"not a picture")
    pipeline.notify()
    failed = pipeline.record
    pipeline.storage.upload(KEY, jpeg())
    pipeline.notify()
    assert pipeline.record == failed and pipeline.detector.calls == []
    assert sorted(pipeline.storage.objects) == [ORIGINAL]
