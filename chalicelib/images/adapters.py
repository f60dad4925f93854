"""The image pipeline's AWS side: S3, Rekognition, DynamoDB and SQS behind the small
interfaces of `pipeline` and `service`.

Tables:
- images (`image_id`): one record per image; the sparse `by-owner` index (`owner_id`,
  `created_key`) lists an owner's images newest first (and tombstones whose removal is not
  finished; forgotten tombstones and erased-owner markers have neither key);
- image labels (`owner_label` = `<owner_id>#<label, casefolded>`, `created_key`): one entry
  per label of an image, so `GET /images?label=Dog` is one Query, never a Scan. Entries are
  written in the same transaction as their record, so the two never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from chalicelib.core import aws, clock, correlation
from chalicelib.core.aws import error_code
from chalicelib.core.backoff import Backoff
from chalicelib.core.dynamo import Unprocessed, batch_get, from_item, query_page, to_item
from chalicelib.core.errors import ServiceUnavailable
from chalicelib.core.observability import logger
from chalicelib.images.model import (
    MAX_LABELS,
    MIN_CONFIDENCE,
    erased_owner_marker,
    label_key,
    normalise_etag,
)
from chalicelib.images.pipeline import ObjectGone, StoredObject

OWNER_INDEX = "by-owner"
#: Keys per DeleteObjects call (S3's limit).
DELETE_BATCH = 1000
#: Cache-Control of thumbnails and originals: what is under their keys never changes.
IMMUTABLE_CACHE_CONTROL = "private, max-age=31536000, immutable"
#: Rekognition errors caused by the file itself: the image fails, it is not retried.
#: (InvalidS3ObjectException is not one: it is also what a denied or misconfigured S3 read
#: gives, which must retry, reach the DLQ and its alarm, not fail every upload quietly.)
REKOGNITION_REFUSALS = {
    "InvalidImageFormatException": "Rekognition cannot read this image format",
    "ImageTooLargeException": "the image is too large for Rekognition",
    "InvalidParameterException": "Rekognition refused the image (too small or malformed)",
}


class S3ImageStorage:
    def __init__(self, bucket: str, client: Callable[[], Any] | None = None) -> None:
        self._bucket = bucket
        self._client = client or (lambda: aws.client("s3"))

    def describe(self, key: str) -> StoredObject | None:
        from botocore.exceptions import ClientError

        try:
            head = self._client().head_object(Bucket=self._bucket, Key=key)
        except ClientError as error:
            # A 404 needs s3:ListBucket (`image_analysis` asks for it); without it S3 answers 403.
            if error_code(error) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        modified = clock.timestamp(head["LastModified"], timespec="seconds")
        return StoredObject(
            size=int(head["ContentLength"]),
            etag=normalise_etag(str(head["ETag"])),
            last_modified=modified,
            correlation_id=correlation.of_object_metadata(head.get("Metadata")),
        )

    def read(self, key: str, etag: str | None = None) -> bytes:
        """The object's bytes; with `etag`, only if it is still that upload (If-Match).
        ObjectGone if it is missing or another."""
        from botocore.exceptions import ClientError

        args: dict[str, Any] = {"Bucket": self._bucket, "Key": key}
        if etag is not None:
            args["IfMatch"] = f'"{etag}"'
        try:
            answer = self._client().get_object(**args)
        except ClientError as error:
            if error_code(error) in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                raise ObjectGone(key) from error
            raise
        with answer["Body"] as body:
            return bytes(body.read())

    def write(self, key: str, data: bytes, content_type: str) -> None:
        self._client().put_object(
            Bucket=self._bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            CacheControl=IMMUTABLE_CACHE_CONTROL,
        )

    def write_once(self, key: str, data: bytes, content_type: str) -> bool:
        """Store `data` at `key` unless an object is there already (If-None-Match: *, which
        S3 enforces, so what is there is never replaced); False if one was."""
        from botocore.exceptions import ClientError

        try:
            self._client().put_object(
                Bucket=self._bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                CacheControl=IMMUTABLE_CACHE_CONTROL,
                IfNoneMatch="*",
            )
        except ClientError as error:
            if error_code(error) in ("PreconditionFailed", "412"):
                return False
            raise  # ConditionalRequestConflict (409, a write in flight): SQS retries
        return True

    def remove(self, key: str) -> None:
        """Delete the object (S3 answers a missing key with success too)."""
        self._client().delete_object(Bucket=self._bucket, Key=key)

    def remove_all(self, keys: Iterable[str]) -> None:
        """Delete the objects, up to 1,000 per DeleteObjects call (authorised per key as
        s3:DeleteObject; missing keys count as deleted). Raises if S3 could not delete any
        of them (the answer lists those per key, with success for the rest)."""
        chunk: list[str] = []
        for key in keys:
            chunk.append(key)
            if len(chunk) == DELETE_BATCH:
                self._delete_objects(chunk)
                chunk = []
        if chunk:
            self._delete_objects(chunk)

    def _delete_objects(self, keys: list[str]) -> None:
        answer = self._client().delete_objects(
            Bucket=self._bucket,
            Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
        )
        errors = answer.get("Errors") or []
        if errors:
            # The keys name their owner: only the codes are logged.
            codes = sorted({str(e.get("Code")) for e in errors})
            logger.warning("objects not deleted", failed=len(errors), of=len(keys), codes=codes)
            raise ServiceUnavailable("The image's files could not all be deleted; retry.")

    def keys_under(self, prefix: str) -> Iterator[str]:
        """Every key under `prefix`, page after page (1,000 a page)."""
        pages = self._client().get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self._bucket, Prefix=prefix):
            for found in page.get("Contents", []):
                yield str(found["Key"])

    # --- presigned links (API) ----------------------------------------------------------

    def presign_post(
        self, key: str, content_type: str, max_bytes: int, expires_in: int
    ) -> dict[str, Any]:
        """A POST policy S3 enforces: this key, this content type, 1 byte to `max_bytes`, and
        the request's correlation id as the object's metadata (`x-amz-meta-correlation-id`,
        exactly), so the pipeline logs the upload under the id of the request that asked."""
        tagged = correlation.upload_fields()
        return dict(
            self._client().generate_presigned_post(
                Bucket=self._bucket,
                Key=key,
                Fields={"Content-Type": content_type, **tagged},
                Conditions=[
                    {"Content-Type": content_type},
                    ["content-length-range", 1, max_bytes],
                    *({name: value} for name, value in tagged.items()),
                ],
                ExpiresIn=expires_in,
            )
        )

    def presign_get(self, key: str, expires_in: int) -> str:
        return str(
            self._client().generate_presigned_url(
                "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=expires_in
            )
        )


class RekognitionLabels:
    def __init__(self, bucket: str, client: Callable[[], Any] | None = None) -> None:
        self._bucket = bucket
        self._client = client or (lambda: aws.client("rekognition"))

    def detect_in_object(self, key: str) -> list[dict[str, Any]]:
        return self._detect({"S3Object": {"Bucket": self._bucket, "Name": key}})

    def detect_in_bytes(self, data: bytes) -> list[dict[str, Any]]:
        return self._detect({"Bytes": data})

    def _detect(self, image: dict[str, Any]) -> list[dict[str, Any]]:
        from botocore.exceptions import ClientError

        from chalicelib.images.imaging import UnusableImage

        try:
            answer = self._client().detect_labels(
                Image=image, MaxLabels=MAX_LABELS, MinConfidence=MIN_CONFIDENCE
            )
        except ClientError as error:
            refusal = REKOGNITION_REFUSALS.get(error_code(error))
            if refusal:
                raise UnusableImage(refusal) from error
            raise
        return [
            {"name": label["Name"], "confidence": label["Confidence"]}
            for label in answer.get("Labels", [])
            if float(label.get("Confidence", 0)) >= MIN_CONFIDENCE
        ][:MAX_LABELS]


class DynamoImageRecords:
    """Image records and their label entries (pipeline and API side)."""

    def __init__(
        self, images_table: str, labels_table: str, client: Callable[[], Any] | None = None
    ) -> None:
        self._images = images_table
        self._labels = labels_table
        self._client = client or (lambda: aws.client("dynamodb"))

    def get(self, image_id: str) -> dict[str, Any] | None:
        answer = self._client().get_item(
            TableName=self._images, Key={"image_id": {"S": image_id}}, ConsistentRead=True
        )
        return from_item(answer["Item"]) if "Item" in answer else None

    def owner_erased(self, owner_id: str) -> bool:
        return self.get(erased_owner_marker(owner_id)) is not None

    def mark_owner_erased(self, owner_id: str, erased_at: str, expires_at: int) -> None:
        """The marker (images table, TTL) an upload of an erased owner is checked against:
        keyed by a digest of the owner's id, and holding nothing else of the owner."""
        marker = {
            "image_id": erased_owner_marker(owner_id),
            "erased_at": erased_at,
            "expires_at": expires_at,
        }
        self._client().put_item(TableName=self._images, Item=to_item(marker))

    def save(self, record: dict[str, Any], previous: dict[str, Any] | None) -> bool:
        """Store `record` (and its label entries) if the stored record is still `previous`;
        False if it changed meanwhile. Label entries of `previous` that `record` lacks go."""
        from botocore.exceptions import ClientError

        if previous is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(image_id)"}
        else:
            condition = {
                "ConditionExpression": "version = :seen",
                "ExpressionAttributeValues": {":seen": {"N": str(previous["version"])}},
            }
        actions: list[dict[str, Any]] = [
            {"Put": {"TableName": self._images, "Item": to_item(record), **condition}}
        ]
        new_entries = self._label_entries(record)
        for key in self._label_entries(previous).keys() - new_entries.keys():
            owner_label, created_key = key
            actions.append(
                {
                    "Delete": {
                        "TableName": self._labels,
                        "Key": {
                            "owner_label": {"S": owner_label},
                            "created_key": {"S": created_key},
                        },
                    }
                }
            )
        for entry in new_entries.values():
            actions.append({"Put": {"TableName": self._labels, "Item": to_item(entry)}})
        try:
            self._client().transact_write_items(TransactItems=actions)
        except ClientError as error:
            reasons = getattr(error, "response", {}).get("CancellationReasons") or []
            if error_code(error) == "TransactionCanceledException" and any(
                r.get("Code") == "ConditionalCheckFailed" for r in reasons
            ):
                return False
            raise
        return True

    def update(self, previous: dict[str, Any], changes: dict[str, Any]) -> bool:
        """Set `changes` on the record if it is still `previous`; False if it changed."""
        from botocore.exceptions import ClientError

        names = {f"#f{i}": name for i, name in enumerate(changes)}
        values = {f":v{i}": value for i, value in enumerate(changes.values())}
        serialised = to_item({**values, ":seen": previous["version"], ":one": 1})
        assignments = ", ".join(f"#f{i} = :v{i}" for i in range(len(changes)))
        try:
            self._client().update_item(
                TableName=self._images,
                Key={"image_id": {"S": previous["image_id"]}},
                UpdateExpression=f"SET {assignments}, version = version + :one",
                ConditionExpression="version = :seen",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=serialised,
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def owned_page(
        self, owner_id: str, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        args: dict[str, Any] = {
            "TableName": self._images,
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": "owner_id = :owner",
            "ExpressionAttributeValues": {":owner": {"S": owner_id}},
            "ScanIndexForward": False,
        }
        if after:
            image_id = after.rsplit("#", 1)[1]
            args["ExclusiveStartKey"] = {
                "owner_id": {"S": owner_id},
                "created_key": {"S": after},
                "image_id": {"S": image_id},
            }
        items, next_key = query_page(self._client(), args, limit)
        return [from_item(i) for i in items], next_key

    def labelled_page(
        self, owner_id: str, label: str, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        owner_label = f"{owner_id}#{label}"
        args: dict[str, Any] = {
            "TableName": self._labels,
            "KeyConditionExpression": "owner_label = :key",
            "ExpressionAttributeValues": {":key": {"S": owner_label}},
            "ScanIndexForward": False,
        }
        if after:
            args["ExclusiveStartKey"] = {
                "owner_label": {"S": owner_label},
                "created_key": {"S": after},
            }
        entries, next_key = query_page(self._client(), args, limit)
        return self._records([e["image_id"]["S"] for e in entries]), next_key

    def _records(self, image_ids: list[str]) -> list[dict[str, Any]]:
        """The records, in the order asked (BatchGetItem answers in any order)."""
        keys = [{"image_id": {"S": i}} for i in image_ids]
        try:
            items = batch_get(self._client(), self._images, keys, Backoff())
        except Unprocessed as busy:
            raise ServiceUnavailable("The image store is busy; retry.") from busy
        found = {record["image_id"]: record for record in map(from_item, items)}
        return [found[i] for i in image_ids if i in found]

    def _label_entries(
        self, record: dict[str, Any] | None
    ) -> dict[tuple[str, str], dict[str, Any]]:
        if not record:
            return {}
        entries = {}
        for label in record.get("labels") or []:
            owner_label = f"{record['owner_id']}#{label_key(label['name'])}"
            key = (owner_label, record["created_key"])
            entries[key] = {
                "owner_label": owner_label,
                "created_key": record["created_key"],
                "image_id": record["image_id"],
                "label": label["name"],
                "confidence": label["confidence"],
            }
        return entries


class SqsThumbnailTasks:
    def __init__(self, queue_url: Callable[[], str], client: Callable[[], Any] | None = None):
        self._queue_url = queue_url
        self._client = client or (lambda: aws.client("sqs"))

    def send(self, task: dict[str, str]) -> None:
        """One task, with the current correlation id (the upload's) as an attribute."""
        attributes = correlation.message_attributes()
        self._client().send_message(
            QueueUrl=self._queue_url(),
            MessageBody=json.dumps(task),
            **({"MessageAttributes": attributes} if attributes else {}),
        )
