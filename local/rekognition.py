"""Rekognition's DetectLabels in the emulator, answered from the picture itself.

stock moto (5.2.5) answers every DetectLabels with one canned label ("Mobile Phone"), so no
upload could be found by what it shows. Here the request is read as Rekognition reads it (the
image from `Image.Bytes`, or from `Image.S3Object` in the emulator's own S3), and the answer is
`local.vision`'s: faces, people, cats, text lines and colours, with MaxLabels, MinConfidence,
Features and Settings honoured and Rekognition's errors (InvalidParameterException,
InvalidImageFormatException, ImageTooLargeException, InvalidS3ObjectException). Applied by
`local.fidelity.apply` in the emulator's process; `tests/unit/test_local_rekognition.py` calls
it through boto3.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

#: Rekognition's limits on an image: sent as bytes, and read from S3.
MAX_BYTES = 5 * 1024 * 1024
MAX_S3_BYTES = 15 * 1024 * 1024
S3_UNREADABLE = (
    "Unable to get object metadata from S3. Check object key, region and/or access permissions."
)


def install() -> None:
    from moto.rekognition.responses import RekognitionResponse

    if getattr(RekognitionResponse, "_sees_pictures", False):
        return
    RekognitionResponse.detect_labels = detect_labels  # type: ignore[method-assign]
    RekognitionResponse._sees_pictures = True  # type: ignore[attr-defined]


def detect_labels(self: Any) -> str:
    """moto's DetectLabels handler (a method of its RekognitionResponse)."""
    from local import vision

    body = self.body.decode() if isinstance(self.body, bytes) else self.body
    try:
        request = json.loads(body or "{}")
    except ValueError:
        request = None
    if not isinstance(request, dict):
        raise _error("InvalidParameterException", "Request has invalid parameters")
    try:
        data = _image(request.get("Image"), self.current_account, self.partition)
        answer = vision.detect_labels(
            data,
            max_labels=request.get("MaxLabels"),
            min_confidence=request.get("MinConfidence"),
            features=request.get("Features"),
            settings=request.get("Settings"),
        )
    except vision.VisionError as error:
        raise _error(error.code, str(error)) from error
    return json.dumps(answer)


def _image(image: Any, account: str, partition: str) -> bytes:
    """The image's bytes, from the request or the emulator's S3, within Rekognition's limits."""
    from local import vision

    if not isinstance(image, dict) or ("Bytes" in image) == ("S3Object" in image):
        raise vision.InvalidParameter("Image needs exactly one of Bytes and S3Object")
    if "Bytes" in image:
        try:
            data = base64.b64decode(image["Bytes"], validate=True)
        except (binascii.Error, TypeError, ValueError) as error:
            raise vision.InvalidParameter("Image.Bytes is not base64") from error
        if len(data) > MAX_BYTES:
            raise vision.ImageTooLarge("Image size is too large")
        return data
    data = _s3_object(image["S3Object"], account, partition)
    if len(data) > MAX_S3_BYTES:
        raise vision.ImageTooLarge("Image size is too large")
    return data


def _s3_object(location: Any, account: str, partition: str) -> bytes:
    from moto.s3.exceptions import MissingBucket, MissingKey
    from moto.s3.models import s3_backends

    from local import vision
    from local.fidelity import S3_WRITE_LOCK

    if not isinstance(location, dict) or not location.get("Bucket") or not location.get("Name"):
        raise vision.InvalidParameter("Image.S3Object needs a Bucket and a Name")
    with S3_WRITE_LOCK:  # a DeleteObject meanwhile would close the object's buffer
        try:
            key = s3_backends[account][partition].get_object(
                location["Bucket"], location["Name"], version_id=location.get("Version")
            )
        except (MissingBucket, MissingKey):
            key = None
        if key is None or not hasattr(key, "value"):
            raise _error("InvalidS3ObjectException", S3_UNREADABLE)
        return bytes(key.value)


def _error(code: str, message: str) -> Exception:
    from moto.core.exceptions import JsonRESTError

    error = JsonRESTError(code, message)
    error.code = 400
    return error
