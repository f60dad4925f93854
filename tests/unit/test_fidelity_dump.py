"""The emulator's state dump (`/moto-api/data.json`, where `local/mailbox.py` reads the mail
SES sent) while other requests change that state (`local/fidelity.py`)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

from local import fidelity


class _GrowingTable:
    """Stands for a DynamoDB table whose first item is written while the dump runs: its
    attribute is empty when first read, keyed by a non-JSON key when read again."""

    def __init__(self) -> None:
        self._reads = 0

    @property
    def items(self) -> dict[Any, Any]:
        self._reads += 1
        return {} if self._reads == 1 else {object(): {"id": "1"}}


class _Model:
    instances_tracked: ClassVar[list[Any]] = []


def test_the_dump_answers_while_a_table_gets_its_first_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by `make fuzz` (signing in its users): moto checked each attribute with one
    read and serialized it with another, so an item written in between failed the whole dump
    with a 500 ("keys must be str ... not DynamoType"). Each attribute is now read once."""
    from moto.core import model_instances
    from moto.moto_api._internal.responses import MotoAPIResponse

    fidelity.dump_without_docker()
    table = _GrowingTable()
    monkeypatch.setattr(_Model, "instances_tracked", [table])
    monkeypatch.setitem(model_instances.model_data, "fixture", {"Table": _Model})

    status, _, body = MotoAPIResponse().model_data(None, "", {})

    assert status == 200
    assert json.loads(body)["fixture"]["Table"] == [{"items": {}}]
