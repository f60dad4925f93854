"""The image pipeline on the running local stack, over real HTTP: POST /images, the presigned
POST straight to the emulator's S3, the bucket's notification to SQS, both handlers run by
the local event runtime, and the links GET /images/{id} gives."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
import requests
from PIL import Image

from tests.integration.test_local_stack import eventually, register, sign_in

pytestmark = pytest.mark.integration


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((width, height), 40).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def upload(api: str, headers: dict[str, str], data: bytes, content_type: str) -> str:
    created = requests.post(
        f"{api}/images", json={"content_type": content_type}, headers=headers, timeout=10
    )
    assert created.status_code == 201, created.text
    form = created.json()["upload"]
    sent = requests.post(
        form["url"], data=form["fields"], files={"file": ("f", data, content_type)}, timeout=30
    )
    assert sent.status_code in (200, 201, 204), sent.text
    return str(created.json()["image_id"])


def settled(api: str, headers: dict[str, str], image_id: str) -> dict[str, Any] | None:
    answer = requests.get(f"{api}/images/{image_id}", headers=headers, timeout=10)
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    image = answer.json()
    return image if image["status"] in ("ready", "failed") else None


def test_upload_analyse_thumbnail_and_fetch_over_http(api: str, stack: dict[str, Any]) -> None:
    user = register(api)
    own = sign_in(stack, user["email"])
    started = time.monotonic()
    image_id = upload(api, own, jpeg(4000, 3000), "image/jpeg")
    image = eventually(lambda: settled(api, own, image_id))
    elapsed = time.monotonic() - started
    assert image["status"] == "ready", image
    assert (image["width"], image["height"]) == (4000, 3000)
    assert image["labels"], "Rekognition (emulated) labels"
    for size, url in image["urls"]["thumbnails"].items():
        fetched = requests.get(url, timeout=10)
        assert fetched.status_code == 200
        with Image.open(io.BytesIO(fetched.content)) as thumbnail:
            assert max(thumbnail.size) == int(size)
    label = image["labels"][0]["name"]
    listed = requests.get(f"{api}/images", params={"label": label}, headers=own, timeout=10)
    assert [i["image_id"] for i in listed.json()["items"]] == [image_id]
    assert elapsed < 30, elapsed


def test_a_broken_upload_fails_with_a_reason(api: str, stack: dict[str, Any]) -> None:
    user = register(api)
    own = sign_in(stack, user["email"])
    image_id = upload(api, own, b"", "image/png")  # zero bytes (S3 would refuse; the emulator not)
    image = eventually(lambda: settled(api, own, image_id))
    assert image["status"] == "failed" and "empty" in image["reason"]
    stranger = sign_in(stack, register(api)["email"])
    assert requests.get(f"{api}/images/{image_id}", headers=stranger, timeout=10).status_code == 403
