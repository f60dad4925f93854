"""The local Athena end to end: moto's server with `local.athena.install()`, spoken to with
boto3, over generated gzip JSON-lines objects whose figures are computed here in Python."""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from local.athena import engine_for, install

REGION = "us-east-1"
ACCOUNT = "123456789012"
DAYS = (1, 2, 3)  # 2031-03-01..03: fixed dates, within the projection, never "today"
COLUMNS = [
    ("event_type", "string"),
    ("event_id", "string"),
    ("user_id", "string"),
    ("n", "int"),
    ("amount", "double"),
    ("details", "map<string,string>"),
]


def free_port() -> int:
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if not (5000 <= port <= 5100 or 8000 <= port <= 8100):
            return port


def generate(seed: int) -> dict[str, list[dict[str, Any]]]:
    """key -> rows: two or three objects per day."""
    rng = random.Random(seed)
    objects: dict[str, list[dict[str, Any]]] = {}
    for day in DAYS:
        for part in range(2 + day % 2):
            key = f"events/year=2031/month=03/day={day:02d}/part-{part}.jsonl.gz"
            objects[key] = [
                {
                    "event_type": rng.choice(["click", "view", "buy"]),
                    "event_id": f"e{day}-{part}-{i}",
                    "user_id": f"u{rng.randrange(5)}",
                    "n": rng.randrange(0, 100),
                    "amount": round(rng.uniform(0, 500), 2),
                    "details": {"color": rng.choice(["red", "blue"]), "day": str(day)},
                }
                for i in range(rng.randrange(20, 40))
            ]
    return objects


def lines(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


ODD_OBJECTS = {
    "odd/year=2031/month=03/day=01/a.gz": (
        b'{"event_id": "o1", "n": 3, "surprise": {"deep": [1, 2]}, "more": true}\n'
        b'{"event_id": "o2", "extra": "x"}\n'
    ),
    "dupes/year=2031/month=03/day=01/a.gz": b'{"event_id": "d1", "n": 1, "n": 2}\n',
    "broken/year=2031/month=03/day=01/a.gz": b'{"event_id": "b1", "n": 1}\n{"event_id": "b2"\n',
}


@pytest.fixture(scope="module")
def lake() -> Iterator[dict[str, Any]]:
    install()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    kw = {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": REGION,
          "aws_access_key_id": "x", "aws_secret_access_key": "x"}  # fmt: skip
    c = {n: boto3.client(n, **kw) for n in ("s3", "glue", "athena", "events", "sqs")}
    c["s3"].create_bucket(Bucket="lake")
    c["s3"].create_bucket(Bucket="res")
    c["glue"].create_database(DatabaseInput={"Name": "an"})
    objects = generate(seed=7)
    sizes = {}
    for key, rows in objects.items():
        body = gzip.compress(lines(rows))
        c["s3"].put_object(Bucket="lake", Key=key, Body=body)
        sizes[key] = len(body)
    big = {}
    for day in (1, 2):  # ~6 MB each, compressed: Athena's smallest cutoff (10 MB) lies between
        blob = base64.b64encode(random.Random(day).randbytes(6_000_000)).decode()
        rows = [{"event_id": blob[i : i + 1000], "n": day} for i in range(0, len(blob), 1000)]
        body = gzip.compress(lines(rows), compresslevel=1)
        c["s3"].put_object(
            Bucket="lake", Key=f"big/year=2031/month=03/day={day:02d}/a.gz", Body=body
        )
        big[day] = (len(body), len(rows))
    assert big[1][0] < 10_000_000 < big[1][0] + big[2][0]
    for table in ("events", "empty", "odd", "broken", "dupes", "big"):
        create_table(c["glue"], table)
    for key, body in ODD_OBJECTS.items():
        c["s3"].put_object(Bucket="lake", Key=key, Body=gzip.compress(body))
    for name, cutoff, enforced in (("wg", None, True), ("small", 10_000_000, True),
                                   ("loose", None, False)):  # fmt: skip
        configuration = {"ResultConfiguration": {"OutputLocation": f"s3://res/{name}/"},
                         "EnforceWorkGroupConfiguration": enforced}  # fmt: skip
        if cutoff:
            configuration["BytesScannedCutoffPerQuery"] = cutoff
        c["athena"].create_work_group(Name=name, Configuration=configuration)
    day_one = sum(s for k, s in sizes.items() if "/day=01/" in k)
    yield {**c, "objects": objects, "sizes": sizes, "day_one": day_one, "big": big}
    server.stop()


def create_table(glue: Any, name: str) -> None:
    parameters = {"projection.enabled": "true"}
    for key, bounds in (("year", "2020,2100"), ("month", "1,12"), ("day", "1,31")):
        parameters[f"projection.{key}.type"] = "integer"
        parameters[f"projection.{key}.range"] = bounds
        if key != "year":
            parameters[f"projection.{key}.digits"] = "2"
    glue.create_table(
        DatabaseName="an",
        TableInput={
            "Name": name,
            "TableType": "EXTERNAL_TABLE",
            "Parameters": parameters,
            "PartitionKeys": [{"Name": k, "Type": "int"} for k in ("year", "month", "day")],
            "StorageDescriptor": {
                "Location": f"s3://lake/{name}/",
                "Columns": [{"Name": n, "Type": t} for n, t in COLUMNS],
                "SerdeInfo": {"SerializationLibrary": "org.openx.data.jsonserde.JsonSerDe"},
            },
        },
    )


def start(lake: dict[str, Any], query: str, workgroup: str = "wg", **extra: Any) -> str:
    return lake["athena"].start_query_execution(
        QueryString=query, WorkGroup=workgroup, QueryExecutionContext={"Database": "an"}, **extra
    )["QueryExecutionId"]


def wait(lake: dict[str, Any], execution_id: str) -> dict[str, Any]:
    deadline = time.time() + 30
    while time.time() < deadline:
        found = lake["athena"].get_query_execution(QueryExecutionId=execution_id)
        if found["QueryExecution"]["Status"]["State"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return found["QueryExecution"]
        time.sleep(0.02)
    raise AssertionError(f"query {execution_id} did not finish")


def query(lake: dict[str, Any], sql: str, workgroup: str = "wg") -> tuple[dict, list[list]]:
    """Run to SUCCEEDED; the execution and the rows after the header."""
    execution = wait(lake, start(lake, sql, workgroup))
    assert execution["Status"]["State"] == "SUCCEEDED", execution["Status"]
    answer = lake["athena"].get_query_results(QueryExecutionId=execution["QueryExecutionId"])
    rows = [[d.get("VarCharValue") for d in r["Data"]] for r in answer["ResultSet"]["Rows"]]
    execution["ColumnTypes"] = [
        c["Type"] for c in answer["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]
    ]
    execution["Header"] = rows[0]
    return execution, rows[1:]


def all_rows(lake: dict[str, Any], day: int | None = None) -> list[dict[str, Any]]:
    chosen = [rows for k, rows in lake["objects"].items() if day is None or f"day={day:02d}/" in k]
    return [r for rows in chosen for r in rows]


def test_aggregates_equal_python_figures(lake: dict[str, Any]) -> None:
    execution, rows = query(
        lake,
        (
            "SELECT user_id, count(*), sum(n), sum(n) / count(*) AS mean_n, max(amount) top,"
            " count_if(details['color'] = 'red') red FROM events"
            " WHERE year = 2031 AND month = 3 AND day = 2 GROUP BY user_id ORDER BY user_id"
        ),
    )
    assert execution["Header"] == ["user_id", "_col1", "_col2", "mean_n", "top", "red"]
    assert execution["ColumnTypes"] == ["varchar", "bigint", "bigint", "bigint", "double", "bigint"]
    expected = []
    day_rows = all_rows(lake, day=2)
    for user in sorted({r["user_id"] for r in day_rows}):
        mine = [r for r in day_rows if r["user_id"] == user]
        total = sum(r["n"] for r in mine)
        top, red = max(r["amount"] for r in mine), sum(r["details"]["color"] == "red" for r in mine)
        expected.append([user, str(len(mine)), str(total), str(total // len(mine)), repr(top),
                         str(red)])  # fmt: skip
    assert rows == expected


def test_double_sum_and_distinct_count(lake: dict[str, Any]) -> None:
    _, rows = query(lake, "SELECT sum(amount), approx_distinct(user_id), count(*) FROM events")
    everything = all_rows(lake)
    assert float(rows[0][0]) == pytest.approx(sum(r["amount"] for r in everything))
    assert rows[0][1:] == [str(len({r["user_id"] for r in everything})), str(len(everything))]


def test_map_column_reads_by_key(lake: dict[str, Any]) -> None:
    _, rows = query(lake, "SELECT details['day'], count(*) FROM events GROUP BY 1 ORDER BY 1")
    assert rows == [[str(d), str(len(all_rows(lake, d)))] for d in DAYS]


def test_bytes_scanned_are_the_selected_partitions_compressed_sizes(lake: dict[str, Any]) -> None:
    sizes = lake["sizes"]
    one, _ = query(lake, "SELECT count(*) FROM events WHERE day = 1")
    assert one["Statistics"]["DataScannedInBytes"] == lake["day_one"]
    every, _ = query(lake, "SELECT count(*) FROM events")
    assert every["Statistics"]["DataScannedInBytes"] == sum(sizes.values())
    two, _ = query(lake, "SELECT count(*) FROM events WHERE day IN (2, 3) OR day > 30")
    assert two["Statistics"]["DataScannedInBytes"] == sum(
        s for k, s in sizes.items() if "/day=01/" not in k
    )
    twice, _ = query(
        lake,
        "WITH e AS (SELECT * FROM events WHERE day = 1) "
        "SELECT count(*) FROM e a JOIN e b ON a.event_id = b.event_id",
    )
    assert twice["Statistics"]["DataScannedInBytes"] == 2 * lake["day_one"]


def test_cutoff_cancels_a_larger_query_and_passes_a_smaller(lake: dict[str, Any]) -> None:
    large = wait(lake, start(lake, "SELECT count(*) FROM big", workgroup="small"))
    assert large["Status"]["State"] == "CANCELLED"
    reason = large["Status"]["StateChangeReason"]
    assert "Bytes scanned limit was exceeded" in reason
    assert f"{lake['big'][1][0] + lake['big'][2][0]} bytes" in reason
    assert "10000000" in reason
    listed = lake["s3"].list_objects_v2(Bucket="res", Prefix=f"small/{large['QueryExecutionId']}")
    assert listed["KeyCount"] == 0
    small, rows = query(lake, "SELECT count(*), sum(n) FROM big WHERE day = 2", workgroup="small")
    assert rows == [[str(lake["big"][2][1]), str(2 * lake["big"][2][1])]]
    assert small["Statistics"]["DataScannedInBytes"] == lake["big"][2][0]


def test_output_location_enforced_or_the_clients(lake: dict[str, Any]) -> None:
    asked = {"ResultConfiguration": {"OutputLocation": "s3://res/client/"}}
    enforced = wait(lake, start(lake, "SELECT 1", "wg", **asked))
    assert enforced["ResultConfiguration"]["OutputLocation"] == (
        f"s3://res/wg/{enforced['QueryExecutionId']}.csv"
    )
    loose = wait(lake, start(lake, "SELECT 1", "loose", **asked))
    assert loose["ResultConfiguration"]["OutputLocation"] == (
        f"s3://res/client/{loose['QueryExecutionId']}.csv"
    )
    default = wait(lake, start(lake, "SELECT 1", "loose"))
    assert default["ResultConfiguration"]["OutputLocation"].startswith("s3://res/loose/")


def test_result_csv_and_metadata_objects(lake: dict[str, Any]) -> None:
    execution, _ = query(lake, "SELECT 'a\"b' s, CAST(NULL AS varchar) z, 2.5 / 2 h, 7 / 2 q")
    key = f"wg/{execution['QueryExecutionId']}.csv"
    body = lake["s3"].get_object(Bucket="res", Key=key)["Body"].read()
    assert body == b'"s","z","h","q"\n"a""b",,"1.25","3"\n'
    assert list(csv.reader(io.StringIO(body.decode()))) == [
        ["s", "z", "h", "q"],
        ['a"b', "", "1.25", "3"],
    ]
    metadata = json.loads(lake["s3"].get_object(Bucket="res", Key=key + ".metadata")["Body"].read())
    assert [c["Name"] for c in metadata["ColumnInfo"]] == ["s", "z", "h", "q"]
    assert metadata["ColumnInfo"][3]["Type"] == "integer"


def test_paging_by_two(lake: dict[str, Any]) -> None:
    execution_id = start(lake, "SELECT event_id FROM events WHERE day = 1 ORDER BY event_id")
    assert wait(lake, execution_id)["Status"]["State"] == "SUCCEEDED"
    pages, token = [], None
    while True:
        extra = {"NextToken": token} if token else {}
        answer = lake["athena"].get_query_results(
            QueryExecutionId=execution_id, MaxResults=2, **extra
        )
        pages.append([r["Data"][0].get("VarCharValue") for r in answer["ResultSet"]["Rows"]])
        token = answer.get("NextToken")
        if not token:
            break
    expected = sorted(r["event_id"] for r in all_rows(lake, 1))
    assert pages[0][0] == "event_id"
    assert all(len(p) == 2 for p in pages[:-1])
    assert [v for p in pages for v in p][1:] == expected
    assert "event_id" not in [v for p in pages[1:] for v in p]
    assert len(pages) == (len(expected) + 1 + 1) // 2


def test_results_of_unfinished_and_failed_queries_are_errors(lake: dict[str, Any]) -> None:
    engine = engine_for(ACCOUNT, REGION)
    gate = threading.Event()
    blockers = [engine._pool.submit(gate.wait, 10) for _ in range(2)]  # both workers busy
    try:
        waiting = start(lake, "SELECT 1")
        with pytest.raises(
            ClientError, match=r"Query has not yet finished\. Current state: QUEUED"
        ):
            lake["athena"].get_query_results(QueryExecutionId=waiting)
        lake["athena"].stop_query_execution(QueryExecutionId=waiting)
    finally:
        gate.set()
        for blocker in blockers:
            blocker.result()
    cancelled = wait(lake, waiting)
    assert cancelled["Status"]["State"] == "CANCELLED"
    assert cancelled["Status"]["StateChangeReason"] == "Query cancelled by user"
    failed = wait(lake, start(lake, "SELECT * FROM missing"))
    assert failed["Status"]["State"] == "FAILED"
    assert failed["Status"]["StateChangeReason"].startswith("TABLE_NOT_FOUND")
    with pytest.raises(ClientError, match="Final query state: FAILED") as raised:
        lake["athena"].get_query_results(QueryExecutionId=failed["QueryExecutionId"])
    assert raised.value.response["Error"]["Code"] == "InvalidRequestException"
    with pytest.raises(ClientError, match="was not found"):
        lake["athena"].get_query_results(QueryExecutionId=str(uuid.uuid4()))


def test_client_request_token(lake: dict[str, Any]) -> None:
    token = "t-" + uuid.uuid4().hex
    first = start(lake, "SELECT 1", ClientRequestToken=token)
    assert start(lake, "SELECT 1", ClientRequestToken=token) == first
    with pytest.raises(ClientError) as raised:
        start(lake, "SELECT 2", ClientRequestToken=token)
    assert raised.value.response["Error"]["Code"] == "InvalidRequestException"
    assert start(lake, "SELECT 1", ClientRequestToken="u-" + token) != first


def test_stopping_a_finished_query_leaves_it(lake: dict[str, Any]) -> None:
    done = wait(lake, start(lake, "SELECT 1"))
    lake["athena"].stop_query_execution(QueryExecutionId=done["QueryExecutionId"])
    after = lake["athena"].get_query_execution(QueryExecutionId=done["QueryExecutionId"])
    assert after["QueryExecution"]["Status"]["State"] == "SUCCEEDED"
    assert "StateChangeReason" not in after["QueryExecution"]["Status"]


def test_state_change_events_reach_a_rule_target(lake: dict[str, Any]) -> None:
    queue_url = lake["sqs"].create_queue(QueueName="athena-states")["QueueUrl"]
    queue_arn = lake["sqs"].get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    lake["events"].put_rule(
        Name="athena-states",
        EventPattern=json.dumps(
            {"source": ["aws.athena"], "detail-type": ["Athena Query State Change"]}
        ),
    )
    lake["events"].put_targets(Rule="athena-states", Targets=[{"Id": "q", "Arn": queue_arn}])
    execution_id = start(lake, "SELECT count(*) FROM events WHERE day = 3")
    assert wait(lake, execution_id)["Status"]["State"] == "SUCCEEDED"
    mine: list[dict[str, Any]] = []
    deadline = time.time() + 10
    while len(mine) < 3 and time.time() < deadline:
        got = lake["sqs"].receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        for message in got.get("Messages", []):
            event = json.loads(message["Body"])
            if event["detail"]["queryExecutionId"] == execution_id:
                mine.append(event)
    assert {(e["source"], e["detail-type"]) for e in mine} == {
        ("aws.athena", "Athena Query State Change")
    }
    details = sorted((e["detail"] for e in mine), key=lambda d: int(d["sequenceNumber"]))
    assert [(d["currentState"], d.get("previousState")) for d in details] == [
        ("QUEUED", None),
        ("RUNNING", "QUEUED"),
        ("SUCCEEDED", "RUNNING"),
    ]
    assert {d["workgroupName"] for d in details} == {"wg"}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e["time"]) for e in mine)


def test_empty_table_gives_the_header_alone(lake: dict[str, Any]) -> None:
    execution, rows = query(lake, "SELECT event_id, n, details FROM empty")
    assert execution["Header"] == ["event_id", "n", "details"]
    assert execution["ColumnTypes"] == ["varchar", "integer", "map"]
    assert rows == []
    assert execution["Statistics"]["DataScannedInBytes"] == 0
    _, counted = query(lake, "SELECT count(*) FROM empty WHERE day = 1")
    assert counted == [["0"]]


def test_unknown_json_fields_are_ignored(lake: dict[str, Any]) -> None:
    _, rows = query(lake, "SELECT event_id, n, user_id, day FROM odd ORDER BY event_id")
    assert rows == [["o1", "3", None, "1"], ["o2", None, None, "1"]]


def test_duplicate_json_key_fails_the_query_as_the_openx_serde_does(lake: dict[str, Any]) -> None:
    failed = wait(lake, start(lake, "SELECT n FROM dupes"))
    assert failed["Status"]["State"] == "FAILED"
    assert "duplicate key" in failed["Status"]["StateChangeReason"].lower()


def test_malformed_line_fails_the_query(lake: dict[str, Any]) -> None:
    failed = wait(lake, start(lake, "SELECT count(*) FROM broken"))
    assert failed["Status"]["State"] == "FAILED"
    assert failed["Status"]["StateChangeReason"].startswith("GENERIC_USER_ERROR")
    assert failed["Status"]["AthenaError"]["ErrorType"] == 1100
