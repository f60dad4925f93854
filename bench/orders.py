"""Orders on the real local stack (`python -m local.stack`: emulator + API, 127.0.0.1), over
HTTP: what an order costs in time, in throughput and in Step Functions state transitions.

(1) sequential orders (pm_card_visa), one at a time: POST /orders to the order's terminal
    status (GET /orders/{id} polled every 20 ms), and the POST alone;
(2) throughput: a fixed number of orders from 8 client threads (each posts an order, polls it
    every 50 ms until it ends, then posts the next): orders completed per second, and the CPU
    per order of the stack's process (API and the workflow's Lambda tasks) and of the
    emulator (Step Functions, DynamoDB, SNS), polls included. An order that does not complete
    is an error of the benchmark, not a number;
(3) state transitions per order, what Step Functions Standard bills, for each path through
    OrderWorkflow, from the emulator's execution history: states entered, and retries (a task
    scheduled again within its state), which AWS bills as transitions too. The six orders are
    posted one after another, then polled together.

Latencies and rates are informational (no target; these machines are noisy). Checked: every
throughput order completed; the success path enters exactly the states the
definition has on it (infra/resources.json, from StartAt taking each Choice's first rule, to
the Succeed state); every path's execution SUCCEEDED (a refused order is a normal outcome:
only what needs a person fails an execution).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import Result, median, ms, percentile
from bench.stack import HOST, Stack, cpu_seconds, running_stack

#: Step Functions Standard, price per 1,000 state transitions (retries included), beyond the
#: free tier of 4,000 a month. Source: AWS Step Functions pricing page, us-east-1, as of 2026.
PRICE_PER_1000_TRANSITIONS_USD = 0.025
PRICE_SOURCE = "AWS Step Functions pricing page, us-east-1, as of 2026"
THREADS = 8
SEQUENTIAL_POLL_S, THROUGHPUT_POLL_S, ORDER_TIMEOUT_S = 0.02, 0.05, 120
TERMINAL = ("completed", "failed", "cancelled")
ADDRESS = {"name": "Bench Customer", "line1": "1 Benchmark Street", "city": "Berlin",
           "postal_code": "10115", "country": "DE"}  # fmt: skip
#: Paths through the workflow: label, payment method, address changes, out of stock, outcome.
PATHS: list[tuple[str, str, dict[str, str], bool, str]] = [
    ("success (pm_card_visa)", "pm_card_visa", {}, False, "completed"),
    ("declined (pm_card_declined)", "pm_card_declined", {}, False, "failed"),
    ("retried, then approved (pm_card_unavailable_2)", "pm_card_unavailable_2", {}, False,
     "completed"),
    ("failed after the charge (postal_code 00000)", "pm_card_visa", {"postal_code": "00000"},
     False, "failed"),
    ("out of stock (0 available)", "pm_card_visa", {}, True, "failed"),
    ("invalid (country US)", "pm_card_visa", {"country": "US"}, False, "failed"),
]  # fmt: skip
SUCCESS = PATHS[0][0]


def success_path_states() -> list[str]:
    """OrderWorkflow's states from StartAt to its Succeed state, each Choice's first rule."""
    from local.provision import RESOURCES_TEMPLATE

    template = json.loads(RESOURCES_TEMPLATE.read_text())
    definition = template["Resources"]["OrderWorkflow"]["Properties"]["Definition"]
    states, name, path = definition["States"], definition["StartAt"], []
    while name not in path:
        path.append(name)
        state = states[name]
        if state["Type"] == "Succeed":
            return path
        name = state["Choices"][0]["Next"] if state["Type"] == "Choice" else state.get("Next")
        if name is None:
            break
    raise RuntimeError(f"no way to a Succeed state in OrderWorkflow along {path}")


class Shop:
    """A customer and an admin of the stack, one keep-alive session per thread."""

    def __init__(self, stack: Stack) -> None:
        from local.provision import emulator_client
        from local.token import issue_token

        self.url, self.state = stack.url, stack.state()
        admin = issue_token(self.state, "bench-orders-admin@example.com", admin=True)
        user = issue_token(self.state, "bench-orders@example.com", admin=False)
        self.admin = {"Authorization": f"Bearer {admin}"}
        self.user = {"Authorization": f"Bearer {user}"}
        self.sfn = emulator_client(self.state, "stepfunctions")
        self.machine = self.state["resources"]["OrderWorkflowArn"]
        self._local = threading.local()

    @property
    def http(self) -> Any:
        import requests

        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def product(self, available: int) -> str:
        sku = f"BENCH-{uuid.uuid4().hex[:8].upper()}"
        body = {"name": f"Benchmark {sku}", "unit_amount": 1250, "available": available}
        url = f"{self.url}/inventory/{sku}"
        answer = self.http.put(url, json=body, headers=self.admin, timeout=30)
        if answer.status_code != 200:
            raise RuntimeError(f"PUT /inventory/{sku}: {answer.status_code} {answer.text[:300]}")
        return sku

    def post(self, sku: str, payment: str, **address: str) -> dict[str, Any]:
        """POST one order (202)."""
        body = {"lines": [{"sku": sku, "quantity": 1}], "payment_method": payment,
                "shipping_address": {**ADDRESS, **address}}  # fmt: skip
        started = time.perf_counter()
        posted = self.http.post(f"{self.url}/orders", json=body, headers=self.user, timeout=30)
        if posted.status_code != 202:
            raise RuntimeError(f"POST /orders: {posted.status_code} {posted.text[:300]}")
        return {"order_id": posted.json()["order_id"], "started": started,
                "post_s": time.perf_counter() - started, "polls": 0}  # fmt: skip

    def wait(self, posted: list[dict[str, Any]], poll_s: float) -> list[dict[str, Any]]:
        """Poll the posted orders (round robin) until each has ended; add `order`, `total_s`."""
        pending = list(posted)
        while pending:
            for entry in list(pending):
                url = f"{self.url}/orders/{entry['order_id']}"
                answer = self.http.get(url, headers=self.user, timeout=30)
                entry["polls"] += 1
                if answer.status_code != 200:
                    raise RuntimeError(f"GET {url}: {answer.status_code} {answer.text[:300]}")
                elapsed = time.perf_counter() - entry["started"]
                if answer.json()["status"] in TERMINAL:
                    entry["order"], entry["total_s"] = answer.json(), elapsed
                    pending.remove(entry)
                elif elapsed > ORDER_TIMEOUT_S:
                    raise RuntimeError(f"order not ended in {ORDER_TIMEOUT_S} s: {answer.text}")
            if pending:
                time.sleep(poll_s)
        return posted

    def order(self, sku: str, poll_s: float) -> dict[str, Any]:
        """One pm_card_visa order, posted and polled until it ends."""
        return self.wait([self.post(sku, "pm_card_visa")], poll_s)[0]

    def transitions(self, order_id: str) -> dict[str, Any]:
        """States entered and retries of the order's execution, once it has ended."""
        arn = f"{self.machine.replace(':stateMachine:', ':execution:')}:{order_id}"
        deadline = time.monotonic() + 30
        while (status := self.sfn.describe_execution(executionArn=arn)["status"]) == "RUNNING":
            if time.monotonic() > deadline:
                raise RuntimeError(f"execution {arn} still running 30 s after its order ended")
            time.sleep(0.05)
        pages = self.sfn.get_paginator("get_execution_history").paginate(executionArn=arn)
        events = [event for page in pages for event in page["events"]]
        kinds = [e["type"] for e in events]
        entered = [e["stateEnteredEventDetails"]["name"] for e in events
                   if e["type"].endswith("StateEntered")]  # fmt: skip
        # Each attempt of a task is scheduled once: attempts beyond one per entry are retries.
        scheduled = kinds.count("LambdaFunctionScheduled") + kinds.count("TaskScheduled")
        retries = scheduled - kinds.count("TaskStateEntered")
        return {"status": status, "entered": entered, "retries": retries,
                "billed": len(entered) + retries}  # fmt: skip


def _latency(values: list[float]) -> dict[str, float]:
    return {"p50_s": median(values), "p95_s": percentile(values, 95), "max_s": max(values)}


def _throughput(shop: Shop, stack: Stack, sku: str, count: int) -> dict[str, Any]:
    """`count` orders from THREADS client threads; CPU of the stack's two processes."""
    pids = {"stack": stack.process.pid, "emulator": stack.emulator_pid}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    load_before, started = os.getloadavg(), time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        placed = list(pool.map(lambda _: shop.order(sku, THROUGHPUT_POLL_S),
                               range(count)))  # fmt: skip
    wall_s = time.perf_counter() - started
    cpu = {name: (cpu_seconds(pid) - cpu_before[name]) / count for name, pid in pids.items()}
    completed = sum(1 for o in placed if o["order"]["status"] == "completed")
    if completed != count:
        first = next(o["order"] for o in placed if o["order"]["status"] != "completed")
        raise RuntimeError(f"{count - completed} of {count} orders did not complete: {first}")
    return {"orders": count, "threads": THREADS, "completed": completed, "wall_s": wall_s,
            "orders_per_s": count / wall_s, "cpu_s_per_order": cpu,
            "post_to_terminal": _latency([o["total_s"] for o in placed]),
            "polls_per_order": sum(o["polls"] for o in placed) / count,
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "order_ids": [o["order"]["order_id"] for o in placed]}  # fmt: skip


def _paths(shop: Shop, sku: str, empty: str) -> dict[str, dict[str, Any]]:
    """One order down each path: posted one after another, then polled together (the
    retried one waits 6 s)."""
    posted = [shop.post(empty if out else sku, payment, **address)
              for _, payment, address, out, _ in PATHS]  # fmt: skip
    paths = {}
    for (label, _, _, _, outcome), end in zip(PATHS, shop.wait(posted, SEQUENTIAL_POLL_S),
                                              strict=True):  # fmt: skip
        order = end["order"]
        if order["status"] != outcome:
            raise RuntimeError(f"{label}: the order ended {order['status']}, not {outcome}")
        failure = (order.get("failure") or {}).get("code")
        paths[label] = {**shop.transitions(order["order_id"]), "order_status": outcome,
                        "failure": failure, "seconds": end["total_s"]}  # fmt: skip
    return paths


def run(quick: bool) -> Result:
    warmup, sequential_n, throughput_n = (2, 6, 16) if quick else (3, 30, 96)
    title = f"orders on python -m local.stack ({HOST}): latency, throughput, transitions"
    result = Result("orders", title)
    expected = success_path_states()
    with running_stack() as stack:
        shop = Shop(stack)
        sku = shop.product(available=warmup + sequential_n + throughput_n + 100)
        empty = shop.product(available=0)
        runs = [shop.order(sku, SEQUENTIAL_POLL_S)
                for _ in range(warmup + sequential_n)][warmup:]  # fmt: skip
        bad = [o["order"] for o in runs if o["order"]["status"] != "completed"]
        if bad:
            raise RuntimeError(f"{len(bad)} sequential order(s) did not complete: {bad[0]}")
        load = _throughput(shop, stack, sku, throughput_n)
        under_load = [shop.transitions(order_id) for order_id in load.pop("order_ids")]
        paths = _paths(shop, sku, empty)
    sequential = {"orders": sequential_n, "warmup": warmup, "poll_s": SEQUENTIAL_POLL_S,
                  "post": _latency([o["post_s"] for o in runs]),
                  "post_to_terminal": _latency([o["total_s"] for o in runs])}  # fmt: skip
    load["all_on_success_path"] = all(
        t["entered"] == expected and t["retries"] == 0 for t in under_load
    )
    success = paths[SUCCESS]
    usd = success["billed"] * PRICE_PER_1000_TRANSITIONS_USD
    _report(result, sequential, load, paths, expected, stack.stopped_cleanly)
    result.metrics = {
        "sequential": sequential, "throughput": load, "paths": paths,
        "success_path_states": expected,
        "price": {"usd_per_1000_transitions": PRICE_PER_1000_TRANSITIONS_USD,
                  "source": PRICE_SOURCE, "usd_per_1000_orders_success": usd},
        "stopped_cleanly": stack.stopped_cleanly, "load_average": os.getloadavg(),
    }  # fmt: skip
    return result


# fmt: off
def _report(result: Result, sequential: dict[str, Any], load: dict[str, Any],
            paths: dict[str, dict[str, Any]], expected: list[str], stopped_cleanly: bool) -> None:
    """The table's rows and the checks (kept as written: one call a row)."""
    total, post = sequential["post_to_terminal"], sequential["post"]
    under = load["post_to_terminal"]
    cpu, price = load["cpu_s_per_order"], PRICE_PER_1000_TRANSITIONS_USD
    before, after = (" ".join(f"{v:.2f}" for v in load[k])
                     for k in ("load_average_before", "load_average_after"))
    result.row(f"(1) {sequential['orders']} sequential orders, POST -> terminal",
               f"p50 {ms(total['p50_s'])}, p95 {ms(total['p95_s'])}, max {ms(total['max_s'])} "
               f"(polled every {SEQUENTIAL_POLL_S * 1000:.0f} ms)")
    result.row("    POST /orders alone (202)",
               f"p50 {ms(post['p50_s'])}, p95 {ms(post['p95_s'])}, max {ms(post['max_s'])}")
    result.row(f"(2) {load['orders']} orders, {THREADS} client threads",
               f"{load['orders_per_s']:.2f} orders completed/s ({load['wall_s']:.1f} s), "
               f"{load['completed']}/{load['orders']} completed; POST -> terminal "
               f"p50 {ms(under['p50_s'])}, p95 {ms(under['p95_s'])}")
    result.row("    CPU per order",
               f"stack process (API + Lambda tasks) {cpu['stack'] * 1000:.0f} ms, emulator "
               f"{cpu['emulator'] * 1000:.0f} ms (incl. {load['polls_per_order']:.1f} polls per "
               f"order at {THROUGHPUT_POLL_S * 1000:.0f} ms)")
    result.row("    load average (1/5/15 min) in (2)", f"{before} -> {after}")
    result.row("    their executions",
               f"all on the success path ({len(expected)} states), no retry"
               if load["all_on_success_path"] else "NOT all on the success path (see JSON)")
    for label, p in paths.items():
        end = p["order_status"] + (f" ({p['failure']})" if p["failure"] else "")
        result.row(f"(3) {label}",
                   f"{len(p['entered'])} states entered + {p['retries']} retries = {p['billed']} "
                   f"billed transitions, ${p['billed'] * price:.3f} per 1,000 orders; {end} in "
                   f"{p['seconds']:.1f} s")
    success = paths[SUCCESS]
    result.row("    $ per 1,000 orders, success path",
               f"${success['billed'] * price:.3f} ({success['billed']} x {price} USD per 1,000 "
               f"state transitions, Step Functions Standard; {PRICE_SOURCE}; the free tier of "
               "4,000 a month not deducted)")
    result.row("stack stopped by SIGINT, both processes gone", "yes" if stopped_cleanly else "NO")
    for name, value in (("POST -> terminal", total), ("POST /orders", post)):
        for pct in ("p50", "p95"):
            result.check(f"(1) sequential {name} {pct}", ms(value[f"{pct}_s"]), "info", None)
    result.check(f"(2) orders completed/s, {THREADS} threads", round(load["orders_per_s"], 2),
                 "info", None)
    result.check("(2) throughput orders completed", f"{load['completed']}/{load['orders']}",
                 "all", load["completed"] == load["orders"])
    ended = [p["status"] for p in paths.values()]
    result.check("(3) executions SUCCEEDED, refusals included", f"{ended.count('SUCCEEDED')}/"
                 f"{len(ended)}", "all", ended.count("SUCCEEDED") == len(ended))
    on_path = success["billed"] == len(expected) and success["entered"] == expected
    result.check("(3) success path: billed transitions", success["billed"],
                 f"= {len(expected)}, its states in the definition", on_path,
                 note=" -> ".join(expected))
# fmt: on
