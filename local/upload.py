"""`make upload [FILE=photo.jpg | SAMPLE=astronaut] [EMAIL=you@example.com PASSWORD=...]`: one
image through the running local stack, as a client would send it: `POST /images`, the presigned
POST straight to the emulator's S3, then `GET /images/{id}` until the pipeline has settled it;
prints the record (labels, thumbnails, links). SAMPLE sends one of the real photos in
`local/samples/`; without FILE or SAMPLE it sends a generated sample photo; without EMAIL, as a
local test user (see `make token`)."""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
import time
from pathlib import Path

from local.provision import STATE_DIR

#: Real photos (public domain or CC0, see local/samples/README.md) by name.
SAMPLES_DIR = Path(__file__).parent / "samples"
SAMPLES = {"astronaut": "astronaut.jpg", "coffee": "coffee.jpg"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, nargs="?", help="a .jpg or .png of up to 20 MB")
    parser.add_argument("--sample", choices=sorted(SAMPLES), help="a real photo from local/samples")
    parser.add_argument("--email", default="uploader@example.com", help="whose image it is")
    parser.add_argument("--password", default=os.environ.get("PASSWORD") or None)
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the result")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    args = parser.parse_args(argv)

    import requests

    from local.stack import running_state
    from local.token import SignInFailed, sign_in

    if args.file is not None and args.sample is not None:
        print("Give FILE or SAMPLE, not both.", file=sys.stderr)
        return 2
    if args.sample is not None:
        args.file = SAMPLES_DIR / SAMPLES[args.sample]
    if args.file is not None and not args.file.is_file():
        print(f"No file {args.file}: give a .jpg or .png, or no FILE for a sample photo.",
              file=sys.stderr)  # fmt: skip
        return 2
    state = running_state(args.state_dir)
    if state is None:
        return 1
    if args.file is None:
        args.file = sample_photo(args.state_dir / "sample.jpg")
    content_type = mimetypes.guess_type(args.file.name)[0] or "application/octet-stream"
    try:
        tokens = sign_in(state, args.state_dir, args.email, args.password, admin=False)
    except SignInFailed as problem:
        print(problem, file=sys.stderr)
        return 1
    token = tokens["AccessToken"]
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {token}"
        size = args.file.stat().st_size
        asked = http.post(
            f"{state['api_url']}/images",
            json={"content_type": content_type, "size": size},
            timeout=10,
        )
        if asked.status_code != 202:
            print(asked.text, file=sys.stderr)
            return 1
        form = asked.json()["upload"]
        image_id = asked.json()["image_id"]
        with args.file.open("rb") as data:
            sent = requests.post(
                form["url"],
                data=form["fields"],
                files={"file": (args.file.name, data, content_type)},
                timeout=60,
            )
        sent.raise_for_status()
        print(f"uploaded {args.file} as {image_id}; waiting for the pipeline", file=sys.stderr)
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            answer = http.get(f"{state['api_url']}/images/{image_id}", timeout=10)
            if answer.status_code == 200 and answer.json()["status"] in ("ready", "failed"):
                print(json.dumps(answer.json(), indent=2))
                return 0
            time.sleep(0.25)
    print(f"{image_id} was not settled within {args.wait} s", file=sys.stderr)
    return 1


def sample_photo(path: Path) -> Path:
    """A 1600x1200 JPEG, made once: a sky-to-ground gradient with a sun and a horizon, shot
    sideways (EXIF orientation 6), so the thumbnails show the orientation being applied."""
    if path.exists():
        return path
    from PIL import Image, ImageDraw

    width, height = 1600, 1200
    picture = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(picture)
    for y in range(height):
        sky = y < height * 2 // 3
        shade = y / height
        colour = (int(90 + 120 * shade), int(150 + 60 * shade), 235) if sky else (60, 120, 50)
        draw.line([(0, y), (width, y)], fill=colour)
    draw.ellipse([1150, 150, 1350, 350], fill=(255, 220, 90))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, "JPEG", quality=85, exif=exif)
    return path


if __name__ == "__main__":
    sys.exit(main())
