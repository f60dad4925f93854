"""In-memory stand-ins for the images domain's S3, Rekognition, DynamoDB and SQS sides, with
the same rules as the real adapters (conditional writes on `version`, tombstones leaving the
owner's index), and hooks to make another writer act at the worst moment. The real adapters
are tested against moto in test_images_aws.py."""

from __future__ import annotations

import copy
import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from PIL import Image

from chalicelib.core import clock as app_clock
from chalicelib.images.imaging import UnusableImage
from chalicelib.images.model import erased_owner_marker, original_key, upload_key
from chalicelib.images.pipeline import ImageAnalysis, ObjectGone, StoredObject
from chalicelib.images.thumbnails import ThumbnailMaker
from tests.clock import TEST_NOW, RunningClock

BUCKET = "serverless-app-dev-uploads"
OWNER = "11111111-2222-4333-8444-555555555555"
IMAGE = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
KEY = upload_key(OWNER, IMAGE, "jpg")
ORIGINAL = original_key(OWNER, IMAGE, "jpg")


def jpeg(width: int = 640, height: int = 480, color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "JPEG")
    return out.getvalue()


class FakeStorage:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str, str]] = {}  # key -> data, etag, modified
        self.writes: list[str] = []
        self.kept: list[str] = []  # write_once calls that wrote
        self.reads: list[str] = []
        self.removed: list[str] = []
        self.batches: list[list[str]] = []  # remove_all calls
        self.failing = 0
        #: called once, just before the next `write` or `write_once` (another actor at the
        #: worst moment).
        self.before_write: Callable[[], Any] | None = None
        #: called once, just before the next `read` (another actor at the worst moment).
        self.before_read: Callable[[], Any] | None = None
        self.failing_removes = 0

    def upload(self, key: str, data: bytes, modified: str = "2026-11-26T00:00:00Z") -> str:
        """A POST to `key`: the same bytes get the same ETag (S3's, the MD5 of a one-part
        upload)."""
        etag = hashlib.md5(data).hexdigest()
        self.objects[key] = (data, etag, modified)
        return etag

    def describe(self, key: str) -> StoredObject | None:
        if self.failing:
            self.failing -= 1
            raise ConnectionError("S3 is down")
        if key not in self.objects:
            return None
        data, etag, modified = self.objects[key]
        return StoredObject(len(data), etag, modified)

    def read(self, key: str, etag: str | None = None) -> bytes:
        if self.before_read is not None:
            hook, self.before_read = self.before_read, None
            hook()
        self.reads.append(key)
        if key not in self.objects or etag not in (None, self.objects[key][1]):
            raise ObjectGone(key)
        data = self.objects[key][0]
        return data

    def write(self, key: str, data: bytes, content_type: str) -> None:
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook()
        self.writes.append(key)
        self.objects[key] = (data, "thumb", content_type)

    def write_once(self, key: str, data: bytes, content_type: str) -> bool:
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook()
        if key in self.objects:
            return False
        self.kept.append(key)
        self.objects[key] = (data, hashlib.md5(data).hexdigest(), content_type)
        return True

    def remove(self, key: str) -> None:
        if self.failing_removes:
            self.failing_removes -= 1
            raise ConnectionError("S3 is down")
        self.removed.append(key)
        self.objects.pop(key, None)

    def remove_all(self, keys: Iterable[str]) -> None:
        """A batch delete: a failure (`failing_removes`) deletes none of the batch."""
        batch = list(keys)
        if not batch:
            return
        if self.failing_removes:
            self.failing_removes -= 1
            raise ConnectionError("S3 is down")
        self.batches.append(batch)
        for key in batch:
            self.removed.append(key)
            self.objects.pop(key, None)

    def keys_under(self, prefix: str) -> Iterator[str]:
        yield from sorted(k for k in list(self.objects) if k.startswith(prefix))

    def presign_get(self, key: str, expires_in: int) -> str:
        return f"https://signed.example/{key}?expires={expires_in}"

    def presign_post(
        self, key: str, content_type: str, max_bytes: int, expires_in: int
    ) -> dict[str, Any]:
        return {
            "url": "https://bucket.example/",
            "fields": {"key": key, "Content-Type": content_type, "max": str(max_bytes)},
        }


class FakeDetector:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.labels = [
            {"name": "Dog", "confidence": 98.123},
            {"name": "dog", "confidence": 90.0},  # same label, other case: once
            {"name": "Pet", "confidence": 85.5},
        ]
        self.refusal: str | None = None
        self.outage = False

    def detect_in_object(self, key: str) -> list[dict[str, Any]]:
        self.calls.append(f"s3:{key}")
        return self._answer()

    def detect_in_bytes(self, data: bytes) -> list[dict[str, Any]]:
        self.calls.append(f"bytes:{len(data)}")
        return self._answer()

    def _answer(self) -> list[dict[str, Any]]:
        if self.outage:
            raise ConnectionError("Rekognition is down")
        if self.refusal:
            raise UnusableImage(self.refusal)
        return self.labels


class FakeRecords:
    """Conditional writes on `version`, like DynamoImageRecords; the owner's index holds the
    items that have an `owner_id` and a `created_key` (forgotten tombstones have neither)."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.saves = 0
        self.erased_checks = 0  # owner_erased calls (a consistent GetItem each)
        #: changes another writer makes just before the next save/update (a race).
        self.race: dict[str, Any] | None = None
        #: called once, just before the next save/update is checked (another actor).
        self.before_write: Callable[[], Any] | None = None

    def get(self, image_id: str) -> dict[str, Any] | None:
        found = self.records.get(image_id)
        return copy.deepcopy(found) if found else None

    def _check(self, image_id: str, previous: dict[str, Any] | None) -> bool:
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook()
        if self.race is not None and image_id in self.records:
            self.records[image_id].update(self.race, version=self.records[image_id]["version"] + 1)
            self.race = None
        stored = self.records.get(image_id)
        if previous is None:
            return stored is None
        return stored is not None and stored["version"] == previous["version"]

    def save(self, record: dict[str, Any], previous: dict[str, Any] | None) -> bool:
        if not self._check(record["image_id"], previous):
            return False
        self.saves += 1
        self.records[record["image_id"]] = copy.deepcopy(record)
        return True

    def update(self, previous: dict[str, Any], changes: dict[str, Any]) -> bool:
        if not self._check(previous["image_id"], previous):
            return False
        stored = self.records[previous["image_id"]]
        stored.update(copy.deepcopy(changes), version=stored["version"] + 1)
        return True

    def owner_erased(self, owner_id: str) -> bool:
        self.erased_checks += 1
        return erased_owner_marker(owner_id) in self.records

    def mark_owner_erased(self, owner_id: str, erased_at: str, expires_at: int) -> None:
        self.records[erased_owner_marker(owner_id)] = {
            "image_id": erased_owner_marker(owner_id),
            "erased_at": erased_at,
            "expires_at": expires_at,
        }

    def _indexed(self, owner_id: str) -> list[dict[str, Any]]:
        return sorted(
            (
                r
                for r in self.records.values()
                if r.get("owner_id") == owner_id and "created_key" in r
            ),
            key=lambda r: r["created_key"],
            reverse=True,
        )

    def owned_page(
        self, owner_id: str, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        items = [r for r in self._indexed(owner_id) if after is None or r["created_key"] < after]
        page = copy.deepcopy(items[:limit])
        return page, page[-1]["created_key"] if len(items) > limit else None

    def labelled_page(
        self, owner_id: str, label: str, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        items = [
            r
            for r in self._indexed(owner_id)
            if any(entry["name"].casefold() == label for entry in r.get("labels") or [])
            and (after is None or r["created_key"] < after)
        ]
        page = copy.deepcopy(items[:limit])
        return page, page[-1]["created_key"] if len(items) > limit else None


class FakeTasks:
    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []

    def send(self, task: dict[str, str]) -> None:
        self.sent.append(task)


class Pipeline:
    def __init__(self) -> None:
        self.storage = FakeStorage()
        self.detector = FakeDetector()
        self.records = FakeRecords()
        self.tasks = FakeTasks()
        #: the time the steps read; `self.clock.advance(seconds=...)` moves it.
        self.clock = RunningClock(TEST_NOW)
        self.analysis = ImageAnalysis(
            BUCKET, self.storage, self.detector, self.records, self.tasks, now=self.clock
        )
        self.thumbnails = ThumbnailMaker(
            self.storage, self.records, lambda: app_clock.timestamp(self.clock())
        )

    def notification(self, key: str = KEY, event: str = "ObjectCreated:Post") -> str:
        """The SQS body S3 sends for what is under `key` now (deliver it later, or twice)."""
        data, etag, _ = self.storage.objects[key]
        record = {
            "eventName": event,
            "s3": {
                "bucket": {"name": BUCKET},
                "object": {"key": key.replace("/", "%2F"), "eTag": etag, "size": len(data)},
            },
        }
        return json.dumps({"Records": [record]})

    def notify(
        self, key: str = KEY, receive_count: int = 1, event: str = "ObjectCreated:Post"
    ) -> None:
        self.analysis.handle(self.notification(key, event), receive_count)

    def run_tasks(self, receive_count: int = 1) -> None:
        tasks, self.tasks.sent = self.tasks.sent, []
        for task in tasks:
            self.thumbnails.handle(json.dumps(task), receive_count)

    @property
    def record(self) -> dict[str, Any]:
        found = self.records.get(IMAGE)
        assert found is not None
        return found
