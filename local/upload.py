"""`make upload FILE=photo.jpg [EMAIL=you@example.com]`: one image through the running local
stack, as a client would send it: `POST /images`, the presigned POST straight to the
emulator's S3, then `GET /images/{id}` until the pipeline has settled it; prints the record
(labels, thumbnails, links)."""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
import time
from pathlib import Path

from local.provision import PROJECT_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="a .jpg or .png of up to 20 MB")
    parser.add_argument("--email", default="uploader@example.com", help="whose image it is")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the result")
    parser.add_argument("--state-dir", type=Path, default=PROJECT_DIR / ".local")
    args = parser.parse_args(argv)

    import requests

    from local.stack import running_state
    from local.token import issue_token

    state = running_state(args.state_dir)
    if state is None:
        return 1
    content_type = mimetypes.guess_type(args.file.name)[0] or "application/octet-stream"
    token = issue_token(state, args.email, admin=False, id_token=False)
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {token}"
        asked = http.post(
            f"{state['api_url']}/images", json={"content_type": content_type}, timeout=10
        )
        if asked.status_code != 201:
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


if __name__ == "__main__":
    sys.exit(main())
