"""The batch calls every DynamoDB adapter shares (`core.dynamo`), against a stubbed client:
what DynamoDB leaves unprocessed is sent again, throttled calls are retried, a deadline stops
the retries, and what is left is reported (writes) or raised (reads)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.core.backoff import MAX_ATTEMPTS, Backoff
from chalicelib.core.dynamo import READ_BATCH, Unprocessed, WriteLeft, batch_get, batch_write

TABLE = "things"


def put(n: int) -> dict[str, Any]:
    return {"PutRequest": {"Item": {"pk": {"S": f"k{n}"}}}}


def delete(n: int) -> dict[str, Any]:
    return {"DeleteRequest": {"Key": {"pk": {"S": f"k{n}"}}}}


def key(n: int) -> dict[str, Any]:
    return {"pk": {"S": f"k{n}"}}


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "Batch")


class Stub:
    """A DynamoDB client whose answers are scripted: each scripted answer is either an
    exception to raise or how many of the call's requests (keys) to leave unprocessed, the
    last ones. Once the script is used up, every call is processed whole."""

    def __init__(self, *script: int | Exception) -> None:
        self.script = list(script)
        self.calls: list[Any] = []

    def _next(self) -> int:
        step = self.script.pop(0) if self.script else 0
        if isinstance(step, Exception):
            raise step
        return step

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        (requests,) = RequestItems.values()
        self.calls.append(list(requests))
        left = self._next()
        unprocessed = requests[len(requests) - left :] if left else []
        return {"UnprocessedItems": {TABLE: unprocessed} if unprocessed else {}}

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        (request,) = RequestItems.values()
        self.calls.append(request)
        left = self._next()
        keys = request["Keys"]
        done, rest = keys[: len(keys) - left], keys[len(keys) - left :]
        items = [{**k, "found": {"BOOL": True}} for k in done]
        response: dict[str, Any] = {"Responses": {TABLE: items}}
        if rest:
            response["UnprocessedKeys"] = {TABLE: {**request, "Keys": rest}}
        return response


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def backoff(sleeps: list[float]) -> Backoff:
    return Backoff(sleep=sleeps.append)


# --- batch_write ----------------------------------------------------------------------------


def test_a_write_processed_whole_is_one_call(backoff: Backoff, sleeps: list[float]) -> None:
    stub = Stub()
    requests = [put(1), delete(2)]
    assert batch_write(stub, TABLE, requests, backoff) == WriteLeft([], None)
    assert stub.calls == [requests] and sleeps == []


def test_unprocessed_writes_are_sent_again_after_a_backoff(
    backoff: Backoff, sleeps: list[float]
) -> None:
    stub = Stub(2, 1)
    requests = [put(1), put(2), delete(3)]
    assert batch_write(stub, TABLE, requests, backoff) == WriteLeft()
    assert stub.calls == [requests, requests[1:], requests[2:]]
    assert len(sleeps) == 2 and all(0 <= s <= 1 for s in sleeps)


def test_throttled_write_calls_are_retried(backoff: Backoff, sleeps: list[float]) -> None:
    stub = Stub(client_error("ProvisionedThroughputExceededException"), 1)
    requests = [put(1), put(2)]
    assert batch_write(stub, TABLE, requests, backoff) == WriteLeft()
    assert stub.calls == [requests, requests, requests[1:]]
    assert len(sleeps) == 2


def test_writes_left_after_every_attempt_are_returned(backoff: Backoff) -> None:
    stub = Stub(*[1] * MAX_ATTEMPTS)
    left = batch_write(stub, TABLE, [put(1), put(2)], backoff)
    assert left == WriteLeft([put(2)], None)
    assert len(stub.calls) == MAX_ATTEMPTS
    with pytest.raises(Unprocessed, match="1 writes to things left unprocessed"):
        left.raise_if_any(TABLE)


def test_writes_throttled_on_every_attempt_are_returned_without_the_error(
    backoff: Backoff,
) -> None:
    stub = Stub(*[client_error("ThrottlingException")] * MAX_ATTEMPTS)
    assert batch_write(stub, TABLE, [put(1)], backoff) == WriteLeft([put(1)], None)
    assert len(stub.calls) == MAX_ATTEMPTS


def test_an_error_not_worth_a_retry_ends_the_writes_with_what_was_pending(
    backoff: Backoff,
) -> None:
    refused = client_error("ValidationException")
    stub = Stub(1, refused)
    left = batch_write(stub, TABLE, [put(1), put(2)], backoff)
    assert (left.requests, left.error) == ([put(2)], refused)
    assert len(stub.calls) == 2
    with pytest.raises(ClientError) as raised:
        left.raise_if_any(TABLE)
    assert raised.value is refused


def test_a_deadline_stops_the_write_retries_before_a_call_or_a_sleep(
    backoff: Backoff, sleeps: list[float]
) -> None:
    stub = Stub(*[client_error("ThrottlingException")] * MAX_ATTEMPTS)
    left = batch_write(stub, TABLE, [put(1)], backoff, should_stop=lambda: len(stub.calls) >= 2)
    assert left == WriteLeft([put(1)], None)
    assert len(stub.calls) == 2 and len(sleeps) == 1
    never = Stub()
    assert batch_write(never, TABLE, [put(1)], backoff, lambda: True) == WriteLeft([put(1)])
    assert never.calls == []


def test_nothing_to_write_makes_no_call(backoff: Backoff) -> None:
    stub = Stub()
    assert batch_write(stub, TABLE, [], backoff) == WriteLeft()
    assert stub.calls == []


# --- batch_get ------------------------------------------------------------------------------


def test_reads_go_100_keys_a_call_with_the_options_on_each(backoff: Backoff) -> None:
    stub = Stub()
    keys = [key(n) for n in range(READ_BATCH + 1)]
    found = batch_get(stub, TABLE, keys, backoff, ConsistentRead=True)
    assert sorted(item["pk"]["S"] for item in found) == sorted(f"k{n}" for n in range(101))
    assert [len(call["Keys"]) for call in stub.calls] == [100, 1]
    assert all(call["ConsistentRead"] is True for call in stub.calls)


def test_unprocessed_keys_are_read_again(backoff: Backoff, sleeps: list[float]) -> None:
    stub = Stub(2)
    found = batch_get(stub, TABLE, [key(1), key(2), key(3)], backoff)
    assert sorted(item["pk"]["S"] for item in found) == ["k1", "k2", "k3"]
    assert [c["Keys"] for c in stub.calls] == [[key(1), key(2), key(3)], [key(2), key(3)]]
    assert len(sleeps) == 1


def test_throttled_read_calls_are_retried(backoff: Backoff) -> None:
    stub = Stub(client_error("ThrottlingException"), client_error("InternalServerError"))
    assert [item["pk"] for item in batch_get(stub, TABLE, [key(1)], backoff)] == [{"S": "k1"}]
    assert len(stub.calls) == 3


def test_reads_left_after_every_attempt_raise(backoff: Backoff) -> None:
    stub = Stub(*[1] * MAX_ATTEMPTS)
    with pytest.raises(Unprocessed, match="1 reads of things left unprocessed"):
        batch_get(stub, TABLE, [key(1), key(2)], backoff)
    assert len(stub.calls) == MAX_ATTEMPTS


def test_a_read_throttled_on_every_attempt_raises_its_error(backoff: Backoff) -> None:
    stub = Stub(*[client_error("ThrottlingException")] * MAX_ATTEMPTS)
    with pytest.raises(ClientError, match="ThrottlingException"):
        batch_get(stub, TABLE, [key(1)], backoff)
    assert len(stub.calls) == MAX_ATTEMPTS


def test_a_read_error_not_worth_a_retry_raises_at_once(backoff: Backoff) -> None:
    stub = Stub(client_error("ResourceNotFoundException"))
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        batch_get(stub, TABLE, [key(1)], backoff)
    assert len(stub.calls) == 1


def test_what_is_worth_a_retry() -> None:
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    from chalicelib.core.aws import retryable

    for code in ("ProvisionedThroughputExceededException", "ThrottlingException", "RequestTimeout"):
        assert retryable(client_error(code)), code
    for code in ("ValidationException", "ResourceNotFoundException", "AccessDeniedException"):
        assert not retryable(client_error(code)), code
    assert retryable(EndpointConnectionError(endpoint_url="http://x"))
    assert retryable(ReadTimeoutError(endpoint_url="http://x"))
    assert not retryable(ValueError("not an AWS error"))
