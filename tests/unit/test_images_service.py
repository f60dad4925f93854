"""The images API's rules with in-memory stand-ins: who sees and deletes an image (404 for
anyone else, as for an unknown id), and the daily upload quotas (count and declared bytes)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.auth.tokens import Principal
from chalicelib.core.errors import NotFound, ValidationFailed
from chalicelib.core.quotas import InMemoryQuotas, QuotaExceeded
from chalicelib.images.model import DELETED, MAX_UPLOAD_BYTES
from chalicelib.images.removal import ImageRemoval
from chalicelib.images.service import ImagesService, daily_upload_quotas
from tests.unit.images_fakes import IMAGE, KEY, ORIGINAL, OWNER, Pipeline, jpeg

STRANGER = "22222222-3333-4444-8555-666666666666"
ADMIN = "33333333-4444-4555-8666-777777777777"
UNKNOWN = "00000000-0000-4000-8000-000000000000"
MB = 1024 * 1024


def user(user_id: str = OWNER) -> Principal:
    return Principal(user_id, frozenset())


def admin() -> Principal:
    return Principal(ADMIN, frozenset({"admins"}))


class Api(Pipeline):
    def __init__(self, uploads: int = 100, upload_bytes: int = 500 * MB) -> None:
        super().__init__()
        self.now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
        self.quotas = InMemoryQuotas(now=lambda: self.now)
        self.service = ImagesService(
            self.storage,
            self.records,
            ImageRemoval(self.storage, self.records, now=lambda: self.now),
            self.quotas,
            daily_upload_quotas(uploads, upload_bytes),
            now=lambda: self.now,
        )

    def ready_image(self) -> None:
        self.storage.upload(KEY, jpeg())
        self.notify()
        self.run_tasks()

    def naming(self, owner: str = OWNER) -> list[str]:
        """Every stored record and object key holding `owner`'s id."""
        items = [json.dumps(r, default=str) for r in self.records.records.values()]
        return [text for text in [*items, *self.storage.objects] if owner in text]


@pytest.fixture
def api() -> Api:
    return Api()


def not_found(call: object) -> str:
    with pytest.raises(NotFound) as raised:
        call()  # type: ignore[operator]
    return raised.value.message


# --- who sees an image --------------------------------------------------------------------


def test_someone_elses_image_is_404_exactly_as_an_unknown_id(api: Api) -> None:
    """A 403 would tell a prober that the id exists."""
    api.ready_image()
    theirs = not_found(lambda: api.service.get(user(STRANGER), IMAGE))
    unknown = not_found(lambda: api.service.get(user(STRANGER), UNKNOWN))
    assert theirs == unknown
    assert api.service.get(user(), IMAGE)["image_id"] == IMAGE
    assert api.service.get(admin(), IMAGE)["image_id"] == IMAGE, "admins see any image"


def test_an_image_claimed_but_not_analysed_yet_is_404_and_not_listed(api: Api) -> None:
    """Its first upload is being kept and analysed: not an image to show yet."""
    api.storage.upload(KEY, jpeg())

    def s3_down() -> None:
        raise ConnectionError("S3 is down")

    api.storage.before_read = s3_down  # the run stops after the claim
    with pytest.raises(ConnectionError):
        api.notify()
    assert api.record["status"] == "received"
    assert not_found(lambda: api.service.get(user(), IMAGE)) == not_found(
        lambda: api.service.get(user(), UNKNOWN)
    )
    assert api.service.list(user(), None, 10, None)["items"] == []
    api.service.delete(user(), IMAGE)  # its owner may delete it all the same
    assert api.record["status"] == DELETED and api.naming() == []


def test_links_serve_the_kept_original(api: Api) -> None:
    api.ready_image()
    image = api.service.get(user(), IMAGE)
    assert image["key"] == ORIGINAL
    assert image["urls"]["original"].endswith(f"/{ORIGINAL}?expires=900")


def test_an_upload_link_is_valid_5_minutes(api: Api) -> None:
    """It can be posted again until then (later posts are removed unanalysed): short."""
    created = api.service.create_upload(user(), {"content_type": "image/png", "size": 10})
    assert created["upload"]["expires_at"] == "2026-11-26T12:05:00Z"
    assert created["key"] == f"uploads/{OWNER}/{created['image_id']}.png"


# --- deleting -----------------------------------------------------------------------------


def test_the_owner_deletes_an_image_then_it_is_404(api: Api) -> None:
    api.ready_image()
    api.service.delete(user(), IMAGE)
    assert api.record["status"] == DELETED
    assert api.naming() == [], "the tombstone names no owner, no object is left"
    assert not_found(lambda: api.service.get(user(), IMAGE))
    assert api.service.list(user(), None, 10, None)["items"] == []
    assert api.service.list(user(), "dog", 10, None)["items"] == []
    again = not_found(lambda: api.service.delete(user(), IMAGE))
    assert again == not_found(lambda: api.service.delete(user(), UNKNOWN)), "404 once gone"


def test_a_stranger_cannot_delete_and_learns_nothing(api: Api) -> None:
    api.ready_image()
    removed = list(api.storage.removed)  # the upload, once kept
    theirs = not_found(lambda: api.service.delete(user(STRANGER), IMAGE))
    assert theirs == not_found(lambda: api.service.delete(user(STRANGER), UNKNOWN))
    assert api.record["status"] != DELETED and api.storage.removed == removed


def test_an_admin_deletes_any_image(api: Api) -> None:
    api.ready_image()
    api.service.delete(admin(), IMAGE)
    assert api.record["status"] == DELETED and api.storage.removed
    assert api.naming() == []


def test_an_admins_retried_delete_finishes_what_a_failed_one_left(api: Api) -> None:
    """The admin does not own the image: the unfinished tombstone still names the owner, so
    the retry knows whose objects to remove, then forgets the owner."""
    api.ready_image()
    api.storage.failing_removes = 1
    with pytest.raises(ConnectionError):
        api.service.delete(admin(), IMAGE)
    assert ORIGINAL in api.storage.objects
    assert not_found(lambda: api.service.delete(user(STRANGER), IMAGE))
    assert ORIGINAL in api.storage.objects, "a stranger's retry does nothing"
    assert not_found(lambda: api.service.delete(admin(), IMAGE))
    assert api.naming() == []


def test_a_finished_delete_is_nobodys_but_an_upload_posted_again_is_the_callers(
    api: Api,
) -> None:
    """The presigned POST used again after the delete: before the pipeline removes it, the
    owner's DELETE removes it too (the key is under the caller's own prefix)."""
    api.ready_image()
    api.service.delete(user(), IMAGE)
    api.storage.upload(KEY, jpeg(), modified="2026-11-26T00:05:00Z")
    assert not_found(lambda: api.service.delete(user(STRANGER), IMAGE))
    assert not_found(lambda: api.service.delete(admin(), IMAGE)), "admins: no owner to see"
    assert KEY in api.storage.objects
    assert not_found(lambda: api.service.delete(user(), IMAGE))
    assert api.naming() == [] and api.record["status"] == DELETED


def test_a_retried_delete_finishes_what_a_failed_one_left(api: Api) -> None:
    api.ready_image()
    api.storage.failing_removes = 1
    with pytest.raises(ConnectionError):
        api.service.delete(user(), IMAGE)
    assert ORIGINAL in api.storage.objects
    assert not_found(lambda: api.service.get(user(), IMAGE)), "gone from the API already"
    assert not_found(lambda: api.service.delete(user(), IMAGE))
    assert [k for k in api.storage.objects if OWNER in k] == []


def test_the_owner_deletes_an_upload_not_analysed_yet(api: Api) -> None:
    api.storage.upload(KEY, jpeg())
    assert not_found(lambda: api.service.delete(user(STRANGER), IMAGE))
    api.service.delete(user(), IMAGE)
    assert KEY not in api.storage.objects and api.record["status"] == DELETED
    api.storage.upload(KEY, jpeg(), modified="2026-11-26T00:05:00Z")  # posted again
    api.notify()
    assert KEY not in api.storage.objects and api.record["status"] == DELETED


@pytest.mark.parametrize("image_id", ["not-an-id", IMAGE.upper(), ""])
def test_deleting_a_malformed_id_is_404(api: Api, image_id: str) -> None:
    assert not_found(lambda: api.service.delete(user(), image_id))


# --- quotas -------------------------------------------------------------------------------


def body(size: int = 1000) -> dict[str, object]:
    return {"content_type": "image/jpeg", "size": size}


def test_the_presigned_post_allows_at_most_the_declared_size(api: Api) -> None:
    created = api.service.create_upload(user(), body(16 * MB))
    assert created["upload"]["max_bytes"] == 16 * MB
    assert created["upload"]["fields"]["max"] == str(16 * MB)


def test_a_looping_uploader_hits_the_count_quota_others_do_not_and_tomorrow_works(
    api: Api,
) -> None:
    for _ in range(100):
        api.service.create_upload(user(), body())
    with pytest.raises(QuotaExceeded) as exceeded:
        api.service.create_upload(user(), body())
    assert exceeded.value.status_code == 429 and exceeded.value.quota.name == "uploads"
    assert exceeded.value.headers["Retry-After"] == str(12 * 3600), "until midnight UTC"
    api.service.create_upload(user(STRANGER), body())
    api.now += timedelta(hours=12)
    api.service.create_upload(user(), body())


def test_declared_bytes_count_and_a_refused_upload_consumes_nothing(api: Api) -> None:
    for _ in range(25):  # 25 x 20 MB = 500 MB
        api.service.create_upload(user(), body(20 * MB))
    with pytest.raises(QuotaExceeded) as exceeded:
        api.service.create_upload(user(), body(1))
    assert exceeded.value.quota.name == "upload-bytes"
    day = next(k for k in api.quotas.used if k[1] == "uploads")
    assert api.quotas.used[day] == 25, "the refused request took no upload either"


def test_a_16_mb_upload_fits_and_is_counted(api: Api) -> None:
    api.service.create_upload(user(), body(16 * MB))
    assert sorted(api.quotas.used.values()) == [1, 16 * MB]


def test_invalid_requests_take_no_quota(api: Api) -> None:
    with pytest.raises(ValidationFailed):
        api.service.create_upload(user(), body(MAX_UPLOAD_BYTES + 1))
    assert api.quotas.used == {}
