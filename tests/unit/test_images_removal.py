"""Deleting images while the pipeline runs, and erasing or exporting an owner's images, with
the in-memory stand-ins: whatever order the steps take, a deleted image never comes back,
leaves no object behind, and once its removal is finished nothing stored names its owner
(tombstones and the erased-owner marker hold no user id)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.core.errors import Conflict
from chalicelib.images.model import (
    DELETED,
    MAX_RECEIVES,
    READY,
    TOMBSTONE_DAYS,
    erased_owner_marker,
    original_key,
    owner_digest,
    upload_key,
)
from chalicelib.images.owner_data import PAGE, ImageOwnerData, ImageOwnerExport
from chalicelib.images.removal import ImageRemoval
from tests.unit.images_fakes import IMAGE, KEY, ORIGINAL, OWNER, Pipeline, jpeg

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
OTHER = "99999999-2222-4333-8444-555555555555"


class World(Pipeline):
    def __init__(self) -> None:
        super().__init__()
        self.removal = ImageRemoval(self.storage, self.records, now=lambda: NOW)
        self.owner_data = ImageOwnerData(self.storage, self.records, self.removal, now=lambda: NOW)

    def delete(self, image_id: str = IMAGE, owner: str = OWNER) -> bool:
        return self.removal.remove(image_id, owner)

    def ready_image(self, key: str = KEY) -> None:
        self.storage.upload(key, jpeg())
        self.notify(key)
        self.run_tasks()

    def objects_of(self, owner: str = OWNER) -> list[str]:
        return sorted(k for k in self.storage.objects if f"/{owner}/" in k)

    def naming(self, owner: str = OWNER) -> list[str]:
        """Every stored item (record, tombstone, marker) and object key holding `owner`'s id."""
        items = [json.dumps(r, default=str) for r in self.records.records.values()]
        return [text for text in [*items, *self.storage.objects] if owner in text]


@pytest.fixture
def world() -> World:
    return World()


def test_a_deleted_image_is_a_tombstone_without_labels_and_without_objects(world: World) -> None:
    world.ready_image()
    assert len(world.objects_of()) == 3, "the kept original and two thumbnails"
    world.storage.upload(original_key(OWNER, IMAGE, "png"), b"?")  # either extension goes
    assert world.delete() is True
    expires = int((NOW + timedelta(days=TOMBSTONE_DAYS)).timestamp())
    assert world.record == {
        "image_id": IMAGE,
        "status": DELETED,
        "deleted_at": "2026-11-26T12:00:00.000000Z",
        "expires_at": expires,
        "version": world.record["version"],
    }, "no owner, key, labels or index keys"
    assert world.objects_of() == [] and world.naming() == []
    assert world.records.owned_page(OWNER, 10, None) == ([], None)
    assert world.delete() is False, "deleting again deletes nothing"


def test_a_delete_removes_the_images_objects_in_one_batch(world: World) -> None:
    world.ready_image()
    thumbnails = [k for k in world.objects_of() if k.startswith("thumbnails/")]
    world.storage.batches.clear()
    world.delete()
    fixed = {f(OWNER, IMAGE, e) for f in (upload_key, original_key) for e in ("jpg", "png")}
    assert [set(b) for b in world.storage.batches] == [fixed | set(thumbnails)]


def test_a_delete_that_failed_half_way_is_finished_by_the_next(world: World) -> None:
    world.ready_image()
    world.storage.failing_removes = 1
    with pytest.raises(ConnectionError):
        world.delete()
    assert world.record["status"] == DELETED and len(world.objects_of()) == 3
    assert world.record["owner_id"] == OWNER, "named until its objects are gone"
    assert [r["image_id"] for r in world.records.owned_page(OWNER, 10, None)[0]] == [IMAGE]
    assert world.delete() is False
    assert world.objects_of() == [] and world.naming() == []


def test_a_delete_stopped_before_forgetting_the_owner_is_finished_by_the_next(
    world: World,
) -> None:
    """The objects are gone but the tombstone could not be rewritten (DynamoDB failed):
    the next delete forgets the owner."""
    world.ready_image()
    real_save = world.records.save
    calls = []

    def save_failing_the_second_time(record: dict, previous: dict | None) -> bool:
        calls.append(record)
        if len(calls) == 2:
            raise ConnectionError("DynamoDB is down")
        return real_save(record, previous)

    world.records.save = save_failing_the_second_time  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        world.delete()
    assert world.objects_of() == [] and world.record["owner_id"] == OWNER
    assert world.delete() is False
    assert world.naming() == []


def test_a_delete_racing_another_writer_retries_on_what_is_stored(world: World) -> None:
    world.ready_image()
    world.records.race = {"note": "another writer"}
    assert world.delete() is True and world.record["status"] == DELETED


def test_a_delete_that_never_gets_its_write_in_is_a_conflict(world: World) -> None:
    world.ready_image()

    def always_changed() -> None:
        stored = world.records.records[IMAGE]
        stored["version"] += 1
        world.records.before_write = always_changed

    world.records.before_write = always_changed
    with pytest.raises(Conflict):
        world.delete()


# --- races with the pipeline ------------------------------------------------------------


@pytest.mark.parametrize("moment", ["claim", "analysed record"])
def test_delete_while_the_upload_is_analysed_leaves_no_record_and_no_object(
    world: World, moment: str
) -> None:
    """The delete comes before the claim is written, or once the upload is kept and labelled
    (just before its record is written): that write (conditional) fails, the retry finds the
    tombstone and removes what the run kept after the delete listed the objects."""
    world.storage.upload(KEY, jpeg())
    delete = lambda: world.delete()  # noqa: E731
    world.records.before_write = (
        delete if moment == "claim" else lambda: setattr(world.records, "before_write", delete)
    )
    world.notify()
    assert world.record["status"] == DELETED
    assert world.objects_of() == [] and world.tasks.sent == [] and world.naming() == []


def test_delete_while_a_died_runs_redelivery_takes_over(world: World) -> None:
    """The run that claimed the image died; its redelivery, past the lease, takes it over
    (a conditional write) just as the image is deleted: the write fails, the retry finds
    the tombstone and removes the upload and the original."""
    world.storage.upload(KEY, jpeg())
    notification = world.notification()
    world.detector.outage = True
    with pytest.raises(ConnectionError):
        world.analysis.handle(notification, 1)
    assert ORIGINAL in world.storage.objects
    world.detector.outage = False
    world.clock.advance(seconds=360)
    world.records.before_write = lambda: world.delete()
    world.analysis.handle(notification, 2)
    assert world.record["status"] == DELETED and len(world.detector.calls) == 1
    assert world.objects_of() == [] and world.naming() == []


def test_an_original_kept_after_the_delete_is_removed_by_the_redelivery(world: World) -> None:
    """The run kept the original after the delete removed the objects, then died: its
    redelivery (the upload gone) finds the tombstone and removes the original."""
    world.storage.upload(KEY, jpeg())
    notification = world.notification()
    world.storage.before_write = lambda: world.delete()  # the delete, then the run keeps
    world.detector.outage = True
    with pytest.raises(ConnectionError):
        world.analysis.handle(notification, 1)
    world.detector.outage = False
    world.clock.advance(seconds=360)
    world.analysis.handle(notification, 2)
    assert world.record["status"] == DELETED and world.naming() == []
    assert world.objects_of() == []


def test_a_thumbnail_task_arriving_after_the_delete_does_nothing(world: World) -> None:
    world.storage.upload(KEY, jpeg())
    world.notify()
    world.delete()
    world.run_tasks()
    assert world.storage.writes == [] and world.record["status"] == DELETED


def test_thumbnails_written_while_the_image_is_deleted_are_removed_by_their_task(
    world: World,
) -> None:
    """The task read the upload; the delete lists and removes the thumbnails before the
    task writes them: the task finds the tombstone when it finishes and removes its own."""
    world.storage.upload(KEY, jpeg())
    world.notify()
    world.storage.before_write = lambda: world.delete()
    world.run_tasks()
    assert len(world.storage.writes) == 2, "written after the delete's listing"
    assert world.objects_of() == [] and world.record["status"] == DELETED
    assert world.naming() == []


def test_an_upload_posted_again_after_the_delete_is_removed_not_analysed(world: World) -> None:
    """The presigned POST stays valid 5 minutes: a re-post under a deleted id is removed."""
    world.ready_image()
    world.delete()
    world.storage.upload(KEY, jpeg(), modified="2026-11-26T00:05:00Z")
    world.notify()
    assert world.record["status"] == DELETED and world.objects_of() == []
    assert world.detector.calls == [f"s3:{ORIGINAL}"], "analysed once, before the delete"
    assert world.naming() == []


def test_the_last_receive_never_turns_a_tombstone_into_a_failure(world: World) -> None:
    world.storage.upload(KEY, jpeg())
    world.delete()
    world.storage.upload(KEY, jpeg(), modified="2026-11-26T00:05:00Z")
    world.storage.failing = 1
    with pytest.raises(ConnectionError):
        world.notify(receive_count=MAX_RECEIVES)
    assert world.record["status"] == DELETED


def test_a_thumbnail_task_on_its_last_receive_leaves_a_tombstone_alone(world: World) -> None:
    world.storage.upload(KEY, jpeg())
    world.notify()
    [task] = world.tasks.sent
    world.delete()
    world.thumbnails.handle(json.dumps(task), MAX_RECEIVES)
    assert world.record["status"] == DELETED


# --- erase and export ---------------------------------------------------------------------


def image_key(n: int, owner: str = OWNER) -> str:
    return upload_key(owner, f"aaaaaaaa-bbbb-4ccc-8ddd-{n:012d}", "jpg")


def test_erase_removes_every_image_across_pages_and_every_object(world: World) -> None:
    for n in range(PAGE + 5):  # more than one page of the index
        world.storage.upload(image_key(n), jpeg(8, 8))
        world.notify(image_key(n))
    world.run_tasks()
    world.storage.upload(image_key(900), jpeg(8, 8))  # never analysed
    world.storage.upload(f"uploads/{OWNER}/stray.txt", b"?")  # not an upload key
    world.storage.upload(original_key(OWNER, "aaaaaaaa-bbbb-4ccc-8ddd-000000000950", "png"), b"?")
    world.ready_image(image_key(1001, OTHER))
    others = world.objects_of(OTHER)
    world.storage.batches.clear()

    assert world.owner_data.erase(OWNER) == PAGE + 6
    assert world.objects_of() == []
    # one batch delete per image, then one per listing page (the stray; the leftover original)
    assert len(world.storage.batches) == PAGE + 6 + 2
    assert world.records.owned_page(OWNER, 1000, None) == ([], None)
    stones = [r for r in world.records.records.values() if r.get("status") == DELETED]
    assert len(stones) == PAGE + 6
    assert {frozenset(r) for r in stones} == {
        frozenset({"image_id", "status", "deleted_at", "expires_at", "version"})
    }
    assert world.naming() == [], "no record, tombstone, marker or object holds the id"
    assert world.objects_of(OTHER) == others, "another owner's images stay"
    assert world.owner_data.erase(OWNER) == 0, "idempotent"
    assert world.naming() == []


def test_the_erased_owner_marker_holds_a_digest_of_the_id_and_no_id(world: World) -> None:
    world.owner_data.erase(OWNER)
    marker = world.records.records[erased_owner_marker(OWNER)]
    digest = hashlib.sha256(OWNER.encode()).hexdigest()
    assert owner_digest(OWNER) == digest
    assert marker == {
        "image_id": f"erased-owner#{digest}",
        "erased_at": "2026-11-26T12:00:00.000000Z",
        "expires_at": int((NOW + timedelta(days=TOMBSTONE_DAYS)).timestamp()),
    }
    assert world.records.owner_erased(OWNER) and not world.records.owner_erased(OTHER)


def test_an_erase_that_failed_is_finished_by_running_it_again(world: World) -> None:
    for n in range(3):
        world.ready_image(image_key(n))
    world.storage.failing_removes = 1
    with pytest.raises(ConnectionError):
        world.owner_data.erase(OWNER)
    assert world.owner_data.erase(OWNER) == 2
    assert world.objects_of() == [] and world.naming() == []


def test_an_erase_stopped_after_an_upload_went_finishes_the_tombstone_through_the_index(
    world: World,
) -> None:
    """The first run removed the original, then failed on a thumbnail: no upload is left
    under the prefix to lead the next run to the image, but its tombstone (still naming the owner)
    is in the owner's index, so the next run finishes it and forgets the owner."""
    world.ready_image()
    real_remove_all = world.storage.remove_all
    failed: list[str] = []

    def failing_on_the_first_thumbnail(keys: Iterable[str]) -> None:
        """DeleteObjects deleting every key but one, which it answers with an error."""
        batch = list(keys)
        thumbnail = next((k for k in batch if k.startswith("thumbnails/")), None)
        if thumbnail is None or failed:
            return real_remove_all(batch)
        failed.append(thumbnail)
        real_remove_all(k for k in batch if k != thumbnail)
        raise ConnectionError("S3 could not delete one object")

    world.storage.remove_all = failing_on_the_first_thumbnail  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        world.owner_data.erase(OWNER)
    assert ORIGINAL not in world.storage.objects and world.record["owner_id"] == OWNER
    assert world.owner_data.erase(OWNER) == 0, "deleted by the first run already"
    assert world.objects_of() == [] and world.naming() == []


def test_an_upload_of_an_erased_owner_is_removed_not_analysed(world: World) -> None:
    """Posted with a link issued before the erasure (they stay valid 5 minutes)."""
    world.owner_data.erase(OWNER)
    world.storage.upload(KEY, jpeg())
    world.notify()
    assert world.records.get(IMAGE) is None and world.objects_of() == []
    assert world.detector.calls == [] and world.naming() == []


def test_the_presigned_post_used_again_after_the_erasure_is_removed(world: World) -> None:
    """An image analysed, the owner erased, then the same presigned POST used again (its
    key names the owner): the marker, found from the key's digest, has it removed; the
    forgotten tombstone would too."""
    world.ready_image()
    world.owner_data.erase(OWNER)
    world.storage.upload(KEY, jpeg(), modified="2026-11-26T00:05:00Z")
    world.notify()
    assert world.objects_of() == [] and world.naming() == []
    assert world.record["status"] == DELETED and world.detector.calls == [f"s3:{ORIGINAL}"]


def test_erase_while_an_upload_is_analysed(world: World) -> None:
    """The analysis passed the marker check, claimed the image, kept the file, got labels;
    the erasure comes before its write: the write fails, its retry finds the tombstone and
    removes the original the erasure may have listed before it was kept."""
    world.storage.upload(KEY, jpeg())
    erase = lambda: world.owner_data.erase(OWNER)  # noqa: E731
    world.records.before_write = lambda: setattr(world.records, "before_write", erase)
    world.notify()
    assert world.record["status"] == DELETED and world.objects_of() == []
    assert world.tasks.sent == [] and world.naming() == []


def test_a_late_analysis_of_an_erased_owner_on_its_last_receive_records_nothing(
    world: World,
) -> None:
    """An upload posted after the erasure, S3 failing on the analysis's last receive: the
    failure is not recorded (that record would name the owner; the erasure's later passes
    remove the upload left in the bucket)."""
    world.owner_data.erase(OWNER)
    world.storage.upload(KEY, jpeg())
    world.storage.failing = 1
    with pytest.raises(ConnectionError):
        world.notify(receive_count=MAX_RECEIVES)
    assert world.records.get(IMAGE) is None
    assert [text for text in world.naming() if text != KEY] == []
    world.owner_data.erase(OWNER)
    assert world.naming() == []


def test_erase_while_thumbnails_are_made(world: World) -> None:
    """The thumbnail task read the upload; the erasure removes everything before the task
    writes its thumbnails: the task finds the tombstone and removes what it wrote."""
    world.storage.upload(KEY, jpeg())
    world.notify()
    world.storage.before_write = lambda: world.owner_data.erase(OWNER)
    world.run_tasks()
    assert len(world.storage.writes) == 2, "written after the erasure's listing"
    assert world.objects_of() == [] and world.naming() == []


def test_a_thumbnail_task_arriving_after_the_erasure_does_nothing(world: World) -> None:
    world.storage.upload(KEY, jpeg())
    world.notify()
    world.owner_data.erase(OWNER)
    world.run_tasks()
    assert world.storage.writes == [] and world.naming() == []


def test_export_lists_every_record_with_links_json_ready(world: World) -> None:
    for n in range(PAGE + 2):
        world.storage.upload(image_key(n), jpeg(8, 8))
        world.notify(image_key(n))
    world.run_tasks()
    world.delete(f"aaaaaaaa-bbbb-4ccc-8ddd-{0:012d}", OWNER)
    world.ready_image(image_key(1001, OTHER))

    exported = world.owner_data.export(OWNER)
    assert len(exported) == PAGE + 1, "every page; the deleted one left out"
    json.dumps(exported)  # JSON-ready: no Decimals
    first = exported[0]
    assert first["owner_id"] == OWNER and first["status"] == READY
    assert first["label_names"] == ["Dog", "Pet"] and first["size"] > 0
    assert first["created_at"] and "version" not in first and "etag" not in first
    assert first["urls"]["original"].startswith("https://signed.example/originals/")
    assert set(first["urls"]["thumbnails"]) == {"128", "512"}
    assert world.owner_data.export(OTHER)[0]["owner_id"] == OTHER


def test_the_export_only_object_exports_the_same_and_cannot_erase(world: World) -> None:
    world.ready_image()
    exporter = ImageOwnerExport(world.storage, world.records)
    assert exporter.export(OWNER) == world.owner_data.export(OWNER) != []
    assert not hasattr(exporter, "erase")


def test_an_export_leaves_out_a_tombstone_still_in_the_index(world: World) -> None:
    world.ready_image()
    world.storage.failing_removes = 1
    with pytest.raises(ConnectionError):
        world.delete()
    assert world.records.owned_page(OWNER, 10, None)[0], "unfinished: still indexed"
    assert world.owner_data.export(OWNER) == []


@pytest.mark.parametrize("bad", ["", "../x", IMAGE.upper(), f"{OWNER}/"])
def test_owner_data_takes_only_user_ids(world: World, bad: str) -> None:
    """A prefix like `uploads/` + "" would name every user's uploads."""
    with pytest.raises(ValueError):
        world.owner_data.erase(bad)
    with pytest.raises(ValueError):
        world.owner_data.export(bad)
    with pytest.raises(ValueError):
        ImageOwnerExport(world.storage, world.records).export(bad)
