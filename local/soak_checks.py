"""After the soak's load (`local.soak`): wait for the system to settle, then look for every
write the API accepted where it must have landed, read straight from the emulator as an
operator would (tables, buckets, the data lake, queues), and count what is missing (lost),
there twice (duplicated), not finished, or out of balance.

- users: the item in the users table and `GET /users/{id}` (admin); a user's bio is the last
  one accepted (or a later one whose answer never came);
- images: the record `ready`, each of its thumbnails an object in the uploads bucket;
- telemetry events: the item in its table (activities by user, transactions by id) and the
  event exactly once in the data lake (under the user's pseudonym, its id as the user's
  digest: `chalicelib.telemetry.pseudonyms`);
- orders: one order per idempotency key, each in a terminal state as its variant wants
  (approved: completed; declined card: failed; carrier refusal: failed and refunded); money
  kept = charge - refund = the total of a completed order, 0 of any other; per product,
  units sold = units of completed orders and none left reserved;
- dead-letter and failure queues (`ops.failure_queues`, the event runtime's `-failed`
  queues, the telemetry quarantine): their depth and first messages.
"""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter, defaultdict
from typing import Any

from local.soak_clients import Client, Ledger, User

TERMINAL = ("completed", "failed", "cancelled")
EXPECTED = {
    "ok": ("completed", None),
    "declined": ("failed", "PaymentDeclined"),
    "carrier": ("failed", "ShippingError"),
}
_CLIENTS: dict[str, Any] = {}


def aws(state: dict[str, Any], service: str) -> Any:
    """A boto3 client for the stack's emulator, made once, retrying patiently: the checks
    must not fail for a throttled read."""
    if service not in _CLIENTS:
        import boto3
        from botocore.config import Config

        _CLIENTS[service] = boto3.client(
            service,
            endpoint_url=state["emulator_url"],
            region_name=state["region"],
            aws_access_key_id="local",
            aws_secret_access_key="local",
            config=Config(
                retries={"max_attempts": 10, "mode": "standard"}, connect_timeout=5, read_timeout=60
            ),
        )
    return _CLIENTS[service]


def failure_queue_names(state: dict[str, Any]) -> list[str]:
    """The stage's dead-letter and failure queues, the runtime's, and the quarantine."""
    from ops.failure_queues import failure_queues

    names = [q.name for q in failure_queues(state["stage"])]
    listed = aws(state, "sqs").list_queues(MaxResults=1000).get("QueueUrls", [])
    names += [u.rsplit("/", 1)[1] for u in listed if u.endswith("-failed")]
    names.append(state["resources"]["TelemetryQuarantineQueueUrl"].rsplit("/", 1)[1])
    return sorted(set(names))


def settle(state: dict[str, Any], timeout: float) -> tuple[float, list[str]]:
    """Wait (at most `timeout` s) until the work queues are empty and no order execution
    runs, for a second on end: the seconds it took, and what was still busy if it never
    settled."""
    sqs, sfn = aws(state, "sqs"), aws(state, "stepfunctions")
    parked = set(failure_queue_names(state))
    started = time.monotonic()
    quiet_since: float | None = None
    busy: list[str] = []
    while time.monotonic() - started < timeout:
        busy = []
        for url in sqs.list_queues(MaxResults=1000).get("QueueUrls", []):
            if url.rsplit("/", 1)[1] in parked:
                continue
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
            values = attributes.get("Attributes", {})
            depth = sum(
                int(values.get(f"ApproximateNumberOf{k}", 0))
                for k in ("Messages", "MessagesNotVisible", "MessagesDelayed")
            )
            if depth:
                busy.append(f"{url.rsplit('/', 1)[1]}: {depth}")
        running = sfn.list_executions(
            stateMachineArn=state["resources"]["OrderWorkflowArn"], statusFilter="RUNNING"
        )
        busy += [f"execution {e['name']} running" for e in running.get("executions", [])]
        now = time.monotonic()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= 1.0:
            return quiet_since - started, []
        time.sleep(0.5)
    return time.monotonic() - started, busy


def check_all(
    state: dict[str, Any],
    ledger: Ledger,
    client: Client,
    admin: str,
    users: list[User],
    initial_stock: dict[str, int],
    timeout: float,
) -> dict[str, Any]:
    """The findings, looked for again every few seconds until nothing is missing or
    unfinished, or `timeout` s have passed (the lake and the pipelines may lag)."""
    deadline = time.monotonic() + timeout
    while True:
        findings = {
            "users": check_users(state, ledger, client, admin),
            "images": check_images(state, ledger),
            "events": check_events(state, ledger),
            "orders": check_orders(state, ledger, client, admin, users, initial_stock),
        }
        open_issues = sum(
            len(v) for f in findings.values() for k, v in f.items() if k in ("lost", "unfinished")
        )
        if open_issues == 0 or time.monotonic() > deadline:
            findings["failure_queues"] = failure_queue_contents(state)
            return findings
        time.sleep(3.0)


def check_users(
    state: dict[str, Any], ledger: Ledger, client: Client, admin: str
) -> dict[str, list[str]]:
    from chalicelib.core.dynamo import from_item
    from chalicelib.users.repository import user_key

    table = state["environment"]["USERS_TABLE_NAME"]
    dynamodb = aws(state, "dynamodb")
    lost: list[str] = []
    for user_id in list(ledger.users):
        item = dynamodb.get_item(
            TableName=table, Key={"pk": {"S": user_key(user_id)}}, ConsistentRead=True
        ).get("Item")
        got = client.call("check", "GET", f"/users/{user_id}", token=admin)
        if item is None or got is None or got.status_code != 200:
            lost.append(
                f"user {user_id}: table {'ok' if item else 'missing'}, "
                f"GET {getattr(got, 'status_code', 0)}"
            )
            continue
        sent = ledger.bios.get(user_id) or []
        certain = [i for i, (_, ok) in enumerate(sent) if ok]
        if certain:
            allowed = {bio for bio, _ in sent[certain[-1] :]}
            bio = from_item(item).get("bio")
            if bio not in allowed:
                lost.append(f"user {user_id}: bio {bio!r}, last accepted {sent[certain[-1]][0]!r}")
    return {"lost": lost}


def check_images(state: dict[str, Any], ledger: Ledger) -> dict[str, list[str]]:
    from chalicelib.core.dynamo import from_item

    dynamodb, s3 = aws(state, "dynamodb"), aws(state, "s3")
    table = state["environment"]["IMAGES_TABLE_NAME"]
    bucket = state["environment"]["UPLOADS_BUCKET_NAME"]
    lost: list[str] = []
    unfinished: list[str] = []
    queued = queue_depth(state, state["resources"]["ImageUploadsQueueUrl"].rsplit("/", 1)[1])
    for image_id in list(ledger.images):
        item = dynamodb.get_item(
            TableName=table, Key={"image_id": {"S": image_id}}, ConsistentRead=True
        ).get("Item")
        record = from_item(item) if item else {}
        status = record.get("status")
        if status in ("received", "processing") or (status == "failed" and record.get("retryable")):
            unfinished.append(f"image {image_id}: {status} {record.get('reason', '')}".strip())
        elif status is None and queued:  # its notification waits for its next receive
            unfinished.append(f"image {image_id}: no record yet, {queued} upload(s) queued")
        elif status != "ready":
            lost.append(f"image {image_id}: {status or 'no record'} {record.get('reason', '')}")
        else:
            for size, thumbnail in (record.get("thumbnails") or {}).items():
                try:
                    s3.head_object(Bucket=bucket, Key=thumbnail["key"])
                except s3.exceptions.ClientError:
                    lost.append(f"image {image_id}: thumbnail {size} not in S3")
            if len(record.get("thumbnails") or {}) < 2:
                lost.append(
                    f"image {image_id}: thumbnails {sorted(record.get('thumbnails') or {})}"
                )
    return {"lost": lost, "unfinished": unfinished}


def check_events(state: dict[str, Any], ledger: Ledger) -> dict[str, list[str]]:
    """Each accepted event in its table and exactly once in the lake."""
    from chalicelib.core.backoff import Backoff
    from chalicelib.core.dynamo import batch_get
    from chalicelib.telemetry.encoding import transaction_key

    env, dynamodb = state["environment"], aws(state, "dynamodb")
    events = dict(ledger.events)
    stored: set[str] = set()
    for user_id in {e["user_id"] for e in events.values() if e["event_type"] == "user_activity"}:
        pages = dynamodb.get_paginator("query").paginate(
            TableName=env["ACTIVITIES_TABLE_NAME"],
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"USER#{user_id}"}},
            ConsistentRead=True,
        )
        stored.update(i["sk"]["S"].rsplit("#", 1)[1] for p in pages for i in p["Items"])
    transactions = {
        transaction_key(e["user_id"], e["transaction_id"]): event_id
        for event_id, e in events.items()
        if e["event_type"] == "transaction"
    }
    keys = [{"pk": {"S": pk}} for pk in transactions]
    found = batch_get(
        dynamodb, env["TRANSACTIONS_TABLE_NAME"], keys, Backoff(), ConsistentRead=True
    )
    stored.update(transactions[item["pk"]["S"]] for item in found)
    in_lake = lake_counts(state, events)
    lost = [f"event {i}: not in its table" for i in events if i not in stored]
    lost += [f"event {i}: not in the lake" for i in events if in_lake.get(i, 0) == 0]
    duplicated = [f"event {i}: {n} times in the lake" for i, n in in_lake.items() if n > 1]
    return {"lost": lost, "duplicated": duplicated}


def lake_counts(state: dict[str, Any], events: dict[str, dict[str, Any]]) -> dict[str, int]:
    """How often each of `events` is in the lake's objects (by its pseudonymised id)."""
    from chalicelib.telemetry.pseudonyms import LakeIdentity, user_digest

    dynamodb, s3 = aws(state, "dynamodb"), aws(state, "s3")
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=state["environment"]["TELEMETRY_PSEUDONYMS_TABLE_NAME"], ConsistentRead=True
    )
    identities = {
        i["user_digest"]["S"]: LakeIdentity(i["pseudonym"]["S"], i["secret"]["B"])
        for p in pages
        for i in p["Items"]
        if "pseudonym" in i
    }
    wanted: dict[tuple[str, str], str] = {}
    for event_id, event in events.items():
        identity = identities.get(user_digest(event["user_id"]))
        if identity is not None:
            wanted[(identity.pseudonym, identity.digest("event_id", event_id))] = event_id
    bucket = state["environment"]["DATA_LAKE_BUCKET_NAME"]
    counts: Counter[str] = Counter()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="telemetry/"):
        for obj in page.get("Contents", []):
            body = gzip.decompress(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            for line in body.splitlines():
                event = json.loads(line)
                found = wanted.get((event.get("user_id", ""), event.get("event_id", "")))
                if found is not None:
                    counts[found] += 1
    return dict(counts)


def check_orders(
    state: dict[str, Any],
    ledger: Ledger,
    client: Client,
    admin: str,
    users: list[User],
    initial_stock: dict[str, int],
) -> dict[str, list[str]]:
    from chalicelib.core.dynamo import from_item

    tokens = {u.user_id: u.token for u in users}
    payments, dynamodb = state["environment"]["PAYMENTS_TABLE_NAME"], aws(state, "dynamodb")
    out: dict[str, list[str]] = defaultdict(list)
    out["duplicated"] = [
        f"idempotency key {k}: orders {sorted(ids)}"
        for k, ids in ledger.order_ids_by_key.items()
        if len(ids) > 1
    ]
    orders: dict[str, dict[str, Any]] = {}
    for user_id, token in tokens.items():  # every order of the soak's users, acknowledged or not
        cursor = None
        while True:
            path = "/orders?limit=100" + (f"&cursor={cursor}" if cursor else "")
            page = client.call("check", "GET", path, token=token)
            if page is None or page.status_code != 200:
                out["unfinished"].append(
                    f"orders of {user_id}: GET {getattr(page, 'status_code', 0)}"
                )
                break
            orders.update((o["order_id"], o) for o in page.json()["items"])
            if not (cursor := page.json().get("next_cursor")):
                break
    for order_id, placed in dict(ledger.orders).items():
        order = orders.get(order_id)
        if order is None:
            out["lost"].append(f"order {order_id}: not found")
            continue
        if order["status"] not in TERMINAL:
            out["unfinished"].append(f"order {order_id}: {order['status']}")
            continue
        status, error = EXPECTED[placed["variant"]]
        got_error = (order.get("failure") or {}).get("error")
        if order["status"] != status or (error and got_error != error):
            out["unexpected"].append(
                f"order {order_id} ({placed['variant']}): "
                f"{order['status']} {got_error or ''}".strip()
            )
    out["unacknowledged"] = [
        f"order {i}: {o['status']}" for i, o in orders.items() if i not in ledger.orders
    ]
    for order_id, order in orders.items():
        if order["status"] not in TERMINAL:
            continue
        items = dynamodb.batch_get_item(
            RequestItems={
                payments: {
                    "ConsistentRead": True,
                    "Keys": [{"pk": {"S": f"{kind}#{order_id}"}} for kind in ("CHARGE", "REFUND")],
                }
            }
        )
        found = {i["pk"]["S"].split("#")[0]: from_item(i) for i in items["Responses"][payments]}
        charged = found.get("CHARGE", {})
        kept = int(charged.get("amount", 0)) if charged.get("status") == "approved" else 0
        kept -= int(found.get("REFUND", {}).get("amount", 0))
        want = int(order["total_amount"]) if order["status"] == "completed" else 0
        if kept != want:
            out["unbalanced"].append(
                f"order {order_id} {order['status']}: kept {kept}, want {want}"
            )
    sold: Counter[str] = Counter()
    for order in orders.values():
        if order["status"] == "completed":
            for line in order["lines"]:
                sold[line["sku"]] += int(line["quantity"])
    if not out["unfinished"]:
        for sku, start in initial_stock.items():
            got = client.call("check", "GET", f"/inventory/{sku}", token=admin)
            product = got.json() if got is not None and got.status_code == 200 else {}
            if (product.get("available"), product.get("reserved")) != (start - sold[sku], 0):
                out["unbalanced"].append(
                    f"{sku}: available {product.get('available')} reserved "
                    f"{product.get('reserved')}, want {start - sold[sku]} and 0 ({sold[sku]} sold)"
                )
    return dict(out)


def queue_depth(state: dict[str, Any], name: str) -> int:
    """Messages in the queue, visible or not (0 if there is no such queue)."""
    sqs = aws(state, "sqs")
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        return 0
    values = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return sum(
        int(values.get(f"ApproximateNumberOf{k}", 0))
        for k in ("Messages", "MessagesNotVisible", "MessagesDelayed")
    )


def failure_queue_contents(state: dict[str, Any], shown: int = 3) -> dict[str, dict[str, Any]]:
    """Each failure queue's depth and first messages (left in the queue: visibility 0)."""
    sqs = aws(state, "sqs")
    contents: dict[str, dict[str, Any]] = {}
    for name in failure_queue_names(state):
        depth = queue_depth(state, name)
        if depth:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            messages = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=shown, VisibilityTimeout=0
            ).get("Messages", [])
            contents[name] = {"depth": depth, "first": [m["Body"][:300] for m in messages]}
    return contents
