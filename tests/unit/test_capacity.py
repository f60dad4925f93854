"""The capacity model (ops.capacity): its arithmetic on hand-computed cases, its dated
constants, and its answer to benchmark results that lack a figure."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ops import capacity, pricing
from ops.capacity_inputs import Assumptions, Figures, Settings


def _route(own_s: float, calls: dict[str, int], wcu: float = 0.0, rcu: float = 0.0,
           table: str = "serverless-app-dev-users", shared: int = 0,
           shared_wcu: float | None = None) -> dict[str, Any]:  # fmt: skip
    return {"own_s": own_s, "calls": calls, "wcu": wcu, "rcu": rcu,
            "wcu_by_table": {table: wcu} if wcu else {},
            "rcu_by_table": {table: rcu} if rcu else {},
            "log_bytes": 1000, "shared_key_max_writes": shared,
            "shared_key_max_wcu": shared if shared_wcu is None else shared_wcu}  # fmt: skip


BATCH = {**_route(0.1, {"dynamodb.BatchWriteItem": 20, "s3.PutObject": 1}, wcu=500,
                  table="serverless-app-dev-metrics", shared=1),
         "stream_bytes_per_event": 300.0, "lake_bytes_per_event": 40.0, "put_objects": 1,
         "records": 500}  # fmt: skip
ROUTES = {
    "GET /users/{id}": _route(0.001, {"dynamodb.GetItem": 1}, rcu=0.5),
    "POST /orders": _route(0.002, {"dynamodb.PutItem": 1, "stepfunctions.StartExecution": 1},
                           wcu=1, table="serverless-app-dev-orders"),
    "POST /events (1)": _route(0.002, {"dynamodb.TransactWriteItems": 1,
                                       "kinesis.PutRecords": 1}, wcu=4),
}  # fmt: skip


TASKS = ["validate_order", "reserve_inventory", "charge_payment", "ship_order", "complete_order"]


def _figures(routes: dict[str, Any] | None = None) -> Figures:
    return Figures(routes=routes or ROUTES, events_own_fixed_s=0.002,
                   events_own_per_event_s=0.0001, batch=BATCH, transitions_per_order=9,
                   tasks_per_order=len(TASKS), task_functions=TASKS, transitions_source="test",
                   task_own_s=0.001, sources={"footprint": "test"})  # fmt: skip


def _settings(memory: int = 1769, reserved: dict[str, int] | None = None) -> Settings:
    return Settings(memory_mb={"api_handler": memory, "process_telemetry": memory,
                               **{task: memory for task in TASKS}}, batch_size=500,
                    batch_window_s=5, shard_count=2, api_rate_limit=1000, api_burst_limit=2000,
                    reserved_concurrency=reserved or {})  # fmt: skip


def test_littles_law_and_cpu_scaling() -> None:
    assert capacity.little(200, 0.05) == pytest.approx(10)
    assert capacity.cpu_factor(1769) == 1
    assert capacity.cpu_factor(4096) == 1  # more than one vCPU does not speed up one thread
    assert capacity.cpu_factor(512) == pytest.approx(1769 / 512)
    assert capacity.cpu_factor(1769, speed_ratio=2) == pytest.approx(0.5)
    # 2 ms of own time at one vCPU plus one GetItem at its estimated latency
    duration = capacity.lambda_duration(0.002, {"dynamodb.GetItem": 1}, 1769, 1.0)
    assert duration == pytest.approx(0.002 + pricing.latency("dynamodb.GetItem"))


def test_shards_round_up_on_the_tighter_of_bytes_records_and_reads() -> None:
    mib = 1_048_576
    assert capacity.shards_needed(0, 0) == 1
    assert capacity.shards_needed(100 * 1000, 1000) == 1  # exactly 1,000 records/s
    assert capacity.shards_needed(100 * 1001, 1001) == 2  # one record more
    assert capacity.shards_needed(2 * mib + 1, 10) == 3  # bytes, not records
    assert capacity.shards_needed(0.5 * mib, 10, read_bytes_per_s=4 * mib + 1) == 3  # reads
    assert capacity.shards_needed(900 * 1000, 900, headroom=1.5) == 2


def test_first_limit_is_the_most_used_one_reached() -> None:
    limits = [capacity._limit("a", 500, 1000, "lift a"), capacity._limit("b", 3000, 1000, "b"),
              capacity._limit("c", 1200, 1000, "c")]  # fmt: skip
    assert capacity.first_limit(limits)["name"] == "b"
    assert capacity.first_limit([capacity._limit("a", 999, 1000, "a")]) is None
    assert capacity.first_limit([]) is None


def test_limits_in_order_of_arrival() -> None:
    steps = [
        {"rate": 1000, "limits": [capacity._limit("throttle", 1000, 1000, "x"),
                                  capacity._limit("shards", 1, 2, "y")]},
        {"rate": 10000, "limits": [capacity._limit("throttle", 10000, 1000, "x"),
                                   capacity._limit("shards", 10, 2, "y"),
                                   capacity._limit("concurrency", 250, 1000, "z")]},
    ]  # fmt: skip
    order = capacity.reached(steps)
    assert [(name, rate, beyond) for name, (rate, _, beyond) in order] == [
        ("throttle", 1000, False),
        ("shards", 2000, False),
        ("concurrency", 40000, True),
    ]


def test_tiered_price_spans_tiers() -> None:
    gb_s = pricing.PRICES["lambda_gb_s"]
    (first_size, first), (_, second), _ = gb_s.tiers
    assert gb_s.cost(1e9) == pytest.approx(1e9 * first)
    assert gb_s.cost(first_size + 1e9) == pytest.approx(first_size * first + 1e9 * second)


def test_api_step_by_hand() -> None:
    a = Assumptions(api_mix={"GET /users/{id}": 1.0})
    step = capacity.step("api", 1000, _figures(), _settings(), a)
    duration = 0.001 + pricing.latency("dynamodb.GetItem")  # 1,769 MB: factor 1
    assert step["functions"]["api_handler"]["concurrency"] == pytest.approx(1000 * duration)
    assert step["dynamodb_rcu_per_s"] == {"users": pytest.approx(500)}
    assert step["first_limit"]["name"].startswith("API stage throttle")  # 1,000 of 1,000
    month = a.hours_per_month * 3600
    assert step["cost_usd_per_month"]["dynamodb"] == pytest.approx(
        500 * month * pricing.PRICES["dynamodb_rru"].value
    )
    assert step["transitions_per_s"] == 0


def test_orders_share_drives_step_functions() -> None:
    a = Assumptions(api_mix={"GET /users/{id}": 0.9, "POST /orders": 0.1})
    step = capacity.step("api", 10_000, _figures(), _settings(), a)
    assert step["orders_per_s"] == pytest.approx(1000)
    assert step["transitions_per_s"] == pytest.approx(9000)
    names = [item["name"] for item in step["limits"] if item["use"] >= 1]
    assert "Step Functions StartExecution" in names  # 1,000/s over 300/s
    for task in TASKS:  # one invocation of each Lambda task per order
        assert step["functions"][task]["invocations_per_s"] == pytest.approx(1000)
    assert step["dynamodb_wcu_per_s"]["orders"] == pytest.approx(1000 * (1 + 5 * a.task_wcu))


def test_events_step_by_hand() -> None:
    a = Assumptions(events_per_request=25)
    step = capacity.step("events", 10_000, _figures(), _settings(), a)
    assert step["api_rps"] == pytest.approx(400)
    assert step["shards_needed"] == 10  # 10,000 records/s at 1,000 a shard
    assert step["batch_records"] == 500  # 1,000 records/s a shard fill 500 in 0.5 s < 5 s
    assert step["s3_puts_per_s"] == pytest.approx(20)
    assert step["lake_bytes_per_day"] == pytest.approx(10_000 * 86_400 * 40)
    assert step["first_limit"]["name"] == "Kinesis stream shards (ShardCount)"  # 10 of 2
    assert step["hot_key_wcu_per_s"] == pytest.approx(20)  # one baseline key per batch


def test_every_constant_has_a_source_and_a_date() -> None:
    constants = pricing.every_constant()
    assert len(constants) > 20
    for name, constant in constants.items():
        assert constant.source, name
        assert re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", constant.as_of), name
        assert constant.checked in (pricing.STORED, pricing.PUBLISHED, pricing.ESTIMATE), name
        assert constant.unit, name
        if constant.checked != pricing.ESTIMATE:
            assert constant.source.startswith("https://"), name


def _results(tmp_path: Path, metrics: dict[str, Any] | None) -> Path:
    path = tmp_path / "bench.json"
    benchmarks = {} if metrics is None else {"footprint": {"status": "ok", "metrics": metrics}}
    path.write_text(json.dumps({"benchmarks": benchmarks}))
    return path


def _metrics() -> dict[str, Any]:
    return {"routes": {**ROUTES, "PUT /users/{id}": ROUTES["GET /users/{id}"]},
            "telemetry_batch": BATCH, "post_events_own_s_fixed": 0.002,
            "post_events_own_s_per_event": 0.0001}  # fmt: skip


@pytest.mark.parametrize(
    ("metrics", "said"),
    [
        (None, "no footprint benchmark result"),
        ({k: v for k, v in _metrics().items() if k != "telemetry_batch"}, "telemetry_batch"),
        ({**_metrics(), "telemetry_batch": {k: v for k, v in BATCH.items()
                                            if k != "lake_bytes_per_event"}},
         "lake_bytes_per_event"),
        ({**_metrics(), "routes": {"GET /users/{id}": ROUTES["GET /users/{id}"]}},
         "no route 'PUT /users/{id}'"),
    ],
)  # fmt: skip
def test_a_missing_figure_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], metrics: Any, said: str
) -> None:
    path = _results(tmp_path, metrics)
    code = capacity.main(["--bench", str(path), "--no-run", "--json", str(tmp_path / "o.json")])
    err = capsys.readouterr().err
    assert code == 2
    assert said in err
    assert "make bench ONLY=footprint" in err or "it measures" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o.json").exists()


def test_a_whole_run_writes_the_table_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _results(tmp_path, _metrics())
    out = tmp_path / "capacity.json"
    assert capacity.main(["--bench", str(path), "--no-run", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Assumptions" in printed and "first limit" in printed
    for label in ("1k req/s", "10k req/s", "100k req/s", "1k events/s", "100k events/s"):
        assert label in printed
    document = json.loads(out.read_text())
    assert [s["rate"] for s in document["steps"]] == [1000, 10000, 100000] * 2
    assert document["constants"]["quota.lambda_account_concurrency"]["value"] == 1000
    totals = [s["cost_usd_per_month"]["total"] for s in document["steps"][:3]]
    assert totals[0] < totals[1] < totals[2]


def test_item_sizes_follow_dynamodbs_rules() -> None:
    from bench.footprint import item_size

    wire = {"pk": {"S": "USER#1"}, "n": {"N": "12345"}, "ok": {"BOOL": True},
            "m": {"M": {"a": {"S": "xy"}}}}  # fmt: skip
    # names 2+1+2+1; S 6; N 5 digits -> 4; BOOL 1; M 3 + (1 + 2)
    assert item_size(wire) == 6 + 6 + 4 + 1 + 6
    plain = {"pk": "USER#1", "n": 12345, "ok": True, "m": {"a": "xy"}}
    assert item_size(plain) == item_size(wire)


def test_reserved_concurrency_is_a_limit_of_its_own() -> None:
    """prod reserves 100 executions for the API handler: it throttles there, below the
    account's 1,000 and the API's own throttle."""
    a = Assumptions(api_mix={"GET /users/{id}": 1.0})
    route = {**ROUTES, "GET /users/{id}": _route(0.2, {"dynamodb.GetItem": 1}, rcu=0.5)}
    step = capacity.step("api", 1000, _figures(route), _settings(reserved={"api_handler": 100}),
                         a)  # fmt: skip
    limit = next(i for i in step["limits"] if i["name"] == "Lambda reserved concurrency "
                 "(api_handler)")  # fmt: skip
    assert limit["limit"] == 100
    assert limit["demand"] == pytest.approx(1000 * (0.2 + pricing.latency("dynamodb.GetItem")))
    assert step["first_limit"]["name"] == "Lambda reserved concurrency (api_handler)"
    assert ".chalice/config.json" in limit["lift"]


def test_settings_read_reserved_concurrency_per_function() -> None:
    from ops.capacity_inputs import settings

    config = json.loads((Path(__file__).parents[2] / ".chalice" / "config.json").read_text())
    for stage, spec in config["stages"].items():
        expected = {name: int(fn["reserved_concurrency"])
                    for name, fn in spec.get("lambda_functions", {}).items()
                    if "reserved_concurrency" in fn}  # fmt: skip
        assert settings(stage).reserved_concurrency == expected, stage


def test_athena_minimum_is_per_query() -> None:
    least = pricing.PRICES["athena_min_bytes_per_query"].value
    # a small lake: each of the 6 queries pays its 10 MB, not the report once
    assert capacity.athena_billed(1e6, reads=7, queries=6) == pytest.approx(6 * least)
    # a large one: every read is billed, `daily` reading the day twice
    assert capacity.athena_billed(1e9, reads=7, queries=6) == pytest.approx(7e9)
    assert capacity.athena_billed(0, reads=7, queries=6) == 0
    a = Assumptions(events_per_request=25)
    step = capacity.step("events", 1, _figures(), _settings(), a)  # 3.5 MB a day
    assert step["cost_usd_per_month"]["athena"] == pytest.approx(
        30 * 6 * least / 1e12 * pricing.PRICES["athena_tb_scanned"].value
    )


def test_report_queries_match_the_app() -> None:
    from chalicelib.analytics.queries import QUERY_NAMES

    assert Assumptions().report_queries == len(QUERY_NAMES)


def test_hot_key_demand_is_write_units_not_writes() -> None:
    """One write a request to a shared key, but a transactional one: 2 WCU each."""
    a = Assumptions(api_mix={"POST /orders": 1.0})
    orders = _route(0.002, {"dynamodb.TransactWriteItems": 1}, wcu=2, shared=1, shared_wcu=2,
                    table="serverless-app-dev-orders")  # fmt: skip
    step = capacity.step("api", 1000, _figures({**ROUTES, "POST /orders": orders}), _settings(),
                         a)  # fmt: skip
    assert step["hot_key_wcu_per_s"] == pytest.approx(2000)
    partition = next(i for i in step["limits"] if i["name"].startswith("DynamoDB partition"))
    assert partition["use"] == pytest.approx(2)


def _workflow() -> dict[str, Any]:
    """Validate -> Choice -> Notify (SNS) -> Complete -> Done; a refusal ends in a Succeed
    state through the compensation a Catch also leads to."""
    return {"StartAt": "Validate", "States": {
        "Validate": {"Type": "Task", "Resource": "${ValidateFunction}", "Next": "Check",
                     "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Undo"}]},
        "Check": {"Type": "Choice", "Default": "Refused",
                  "Choices": [{"Variable": "$.ok", "BooleanEquals": False, "Next": "Refused"},
                              {"Variable": "$.ok", "BooleanEquals": True, "Next": "Notify"}]},
        "Refused": {"Type": "Pass", "Next": "Undo"},
        "Notify": {"Type": "Task", "Resource": "arn:aws:states:::sns:publish",
                   "Next": "Complete"},
        "Complete": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                     "Parameters": {"FunctionName": "${CompleteFunction}"}, "Next": "Done"},
        "Done": {"Type": "Succeed"},
        "Undo": {"Type": "Task", "Resource": "${UndoFunction}", "Next": "RefusedDone"},
        "RefusedDone": {"Type": "Succeed"},
    }}  # fmt: skip


def test_success_path_and_its_lambda_tasks() -> None:
    from ops.capacity_inputs import lambda_tasks, success_path

    definition = _workflow()
    path = success_path(definition)
    assert path == ["Validate", "Check", "Notify", "Complete", "Done"]
    arn = "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:serverless-app-"
    subs = {name: {"Fn::Sub": f"{arn}${{Stage}}-{fn}"} for name, fn in
            (("ValidateFunction", "validate"), ("CompleteFunction", "complete"),
             ("UndoFunction", "undo"))}  # fmt: skip
    assert lambda_tasks(definition, subs, path) == ["validate", "complete"]  # not the SNS task


def test_the_order_workflows_lambda_tasks_exclude_service_integrations() -> None:
    from ops.capacity_inputs import workflow_path

    template = json.loads((Path(__file__).parents[2] / "infra" / "resources.json").read_text())
    states = template["Resources"]["OrderWorkflow"]["Properties"]["Definition"]["States"]
    count, functions = workflow_path()
    assert "OrderCompleted" in states and count >= len(functions) + 1
    assert functions and all(not f.startswith("arn:") for f in functions)
    integrations = [s for s in states.values() if s.get("Resource", "").startswith(
        "arn:aws:states:::sns")]  # fmt: skip
    assert integrations  # NotifyCustomer and NotifyFailure publish to SNS: not Lambda tasks
    assert len(functions) < sum(1 for s in states.values() if s["Type"] == "Task")


class _Model:
    def __init__(self, service: str, name: str) -> None:
        self.name = name
        self.service_model = type("S", (), {"service_name": service})()


def _recorded(calls: list[tuple[str, dict[str, Any], dict[str, Any]]],
              before: dict[str, Any], after: dict[str, Any]) -> Any:  # fmt: skip
    """The recorder's units for `calls` (operation, params, answer), the emulator's items
    before the first call and after each write given by `before` and `after` (by key)."""
    from bench.footprint import Recorder

    state = {"items": before}

    def probe(table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        return state["items"].get(json.dumps(key, sort_keys=True))

    recorder = Recorder(lambda table: ["pk"], probe)
    recorder.recording = True
    for name, params, answer in calls:
        model = _Model("dynamodb", name)
        recorder.params(params, model=model)
        recorder.before(model=model, params=params)
        if name in ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"):
            state["items"] = after
        recorder.after(model=model, parsed=answer)
    return recorder


def _item(kb: float) -> dict[str, Any]:
    return {"pk": {"S": "K"}, "blob": {"S": "x" * int(kb * 1024 - 7)}}


KEY = json.dumps({"pk": {"S": "K"}}, sort_keys=True)


def test_consistent_reads_cost_a_whole_unit() -> None:
    item = {"pk": {"S": "K"}}
    recorder = _recorded([
        ("GetItem", {"TableName": "t", "Key": item}, {"Item": item}),
        ("GetItem", {"TableName": "t", "Key": item, "ConsistentRead": True}, {"Item": item}),
        ("BatchGetItem", {"RequestItems": {"a": {"Keys": [item], "ConsistentRead": True},
                                           "b": {"Keys": [item]}}},
         {"Responses": {"a": [item, item], "b": [item]}}),
        ("Query", {"TableName": "q", "ConsistentRead": True}, {"Items": [_item(5)]}),
        ("TransactGetItems", {"TransactItems": []}, {"Responses": [{"Item": item}]}),
    ], {}, {})  # fmt: skip
    assert recorder.rcu_by_table == {"t": 1.5, "a": 2.0, "b": 0.5, "q": 2.0, "": 2.0}


def test_updates_and_deletes_are_charged_the_larger_item() -> None:
    key = {"pk": {"S": "K"}}
    update = {"TableName": "t", "Key": key, "UpdateExpression": "SET n = :n",
              "ExpressionAttributeValues": {":n": {"N": "1"}}}  # fmt: skip
    # a small update of a 3 KB item: 3 units (the item), not 1 (the request)
    assert _recorded([("UpdateItem", update, {})], {KEY: _item(3)}, {KEY: _item(3)}).wcu == 3
    # an update growing an item to 2.5 KB: 3 units
    assert _recorded([("UpdateItem", update, {})], {}, {KEY: _item(2.5)}).wcu == 3
    # a delete: the deleted item
    delete = {"TableName": "t", "Key": key}
    assert _recorded([("DeleteItem", delete, {})], {KEY: _item(4)}, {}).wcu == 4
    # a put replacing a larger item
    put = {"TableName": "t", "Item": key}
    assert _recorded([("PutItem", put, {})], {KEY: _item(2)}, {KEY: key}).wcu == 2
    # in a transaction: twice
    transact = {"TransactItems": [{"Update": update}, {"Delete": delete}]}
    recorder = _recorded([("TransactWriteItems", transact, {})], {KEY: _item(1.5)}, {})
    assert recorder.wcu == 2 * 2 + 2 * 2  # the update's 1.5 KB before, the delete's too
    assert [units for _, units in recorder.keys] == [4, 4]


def test_read_and_write_units_helpers() -> None:
    from bench.capacity_units import read_units, write_units

    assert write_units(0, 0) == 1
    assert write_units(3000, 100) == 3
    assert write_units(100, 1025, factor=2) == 4
    assert read_units("GetItem", "t", {"Item": _item(5)}, True) == [("t", 2.0)]
    assert read_units("GetItem", "t", {"Item": _item(5)}, False) == [("t", 1.0)]
