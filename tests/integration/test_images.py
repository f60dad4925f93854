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

from infra.paths import PROJECT_DIR
from tests.integration.test_local_stack import eventually, register, sign_in

pytestmark = pytest.mark.integration


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((width, height), 40).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def portrait(width: int, height: int) -> bytes:
    """A noisy photo with the astronaut (local/samples/) filling 4/5 of its height."""
    canvas = Image.effect_noise((width, height), 40).convert("RGB")
    side = height * 4 // 5
    with Image.open(PROJECT_DIR / "local" / "samples" / "astronaut.jpg") as sample:
        canvas.paste(sample.resize((side, side)), ((width - side) // 2, (height - side) // 2))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=90)
    return out.getvalue()


def upload(
    api: str, headers: dict[str, str], data: bytes, content_type: str, declared: int = 0
) -> str:
    body = {"content_type": content_type, "size": declared or len(data)}
    created = requests.post(f"{api}/images", json=body, headers=headers, timeout=10)
    assert created.status_code == 202, created.text
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
    image_id = upload(api, own, portrait(4000, 3000), "image/jpeg")
    image = eventually(lambda: settled(api, own, image_id))
    elapsed = time.monotonic() - started
    assert image["status"] == "ready", image
    assert (image["width"], image["height"]) == (4000, 3000)
    # The emulator's Rekognition looks at the picture (local/vision.py).
    labels = {label["name"]: label["confidence"] for label in image["labels"]}
    assert {"Face", "Person"} <= set(labels) and min(labels.values()) >= 80, image["labels"]
    for size, url in image["urls"]["thumbnails"].items():
        fetched = requests.get(url, timeout=10)
        assert fetched.status_code == 200
        with Image.open(io.BytesIO(fetched.content)) as thumbnail:
            assert max(thumbnail.size) == int(size)
    listed = requests.get(f"{api}/images", params={"label": "Person"}, headers=own, timeout=10)
    assert [i["image_id"] for i in listed.json()["items"]] == [image_id]
    noise = upload(api, own, jpeg(640, 480), "image/jpeg")
    assert eventually(lambda: settled(api, own, noise))["labels"] == [], "nothing to see"
    listed = requests.get(f"{api}/images", params={"label": "Person"}, headers=own, timeout=10)
    assert [i["image_id"] for i in listed.json()["items"]] == [image_id]
    assert elapsed < 30, elapsed


def test_a_broken_upload_fails_with_a_reason(api: str, stack: dict[str, Any]) -> None:
    user = register(api)
    own = sign_in(stack, user["email"])
    # Zero bytes, one declared (S3 would refuse it; the emulator does not check POST policies)
    image_id = upload(api, own, b"", "image/png", declared=1)
    image = eventually(lambda: settled(api, own, image_id))
    assert image["status"] == "failed" and "empty" in image["reason"]
    stranger = sign_in(stack, register(api)["email"])
    assert requests.get(f"{api}/images/{image_id}", headers=stranger, timeout=10).status_code == 404


def test_delete_over_http_removes_the_image_and_its_links_stop_working(
    api: str, stack: dict[str, Any]
) -> None:
    own = sign_in(stack, register(api)["email"])
    image_id = upload(api, own, jpeg(800, 600), "image/jpeg")
    image = eventually(lambda: settled(api, own, image_id))
    assert image["status"] == "ready", image
    links = [image["urls"]["original"], *image["urls"]["thumbnails"].values()]
    assert all(requests.get(link, timeout=10).status_code == 200 for link in links)
    stranger = sign_in(stack, register(api)["email"])
    path = f"{api}/images/{image_id}"
    assert requests.delete(path, headers=stranger, timeout=10).status_code == 404
    assert requests.delete(path, headers=own, timeout=10).status_code == 204
    assert requests.get(path, headers=own, timeout=10).status_code == 404
    assert [requests.get(link, timeout=10).status_code for link in links] == [404] * len(links)
    assert requests.delete(path, headers=own, timeout=10).status_code == 404, "404 once gone"
    listed = requests.get(f"{api}/images", headers=own, timeout=10).json()
    assert listed["items"] == []


def test_a_looping_uploader_gets_429_with_retry_after_over_http(
    api: str, stack: dict[str, Any]
) -> None:
    own = sign_in(stack, register(api)["email"])
    body = {"content_type": "image/jpeg", "size": 20 * 1024 * 1024}
    with requests.Session() as http:
        answers = [
            http.post(f"{api}/images", json=body, headers=own, timeout=10) for _ in range(26)
        ]
    assert [a.status_code for a in answers] == [202] * 25 + [429], "500 MB a day in dev"
    refused = answers[-1]
    assert 0 < int(refused.headers["Retry-After"]) <= 86400
    assert refused.json()["error"]["code"] == "too_many_requests"
    other = sign_in(stack, register(api)["email"])
    assert requests.post(f"{api}/images", json=body, headers=other, timeout=10).status_code == 202


def test_a_link_posted_again_is_removed_unanalysed_over_http(
    api: str, stack: dict[str, Any], emulator: Any
) -> None:
    """The presigned POST, still valid, posted 10 more times with other pictures: the image
    stays its first upload (not analysed again: same record, same thumbnails), and the
    bucket holds its original and two thumbnails, nothing else."""
    own = sign_in(stack, register(api)["email"])
    first = jpeg(640, 480)
    body = {"content_type": "image/jpeg", "size": 2 * len(first)}
    created = requests.post(f"{api}/images", json=body, headers=own, timeout=10).json()
    form, image_id = created["upload"], created["image_id"]

    def post(data: bytes) -> None:
        files = {"file": ("f", data, "image/jpeg")}
        sent = requests.post(form["url"], data=form["fields"], files=files, timeout=30)
        assert sent.status_code in (200, 201, 204), sent.text

    post(first)
    image = eventually(lambda: settled(api, own, image_id))
    assert image["status"] == "ready", image
    for n in range(10):
        post(jpeg(300 + n, 200))
    s3, bucket = emulator("s3"), f"serverless-app-{stack['stage']}-uploads"

    def keys() -> list[str]:
        listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        return sorted(o["Key"] for o in listed if image_id in o["Key"])

    eventually(lambda: not any(k.startswith("uploads/") for k in keys()))
    time.sleep(1)  # any notification still on its way: it finds nothing to do
    again = requests.get(f"{api}/images/{image_id}", headers=own, timeout=10).json()
    assert {**again, "urls": None} == {**image, "urls": None}, "not analysed again"
    owner = image["owner_id"]
    thumbnails = [t["key"] for t in image["thumbnails"].values()]
    assert keys() == sorted([f"originals/{owner}/{image_id}.jpg", *thumbnails])
    original = requests.get(again["urls"]["original"], timeout=10)
    assert original.status_code == 200 and original.content == first
