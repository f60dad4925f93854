"""The image pipeline's decisions, with in-memory stand-ins for S3, Rekognition, DynamoDB and
SQS (their real adapters are tested against moto in test_images_aws.py): idempotency on
duplicates, the lease of a run and its takeover, unusable files, and what happens on the
last receive. Uploads posted again under an image's key: test_images_reposts.py."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from chalicelib.images.model import (
    ANALYSIS_LEASE_SECONDS,
    FAILED,
    MAX_RECEIVES,
    PROCESSING,
    READY,
    RECEIVED,
)
from chalicelib.images.pipeline import UPLOAD_LOST
from tests.unit.images_fakes import BUCKET, IMAGE, KEY, ORIGINAL, OWNER, Pipeline, jpeg

#: When SQS brings back a message whose run failed or died: the queue's visibility timeout.
REDELIVERY_SECONDS = 360


@pytest.fixture
def pipeline() -> Pipeline:
    return Pipeline()


def test_only_an_upload_without_a_record_checks_the_erased_owner_marker(
    pipeline: Pipeline,
) -> None:
    pipeline.storage.upload(KEY, jpeg())
    pipeline.notify()
    assert pipeline.records.erased_checks == 1
    pipeline.storage.upload(KEY, jpeg(color="blue"))  # posted again: the record exists
    pipeline.notify()
    assert pipeline.records.erased_checks == 1


def test_upload_gets_labels_record_task_then_thumbnails(pipeline: Pipeline) -> None:
    data = jpeg(640, 480)
    etag = pipeline.storage.upload(KEY, data)
    pipeline.notify()
    record = pipeline.record
    assert record["status"] == PROCESSING
    assert (record["owner_id"], record["key"], record["etag"]) == (OWNER, ORIGINAL, etag)
    assert pipeline.storage.objects[ORIGINAL][0] == data, "kept under originals/"
    assert KEY not in pipeline.storage.objects, "the upload is removed once kept"
    assert (record["width"], record["height"], record["content_type"]) == (640, 480, "image/jpeg")
    assert [(label["name"], str(label["confidence"])) for label in record["labels"]] == [
        ("Dog", "98.12"),
        ("Pet", "85.5"),
    ]
    assert pipeline.detector.calls == [f"s3:{ORIGINAL}"], "Rekognition reads the original"
    assert pipeline.tasks.sent == [{"image_id": IMAGE, "etag": etag}]
    pipeline.run_tasks()
    record = pipeline.record
    assert record["status"] == READY
    assert {size: (t["width"], t["height"]) for size, t in record["thumbnails"].items()} == {
        "128": (128, 96),
        "512": (512, 384),
    }
    for thumbnail in record["thumbnails"].values():
        assert thumbnail["key"].startswith(f"thumbnails/{OWNER}/{IMAGE}/")
        assert thumbnail["key"] in pipeline.storage.objects


def test_duplicate_notification_makes_no_second_record_or_task(pipeline: Pipeline) -> None:
    pipeline.storage.upload(KEY, jpeg())
    notification = pipeline.notification()
    pipeline.analysis.handle(notification, 1)
    pipeline.run_tasks()
    saves, version = pipeline.records.saves, pipeline.record["version"]
    pipeline.analysis.handle(notification, 1)
    pipeline.clock.advance(seconds=REDELIVERY_SECONDS)
    pipeline.analysis.handle(notification, 2)
    assert pipeline.records.saves == saves and pipeline.record["version"] == version
    assert pipeline.tasks.sent == []
    assert len(pipeline.detector.calls) == 1


def test_duplicate_task_makes_no_second_thumbnail(pipeline: Pipeline) -> None:
    etag = pipeline.storage.upload(KEY, jpeg())
    pipeline.notify()
    pipeline.tasks.sent.append({"image_id": IMAGE, "etag": etag})  # delivered twice
    pipeline.run_tasks()
    assert len(pipeline.storage.writes) == 2
    assert pipeline.record["status"] == READY


def test_task_lost_after_the_record_is_queued_again_by_the_redelivery(pipeline: Pipeline) -> None:
    """A crash between storing the record and sending the task: SQS redelivers the
    notification after its visibility timeout, past the run's lease; it finds the record
    waiting and sends the task (no new analysis). A duplicate within the lease (the run may
    still be sending) sends nothing."""
    etag = pipeline.storage.upload(KEY, jpeg())
    notification = pipeline.notification()
    pipeline.analysis.handle(notification, 1)
    pipeline.tasks.sent.clear()  # the send never happened
    pipeline.analysis.handle(notification, 1)
    assert pipeline.tasks.sent == []
    pipeline.clock.advance(seconds=REDELIVERY_SECONDS)
    pipeline.analysis.handle(notification, 2)
    assert pipeline.tasks.sent == [{"image_id": IMAGE, "etag": etag}]
    assert len(pipeline.detector.calls) == 1
    pipeline.analysis.handle(notification, 3)
    assert len(pipeline.tasks.sent) == 1, "the redelivery took a new lease"


def test_event_for_an_overwritten_upload_is_ignored(pipeline: Pipeline) -> None:
    pipeline.storage.upload(KEY, jpeg())
    old = json.dumps(
        {"Records": [{"eventName": "ObjectCreated:Post", "s3": {"bucket": {"name": BUCKET},
                      "object": {"key": KEY, "eTag": pipeline.storage.objects[KEY][1]}}}]}
    )  # fmt: skip
    pipeline.storage.upload(KEY, jpeg(10, 10), modified="2026-11-26T00:01:00Z")
    pipeline.analysis.handle(old, 1)
    assert pipeline.records.get(IMAGE) is None and pipeline.detector.calls == []


def test_a_task_of_another_upload_does_nothing(pipeline: Pipeline) -> None:
    pipeline.storage.upload(KEY, jpeg())
    pipeline.notify()
    pipeline.thumbnails.handle(json.dumps({"image_id": IMAGE, "etag": "0" * 32}), 1)
    assert pipeline.storage.writes == [] and pipeline.record["status"] == PROCESSING


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"GIF89a not really", "not a JPEG or PNG"),
        (b"hello, I am a text file", "not a JPEG or PNG"),
    ],
)
def test_unusable_files_fail_with_a_reason_and_no_task(
    pipeline: Pipeline, data: bytes, reason: str
) -> None:
    pipeline.storage.upload(KEY, data)
    pipeline.notify()
    record = pipeline.record
    assert record["status"] == FAILED and reason in record["reason"]
    assert record["retryable"] is False
    assert pipeline.tasks.sent == [] and pipeline.detector.calls == []
    assert sorted(pipeline.storage.objects) == ([ORIGINAL] if data else []), "empty: not kept"


def test_rekognition_refusal_fails_the_image(pipeline: Pipeline) -> None:
    pipeline.storage.upload(KEY, jpeg())
    pipeline.detector.refusal = "Rekognition cannot read this image format"
    pipeline.notify()
    assert pipeline.record["status"] == FAILED
    assert pipeline.record["reason"] == "Rekognition cannot read this image format"


def test_corrupt_pixel_data_fails_at_the_thumbnail_step(pipeline: Pipeline) -> None:
    """The header is fine (analysis passes), the data is cut: thumbnails fail, once."""
    noisy = Image.effect_noise((800, 600), 64).convert("RGB")
    out = io.BytesIO()
    noisy.save(out, "JPEG", quality=95)
    pipeline.storage.upload(KEY, out.getvalue()[: len(out.getvalue()) // 2])
    pipeline.notify()
    assert pipeline.record["status"] == PROCESSING
    pipeline.run_tasks()
    assert pipeline.record["status"] == FAILED and "corrupt" in pipeline.record["reason"]
    assert pipeline.storage.writes == []


def test_outage_raises_for_a_retry_and_the_last_receive_records_it(pipeline: Pipeline) -> None:
    pipeline.storage.upload(KEY, jpeg())
    pipeline.detector.outage = True
    for receive in range(1, MAX_RECEIVES):
        with pytest.raises(ConnectionError):
            pipeline.notify(receive_count=receive)
        assert pipeline.record["status"] == RECEIVED, "claimed, not analysed"
        pipeline.clock.advance(seconds=REDELIVERY_SECONDS)
    with pytest.raises(ConnectionError):  # raised still: the queue dead-letters the message
        pipeline.notify(receive_count=MAX_RECEIVES)
    record = pipeline.record
    assert record["status"] == FAILED and record["retryable"] is True
    assert "redrive" in record["reason"]
    # Redriven from the DLQ once Rekognition is back: analysed as if new.
    pipeline.detector.outage = False
    pipeline.notify(receive_count=1)
    assert pipeline.record["status"] == PROCESSING and pipeline.tasks.sent


def test_last_receive_never_downgrades_a_stored_record(pipeline: Pipeline) -> None:
    pipeline.storage.upload(KEY, jpeg())
    notification = pipeline.notification()
    pipeline.analysis.handle(notification, 1)
    pipeline.storage.failing = 1
    with pytest.raises(ConnectionError):
        pipeline.analysis.handle(notification, MAX_RECEIVES)
    assert pipeline.record["status"] == PROCESSING


def test_thumbnail_outage_on_last_receive_marks_the_image_failed(pipeline: Pipeline) -> None:
    pipeline.storage.upload(KEY, jpeg())
    pipeline.notify()
    task = pipeline.tasks.sent[0]

    def broken_write(key: str, data: bytes, content_type: str) -> None:
        raise ConnectionError("S3 is down")

    pipeline.storage.write = broken_write  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        pipeline.thumbnails.handle(json.dumps(task), 1)
    assert pipeline.record["status"] == PROCESSING
    with pytest.raises(ConnectionError):
        pipeline.thumbnails.handle(json.dumps(task), MAX_RECEIVES)
    assert pipeline.record["status"] == FAILED and pipeline.record["retryable"] is True


def test_concurrent_change_is_retried_not_overwritten(pipeline: Pipeline) -> None:
    pipeline.storage.upload(KEY, jpeg())
    pipeline.notify()
    pipeline.records.race = {"note": "another writer"}
    pipeline.run_tasks()
    assert pipeline.record["status"] == READY and pipeline.record["note"] == "another writer"


def test_the_upload_is_read_once_and_big_ones_go_to_rekognition_as_bytes(
    pipeline: Pipeline,
) -> None:
    """The claimed upload is read once, whole (at its ETag), and kept; Rekognition reads the
    kept original from S3, or, over its 15 MB S3 limit, gets a 2,048 px copy as bytes."""
    noisy = Image.effect_noise((1200, 900), 80).convert("RGB")
    out = io.BytesIO()
    noisy.save(out, "JPEG", quality=100)
    data = out.getvalue()
    pipeline.storage.upload(KEY, data)
    pipeline.notify()
    assert pipeline.storage.reads == [KEY]
    assert pipeline.detector.calls == [f"s3:{ORIGINAL}"]

    from chalicelib.images import imaging

    other = Pipeline()
    other.storage.upload(KEY, data)
    limit = imaging.REKOGNITION_MAX_S3_BYTES
    imaging.REKOGNITION_MAX_S3_BYTES = len(data) - 1  # as if the file were over 15 MB
    try:
        other.notify()
    finally:
        imaging.REKOGNITION_MAX_S3_BYTES = limit
    assert other.detector.calls[0].startswith("bytes:")
    assert other.record["status"] == PROCESSING


def test_files_over_20_mb_fail_even_if_s3_let_them_in(pipeline: Pipeline) -> None:
    """S3 enforces the POST policy's size range; the emulator does not, nor would a bucket
    written by other means."""
    pipeline.storage.upload(KEY, b"\xff\xd8" + b"\0" * (20 * 1024 * 1024))
    pipeline.notify()
    assert pipeline.record["status"] == FAILED and "larger than 20 MB" in pipeline.record["reason"]
    assert pipeline.storage.reads == [] and pipeline.storage.kept == []
    assert pipeline.storage.objects == {}, "not kept; the upload removed"


def test_foreign_keys_and_other_events_are_ignored(pipeline: Pipeline) -> None:
    pipeline.storage.upload("uploads/not-a-uuid/x.jpg", jpeg())
    pipeline.notify("uploads/not-a-uuid/x.jpg")
    pipeline.storage.upload(KEY, jpeg())
    pipeline.notify(event="ObjectRemoved:Delete")
    pipeline.analysis.handle(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}), 1)
    assert pipeline.records.records == {}


def test_malformed_message_raises_so_the_queue_dead_letters_it(pipeline: Pipeline) -> None:
    with pytest.raises(json.JSONDecodeError):
        pipeline.analysis.handle("not json", 1)
    with pytest.raises((KeyError, json.JSONDecodeError)):
        pipeline.thumbnails.handle("{}", 1)


def test_a_thumbnail_task_redriven_from_the_dlq_finishes_the_image(pipeline: Pipeline) -> None:
    pipeline.storage.upload(KEY, jpeg())
    pipeline.notify()
    task = json.dumps(pipeline.tasks.sent[0])
    write = pipeline.storage.write

    def broken_write(key: str, data: bytes, content_type: str) -> None:
        raise ConnectionError("S3 is down")

    pipeline.storage.write = broken_write  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        pipeline.thumbnails.handle(task, MAX_RECEIVES)
    assert pipeline.record["status"] == FAILED and pipeline.record["retryable"] is True
    pipeline.storage.write = write  # type: ignore[method-assign]
    pipeline.thumbnails.handle(task, 1)  # redriven
    assert pipeline.record["status"] == READY


def test_giving_up_never_touches_another_uploads_record(pipeline: Pipeline) -> None:
    """Upload A's notification fails for good while a re-upload B is already stored: B's
    record stays as it is (A is overwritten anyway)."""
    pipeline.storage.upload(KEY, b"")
    stale = {"eventName": "ObjectCreated:Post", "eventTime": "2026-11-26T00:00:00.000Z",
             "s3": {"bucket": {"name": BUCKET},
                    "object": {"key": KEY, "eTag": "0" * 32, "size": 10}}}  # fmt: skip
    pipeline.notify()  # B: empty, failed for good
    before = pipeline.record
    pipeline.storage.failing = 1
    with pytest.raises(ConnectionError):
        pipeline.analysis.handle(json.dumps({"Records": [stale]}), MAX_RECEIVES)
    assert pipeline.record == before


def test_a_multi_picture_jpeg_is_a_jpeg(pipeline: Pipeline) -> None:
    """Dual-camera phones write MPO (several pictures in one JPEG); Pillow names it MPO."""
    first, second = Image.new("RGB", (640, 480), "red"), Image.new("RGB", (640, 480), "blue")
    out = io.BytesIO()
    first.save(out, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(out.getvalue())).format == "MPO"
    pipeline.storage.upload(KEY, out.getvalue())
    pipeline.notify()
    assert pipeline.record["content_type"] == "image/jpeg"
    pipeline.run_tasks()
    assert pipeline.record["status"] == READY


# --- the lease: one run at a time, and a takeover when it died ---------------------------


def die() -> None:
    raise ConnectionError("the run dies here")


def test_a_duplicate_within_the_lease_does_nothing_and_the_redelivery_takes_over(
    pipeline: Pipeline,
) -> None:
    """The run that claimed the image died before keeping it; another delivery of the same
    upload meanwhile (an S3 duplicate, the same bytes posted again) does nothing, as the run
    might be alive; SQS's redelivery of the run's message, after the lease, finishes it."""
    pipeline.storage.upload(KEY, jpeg())
    notification = pipeline.notification()
    pipeline.storage.before_read = die
    with pytest.raises(ConnectionError):
        pipeline.analysis.handle(notification, 1)
    assert pipeline.record["status"] == RECEIVED and KEY in pipeline.storage.objects
    pipeline.analysis.handle(notification, 1)  # a duplicate, within the lease
    assert pipeline.record["status"] == RECEIVED and pipeline.detector.calls == []
    pipeline.clock.advance(seconds=REDELIVERY_SECONDS)
    pipeline.analysis.handle(notification, 2)
    assert pipeline.record["status"] == PROCESSING and len(pipeline.detector.calls) == 1
    assert sorted(pipeline.storage.objects) == [ORIGINAL]


def test_a_run_that_died_after_keeping_is_finished_from_the_original(pipeline: Pipeline) -> None:
    """Kept, then Rekognition failed; meanwhile a later upload under the key was removed
    (with it, the key is empty): the redelivery analyses the kept original."""
    pipeline.storage.upload(KEY, jpeg(640, 480))
    notification = pipeline.notification()
    pipeline.detector.outage = True
    with pytest.raises(ConnectionError):
        pipeline.analysis.handle(notification, 1)
    assert ORIGINAL in pipeline.storage.kept
    pipeline.storage.upload(KEY, jpeg(300, 600, "blue"))
    pipeline.notify()
    assert KEY not in pipeline.storage.objects, "the later upload, removed unanalysed"
    pipeline.detector.outage = False
    pipeline.clock.advance(seconds=REDELIVERY_SECONDS)
    pipeline.analysis.handle(notification, 2)
    pipeline.run_tasks()
    record = pipeline.record
    assert record["status"] == READY and (record["width"], record["height"]) == (640, 480)
    assert record["thumbnails"]["128"]["height"] == 96, "made from the first upload"
    assert len(pipeline.detector.calls) == 2, "the failed call, and this one"


def test_claimed_bytes_overwritten_before_they_are_read_fail_the_image(pipeline: Pipeline) -> None:
    """The link posted twice within milliseconds: the first upload claimed the image, the
    second overwrote it before it could be read. The first's bytes are gone: the image
    fails (request a new link), nothing is analysed, and no object is left."""
    pipeline.storage.upload(KEY, jpeg())
    later: list[str] = []

    def post_again() -> None:
        pipeline.storage.upload(KEY, jpeg(300, 600, "blue"))
        later.append(pipeline.notification())

    pipeline.storage.before_read = post_again
    pipeline.notify()
    record = pipeline.record
    assert (record["status"], record["reason"], record["retryable"]) == (
        FAILED,
        UPLOAD_LOST,
        False,
    )
    pipeline.analysis.handle(later[0], 1)
    assert pipeline.storage.objects == {} and pipeline.detector.calls == []
    assert pipeline.record["status"] == FAILED


def test_the_lease_outlasts_a_run_and_ends_before_the_redelivery() -> None:
    """Longer than the analysis function's timeout (a live run is never doubled), shorter
    than the uploads queue's visibility timeout (the redelivery of a run that died takes
    over), in every stage."""
    from infra.wiring import CONFIG_FILE
    from tests.unit.test_deploy import RESOURCES

    visibility = RESOURCES["Resources"]["ImageUploadsQueue"]["Properties"]["VisibilityTimeout"]
    assert visibility == REDELIVERY_SECONDS
    stages = json.loads(CONFIG_FILE.read_text())["stages"]
    for stage in ("dev", "staging", "prod"):
        timeout = stages[stage]["lambda_functions"]["analyze_image"]["lambda_timeout"]
        assert timeout < ANALYSIS_LEASE_SECONDS < visibility, stage
