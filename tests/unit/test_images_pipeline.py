"""The image pipeline's decisions, with in-memory stand-ins for S3, Rekognition, DynamoDB and
SQS (their real adapters are tested against moto in test_images_aws.py): idempotency on
duplicates, re-uploads, unusable files, and what happens on the last receive."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from chalicelib.images.model import FAILED, MAX_RECEIVES, PROCESSING, READY
from chalicelib.images.pipeline import HEADER_BYTES
from tests.unit.images_fakes import BUCKET, IMAGE, KEY, OWNER, Pipeline, jpeg


@pytest.fixture
def pipeline() -> Pipeline:
    return Pipeline()


def test_upload_gets_labels_record_task_then_thumbnails(pipeline: Pipeline) -> None:
    etag = pipeline.storage.upload(KEY, jpeg(640, 480))
    pipeline.notify()
    record = pipeline.record
    assert record["status"] == PROCESSING
    assert (record["owner_id"], record["key"], record["etag"]) == (OWNER, KEY, etag)
    assert (record["width"], record["height"], record["content_type"]) == (640, 480, "image/jpeg")
    assert [(label["name"], str(label["confidence"])) for label in record["labels"]] == [
        ("Dog", "98.12"),
        ("Pet", "85.5"),
    ]
    assert pipeline.detector.calls == [f"s3:{KEY}"], "Rekognition reads small files from S3"
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
    pipeline.notify()
    pipeline.run_tasks()
    saves, version = pipeline.records.saves, pipeline.record["version"]
    pipeline.notify()
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
    notification, which finds the record waiting and sends the task (no new analysis)."""
    etag = pipeline.storage.upload(KEY, jpeg())
    pipeline.notify()
    pipeline.tasks.sent.clear()  # the send never happened
    pipeline.notify(receive_count=2)
    assert pipeline.tasks.sent == [{"image_id": IMAGE, "etag": etag}]
    assert len(pipeline.detector.calls) == 1


def test_reupload_under_the_same_id_replaces_the_record(pipeline: Pipeline) -> None:
    pipeline.storage.upload(KEY, jpeg(640, 480))
    pipeline.notify()
    pipeline.run_tasks()
    first = pipeline.record
    pipeline.detector.labels = [{"name": "Cat", "confidence": 99.0}]
    second_etag = pipeline.storage.upload(KEY, jpeg(300, 600), modified="2026-11-26T00:01:00Z")
    pipeline.notify()
    record = pipeline.record
    assert record["etag"] == second_etag and (record["width"], record["height"]) == (300, 600)
    assert [label["name"] for label in record["labels"]] == ["Cat"]
    assert record["created_at"] == first["created_at"], "the image keeps its place in lists"
    pipeline.run_tasks()
    assert pipeline.record["status"] == READY
    new_key, old_key = (r["thumbnails"]["128"]["key"] for r in (pipeline.record, first))
    assert new_key != old_key, "a new upload's thumbnails never overwrite the old ones in place"


def test_event_for_an_overwritten_upload_is_ignored(pipeline: Pipeline) -> None:
    pipeline.storage.upload(KEY, jpeg())
    old = json.dumps(
        {"Records": [{"eventName": "ObjectCreated:Post", "s3": {"bucket": {"name": BUCKET},
                      "object": {"key": KEY, "eTag": pipeline.storage.objects[KEY][1]}}}]}
    )  # fmt: skip
    pipeline.storage.upload(KEY, jpeg(10, 10), modified="2026-11-26T00:01:00Z")
    pipeline.analysis.handle(old, 1)
    assert pipeline.records.get(IMAGE) is None and pipeline.detector.calls == []


def test_stale_task_after_a_reupload_does_nothing(pipeline: Pipeline) -> None:
    pipeline.storage.upload(KEY, jpeg())
    pipeline.notify()
    stale_tasks = list(pipeline.tasks.sent)
    pipeline.storage.upload(KEY, jpeg(50, 50), modified="2026-11-26T00:01:00Z")
    pipeline.notify()
    for task in stale_tasks:
        pipeline.thumbnails.handle(json.dumps(task), 1)
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
        assert pipeline.records.get(IMAGE) is None
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
    pipeline.notify()
    pipeline.storage.failing = 1
    with pytest.raises(ConnectionError):
        pipeline.notify(receive_count=MAX_RECEIVES)
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


def test_large_files_read_only_the_header_and_big_ones_go_to_rekognition_as_bytes(
    pipeline: Pipeline,
) -> None:
    noisy = Image.effect_noise((1200, 900), 80).convert("RGB")
    out = io.BytesIO()
    noisy.save(out, "JPEG", quality=100)
    data = out.getvalue()
    assert len(data) > HEADER_BYTES
    pipeline.storage.upload(KEY, data)
    pipeline.notify()
    assert pipeline.storage.reads == [(KEY, HEADER_BYTES)]
    assert pipeline.detector.calls == [f"s3:{KEY}"]

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
    assert pipeline.storage.reads == []


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
