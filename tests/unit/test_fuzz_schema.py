"""The fuzzer's stateful phase follows only links whose target exists after the step: none
from `POST /images`, an upload intent (202) whose image exists once the pipeline has recorded
it, while schemathesis keeps inferring the others (a list's items to their reads)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app import app
from chalicelib.contract.openapi import document
from local.fuzz_schema import load_schema, state_machine


def links_after_inference(tmp_path: Path) -> dict[str, set[str]]:
    """Each operation's link targets once the stateful schema is built, inferred ones too."""
    source = tmp_path / "openapi.json"
    source.write_text(json.dumps(document(app)))
    schema = load_schema(str(source), stateful=True)
    state_machine(schema)
    targets: dict[str, set[str]] = {}
    for path, item in schema.raw_schema["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for answer in operation["responses"].values():
                for link in answer.get("links", {}).values():
                    target: Any = link.get("operationId") or link.get("operationRef")
                    targets.setdefault(f"{method.upper()} {path}", set()).add(target)
    return targets


def test_no_link_is_followed_from_an_image_upload_intent(tmp_path: Path) -> None:
    links = links_after_inference(tmp_path)

    assert "POST /images" not in links, links.get("POST /images")
    assert links["GET /images"], "inference still links the list to its images"
    assert {"get_order", "cancel_order"} <= links["POST /orders"]
