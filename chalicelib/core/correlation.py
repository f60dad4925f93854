"""One correlation id per piece of work, from the request that started it through every
handler down the chain, on every log line each of them writes.

Where it travels (the same name, `correlation_id`, everywhere but S3 metadata):
- HTTP: the caller's `X-Correlation-Id` if well formed, else the API Gateway request id
  (`core.http`), echoed in the answer and in error bodies;
- SNS and SQS: the message attribute `correlation_id` (String); a queue subscribed to a topic
  without raw delivery gets it inside the SNS envelope's `MessageAttributes`;
- Kinesis payloads and Step Functions input: a `correlation_id` field;
- the users table: a `correlation_id` attribute on the user item (the write that caused a
  stream record), read back from the record's image;
- S3 objects: user metadata `x-amz-meta-correlation-id` (`correlation-id` to boto3).

Each Lambda invocation binds its id (`install`: a Chalice middleware for every kind of event
handler): the event's id, or a new one (the Lambda request id) when the event carries none.
A batch whose records carry several ids logs them as `correlation_ids` on its batch-level
lines, with the invocation's own id as `correlation_id`; per-record work binds each record's
id while it runs (`bound`; an id not well formed is never bound), and work handed to a
thread pool runs with its submitter's keys (`carried`). The function's name is bound too
(`function_name`), so a line says which handler wrote it. Keys live in Powertools'
thread-safe (context-variable) keys: `chalice local` and the local event runtime run
handlers on threads at once.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, copy_context
from typing import Any, TypeVar

from chalicelib.core.observability import access_logger, logger

#: The log key, message attribute, payload field and item attribute.
CORRELATION_ID = "correlation_id"
#: S3 user metadata key (the object's `x-amz-meta-correlation-id` header).
METADATA_KEY = "correlation-id"
METADATA_HEADER = f"x-amz-meta-{METADATA_KEY}"
#: What a correlation id may look like wherever it comes from (logged and sent as is).
PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: How many distinct ids a batch-level line lists at most (a batch of 500 events would
#: otherwise write 500 ids on each line).
MAX_LISTED_IDS = 50
#: Event types the middleware wraps (Chalice's names; `http` is `core.http`'s).
EVENT_TYPES = ("s3", "sns", "sqs", "cloudwatch", "kinesis", "dynamodb", "scheduled", "pure_lambda")

T = TypeVar("T")

_current: ContextVar[str | None] = ContextVar("correlation_id", default=None)


def well_formed(value: Any) -> bool:
    return isinstance(value, str) and PATTERN.fullmatch(value) is not None


def current() -> str | None:
    """The id bound in this thread (request, invocation or record), if any."""
    return _current.get()


def new_id(context: Any = None) -> str:
    """An id for work whose input carries none: the Lambda request id, else a UUID."""
    request_id = getattr(context, "aws_request_id", None)
    return str(request_id) if well_formed(request_id) else str(uuid.uuid4())


def bind(correlation_id: str) -> None:
    """Make `correlation_id` this thread's id, on every log line from now on (Powertools'
    `set_correlation_id` semantics, but thread-safe)."""
    _current.set(correlation_id)
    logger.thread_safe_append_keys(correlation_id=correlation_id)


@contextmanager
def bound(correlation_id: str | None) -> Iterator[str]:
    """Bind `correlation_id` (the current one if None) for a block: one record of a batch.
    The previous id is bound again afterwards. An id that is not well formed (`PATTERN`) is
    taken for None: what a record or a task input carries is the sender's text, and anyone
    who may send it would otherwise write any text, of any length, on every line."""
    previous = current()
    given = correlation_id if well_formed(correlation_id) else None
    chosen = given or previous or new_id()
    bind(chosen)
    try:
        yield chosen
    finally:
        if previous is not None:
            bind(previous)
        else:
            _unbind()


def carried(work: Callable[..., T]) -> Callable[..., T]:
    """`work`, to run on another thread (a ThreadPoolExecutor's worker) with this thread's
    id and log keys: context variables are not copied to a pool's threads, so its lines
    would carry none. Each call runs in a copy of the context taken here (a context can be
    entered by one thread at a time), so a worker's bindings stay its own."""
    context = copy_context()

    def run(*args: Any, **kwargs: Any) -> T:
        return context.copy().run(work, *args, **kwargs)

    return run


@contextmanager
def keys_bound(**keys: Any) -> Iterator[None]:
    """More keys on this thread's log lines for a block (an order's id while its step runs);
    the keys as they were afterwards."""
    before = dict(logger.thread_safe_get_current_keys())
    logger.thread_safe_append_keys(**keys)
    try:
        yield
    finally:
        logger.thread_safe_clear_keys()
        logger.thread_safe_append_keys(**before)


def start_invocation(context: Any, ids: Iterable[str | None] = (), **keys: Any) -> str:
    """Bind a new invocation's keys: its function, request and correlation id. `ids` are the
    ids of its event's records: one distinct id is the invocation's; none or several make the
    invocation an id of its own (`new_id`), and several are listed as `correlation_ids`."""
    distinct = sorted({i for i in ids if well_formed(i)})
    correlation_id = distinct[0] if len(distinct) == 1 else new_id(context)
    logger.thread_safe_clear_keys()
    function_name = getattr(context, "function_name", None)
    request_id = getattr(context, "aws_request_id", None)
    if function_name:
        keys["function_name"] = str(function_name)
    if request_id:
        keys["function_request_id"] = str(request_id)
    if len(distinct) > 1:
        keys["correlation_ids"] = distinct[:MAX_LISTED_IDS]
    logger.thread_safe_append_keys(**keys)
    bind(correlation_id)
    return correlation_id


def note_batch(ids: Iterable[str | None]) -> None:
    """Ids found only once the batch was decoded (Kinesis payloads): the same rule as
    `start_invocation`, applied to the running invocation."""
    distinct = sorted({i for i in ids if well_formed(i)})
    if len(distinct) == 1:
        bind(distinct[0])
    elif distinct:
        logger.thread_safe_append_keys(correlation_ids=distinct[:MAX_LISTED_IDS])


def end_invocation() -> None:
    _current.set(None)
    logger.thread_safe_clear_keys()


def _unbind() -> None:
    """Drop the id from this thread's keys. (Powertools' `thread_safe_remove_keys` edits the
    dict in place, which a copied context may share: rebuilt here instead.)"""
    _current.set(None)
    keys = {k: v for k, v in logger.thread_safe_get_current_keys().items() if k != CORRELATION_ID}
    logger.thread_safe_clear_keys()
    logger.thread_safe_append_keys(**keys)


# --- carrying it ---------------------------------------------------------------------------


def message_attributes(correlation_id: str | None = None) -> dict[str, dict[str, str]]:
    """SNS/SQS `MessageAttributes` carrying `correlation_id` (the current one by default);
    empty when there is none."""
    value = correlation_id or current()
    if not well_formed(value):
        return {}
    return {CORRELATION_ID: {"DataType": "String", "StringValue": str(value)}}


def upload_fields(correlation_id: str | None = None) -> dict[str, str]:
    """A presigned POST's form fields (and exact-match conditions) that give the object the
    id as metadata; empty when there is none."""
    value = correlation_id or current()
    return {METADATA_HEADER: str(value)} if well_formed(value) else {}


# --- reading it back ------------------------------------------------------------------------


def of_sqs_record(record: Mapping[str, Any]) -> str | None:
    """From an SQS record: its message attribute (sent to the queue, or an SNS attribute of a
    raw delivery), else the SNS envelope in its body (a topic's delivery with the envelope)."""
    attribute = (record.get("messageAttributes") or {}).get(CORRELATION_ID) or {}
    value = attribute.get("stringValue")
    if well_formed(value):
        return str(value)
    body = record.get("body")
    if isinstance(body, str) and body.startswith("{") and '"MessageAttributes"' in body:
        try:
            envelope = json.loads(body)
        except ValueError:
            return None
        if isinstance(envelope, dict) and envelope.get("Type") == "Notification":
            return _sns_attribute(envelope.get("MessageAttributes"))
    return None


def of_sns_record(record: Mapping[str, Any]) -> str | None:
    """From an SNS record: its message attribute, else a `correlation_id` field of its JSON
    message (what a state machine's publish task carries: it sets no attributes)."""
    sns = record.get("Sns") or {}
    found = _sns_attribute(sns.get("MessageAttributes"))
    if found:
        return found
    message = sns.get("Message")
    if isinstance(message, str) and CORRELATION_ID in message:
        try:
            return of_payload(json.loads(message))
        except ValueError:
            return None
    return None


def of_payload(payload: Any) -> str | None:
    """From a JSON object's `correlation_id` field (a Kinesis payload, a task's input)."""
    value = payload.get(CORRELATION_ID) if isinstance(payload, Mapping) else None
    return str(value) if well_formed(value) else None


def of_stream_record(record: Mapping[str, Any]) -> str | None:
    """From a DynamoDB stream record: the `correlation_id` attribute of the item written (its
    new image), or of the removed item (its old image, stamped by the delete)."""
    change = record.get("dynamodb") or {}
    image = change.get("NewImage") or change.get("OldImage") or {}
    return of_stream_image(image)


def of_stream_image(image: Mapping[str, Any]) -> str | None:
    value = (image.get(CORRELATION_ID) or {}).get("S")
    return str(value) if well_formed(value) else None


def of_object_metadata(metadata: Mapping[str, Any] | None) -> str | None:
    """From an S3 object's user metadata (HeadObject/GetObject `Metadata`). S3 lowercases
    the keys; compared without case all the same (the emulator capitalises them)."""
    found = [v for k, v in (metadata or {}).items() if str(k).lower() == METADATA_KEY]
    return str(found[0]) if found and well_formed(found[0]) else None


def _sns_attribute(attributes: Any) -> str | None:
    value = ((attributes or {}).get(CORRELATION_ID) or {}).get("Value")
    return str(value) if well_formed(value) else None


# --- every event handler's invocation ------------------------------------------------------


def install(app: Any) -> None:
    """Bind each event handler's invocation (`start_invocation`), log an exception it raises
    with its id before Lambda records the failure, and end it with one `invocation` line at
    every log level (`access_logger`, as HTTP requests get theirs): a Chalice middleware for
    every event type (HTTP has its own, `core.http`)."""
    for event_type in EVENT_TYPES:
        app.register_middleware(_event_boundary, event_type)


def _event_boundary(event: Any, get_response: Any) -> Any:
    started = time.perf_counter()
    raw = event.to_dict()
    records = raw.get("Records") if isinstance(raw, Mapping) else None
    start_invocation(getattr(event, "context", None), ids_of_event(raw))
    outcome = "error"
    try:
        response = get_response(event)
        outcome = "ok"
        return response
    except Exception as exc:
        logger.exception("invocation failed", error_type=type(exc).__name__)
        raise
    finally:
        access_logger.info(
            "invocation",
            records=len(records) if isinstance(records, list) else 1,
            outcome=outcome,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        end_invocation()


def ids_of_event(event: Any) -> list[str | None]:
    """The ids an event carries, one per record: SQS, SNS and DynamoDB stream records;
    a task's input field; an EventBridge or schedule event's own id. Kinesis payloads are
    read by their processor once decoded (`note_batch`); S3 events carry none."""
    if not isinstance(event, Mapping):
        return []
    records = event.get("Records")
    if isinstance(records, list):
        ids = []
        for record in records:
            if not isinstance(record, Mapping):
                continue
            source = record.get("eventSource") or record.get("EventSource")
            if source == "aws:sqs":
                ids.append(of_sqs_record(record))
            elif source == "aws:sns":
                ids.append(of_sns_record(record))
            elif source == "aws:dynamodb":
                ids.append(of_stream_record(record))
        return ids
    if "detail-type" in event and well_formed(event.get("id")):
        return [str(event["id"])]
    return [of_payload(event)]
