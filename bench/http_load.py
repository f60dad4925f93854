"""HTTP load on the real local stack (`python -m local.stack`: emulator + API, 127.0.0.1),
against floors measured in the same run, interleaved with it, on the same machine.

(a) one keep-alive client, sequential `GET /users/{id}`: with requests.Session and with a bare
    http.client.HTTPConnection; floors: the route's one AWS call on its own (the same GetItem,
    signed once, sent straight to the emulator over http.client), `GET /health` (the API
    server alone, no AWS call), the same GetItem made with boto3 (the app's client settings)
    from this process, and the same boto3 call behind a do-nothing server in its own process
    (`bench.relay`: the ceiling of any API that makes this call through boto3). Their
    differences split one request's time: the emulator, botocore's own work, the second hop,
    and what the local server and the function add beyond those. The keep-alive goal is
    against the boto3 GetItem (`TARGET_KEEP_ALIVE_RATIO`);
(b) 50 keep-alive clients at once (asyncio streams, one connection each, closed loop) on
    `GET /users/{id}`;
(c) the same 50 clients on `GET /health`, and on the emulator's GetItem: what the server
    alone and the emulator alone do under that concurrency.

The stack first settles (what the set-up's registration causes, its stream records, mail and
onboarding batch, runs for seconds in both processes); its idle background, the event
runtime's polling, is measured then and reported per request.

The targets are ratios to those floors, so a busy or slow machine moves both sides: the
measurements run in rounds (each round every measurement once, in a rotating order) and the
rounds are added up (the sequential phases in many short blocks, `SEQUENTIAL_ROUNDS`).
Absolute figures are reported as information. CPU seconds of the API and emulator processes
(from /proc) show where the time goes. The stack is stopped with SIGINT
and both of its processes are checked to be gone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from bench import Result, ms
from bench.clients import (
    Call,
    Sample,
    concurrent,
    sequential_calls,
    sequential_http_client,
    sequential_session,
    signed_get_item,
)
from bench.relay import running_relay
from bench.stack import HOST, Stack, cpu_seconds, running_stack, settle

CONCURRENCY = 50
#: The old absolute targets and what they were set against (README, the 2-core development
#: machine). One keep-alive client: >= 300 req/s, when requests.Session did 311 req/s and
#: http.client 419 (same code as now). Their same-run ratios to the emulator's GetItem/s,
#: medians of 12 runs here (loaded and not): 0.235 and 0.306, so that floor then did about
#: 311 / 0.235 = 1,320 and 419 / 0.306 = 1,370 GetItem/s: 1,350. 50 clients: p99 < 100 ms,
#: when `GET /health` had a p99 of 61 ms at 50 clients in the same table.
OLD_SEQUENTIAL_RPS, EMULATOR_SEQUENTIAL_REF_RPS = 300, 1350
OLD_CONCURRENT_P99_S, HEALTH_CONCURRENT_REF_P99_S = 0.100, 0.061
TARGET_SEQUENTIAL_RATIO = round(OLD_SEQUENTIAL_RPS / EMULATOR_SEQUENTIAL_REF_RPS, 2)
TARGET_CONCURRENT_P99_RATIO = round(OLD_CONCURRENT_P99_S / HEALTH_CONCURRENT_REF_P99_S, 2)
#: The goal for what the local server and the function add to the route's one AWS call: one
#: keep-alive http.client at >= 0.6x the rate of that GetItem made through boto3, one client,
#: same run. That is the floor the goal was set against ("the bare emulator answers GetItem
#: at 459/s, 2.2 ms": a boto3 GetItem, which measures 390-500/s at 1.8-2.3 ms here; the same
#: call replayed pre-signed over http.client does 720-860/s at 1.1-1.3 ms). The stricter floor, the
#: replayed call without botocore, is reported too: no server making the call through boto3
#: (the do-nothing relay) reaches 0.6x of it. requests.Session keeps the old target.
TARGET_KEEP_ALIVE_RATIO = 0.6
#: Sequential measurements: many short blocks, each phase once per round in a rotating
#: order, so a machine that speeds up or slows down (shared, 2 cores) moves every phase alike.
SEQUENTIAL_ROUNDS = 24

SEQ_SESSION, SEQ_RAW = "sequential_requests_session", "sequential_http_client"
SEQ_HEALTH, SEQ_EMULATOR = "sequential_health", "sequential_emulator_get_item"
SEQ_BOTO3, SEQ_RELAY = "sequential_boto3_get_item", "sequential_relay"
CONC, CONC_HEALTH = f"concurrent_{CONCURRENCY}", f"concurrent_{CONCURRENCY}_no_aws"
CONC_EMULATOR = f"concurrent_{CONCURRENCY}_emulator_get_item"
LABELS = {
    SEQ_SESSION: "(a) 1 client, requests.Session, GET /users/{id}",
    SEQ_RAW: "(a) 1 client, http.client, GET /users/{id}",
    SEQ_HEALTH: "(a) floor: 1 client, GET /health (no AWS call)",
    SEQ_EMULATOR: "(a) floor: 1 client, the GetItem on the emulator",
    SEQ_BOTO3: "(a) floor: 1 client, the same GetItem through boto3",
    SEQ_RELAY: "(a) ceiling: 1 client, a do-nothing server + that boto3 call",
    CONC: f"(b) {CONCURRENCY} clients (asyncio), GET /users/{{id}}",
    CONC_HEALTH: f"(c) floor: {CONCURRENCY} clients, GET /health (no AWS)",
    CONC_EMULATOR: f"(c) floor: {CONCURRENCY} clients, GetItem on the emulator",
}


def _user_id_of(state: dict[str, Any], email: str) -> str:
    from local.provision import emulator_client

    idp = emulator_client(state, "cognito-idp")
    user = idp.admin_get_user(UserPoolId=state["resources"]["UserPoolId"], Username=email)
    return str(next(a["Value"] for a in user["UserAttributes"] if a["Name"] == "sub"))


def _calls(stack: Stack) -> tuple[Call, Call, Call, str, str]:
    """`GET /users/{id}` with a user's token, `GET /health`, the route's GetItem, and its
    table and key."""
    import requests

    from chalicelib.users.repository import user_key
    from local.provision import emulator_client
    from local.token import issue_token

    state = stack.state()
    token = issue_token(state, "load@example.com", admin=False, id_token=False)
    auth = {"Authorization": f"Bearer {token}"}
    me = requests.get(f"{stack.url}/users?limit=1", headers=auth, timeout=10)
    if me.status_code != 403:  # a plain user may not list: the token works, the rules too
        raise RuntimeError(f"GET /users as a user: {me.status_code} {me.text[:300]}")
    user_id = _user_id_of(state, "load@example.com")
    table = state["environment"]["USERS_TABLE_NAME"]
    get_item = signed_get_item(
        emulator_client(state, "dynamodb"),
        stack.emulator_port,
        table,
        {"pk": {"S": user_key(user_id)}},
    )
    return (
        Call(stack.api_port, f"/users/{user_id}", headers=auth),
        Call(stack.api_port, "/health"),
        get_item,
        table,
        user_key(user_id),
    )


def _boto3_get_item(stack: Stack, table: str, pk: str) -> Callable[[float], Sample]:
    """The route's GetItem made with boto3 from this process, with the settings of the
    app's client on the local stack (a fixed User-Agent, as `core.aws` gives it)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    from chalicelib.core.aws import config_args
    from local.provision import FAKE_CREDENTIALS

    client = boto3.session.Session().client(
        "dynamodb",
        endpoint_url=stack.state()["emulator_url"],
        region_name=stack.state()["region"],
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(**config_args("dynamodb", None), user_agent="serverless-app bench"),
    )
    key = {"pk": {"S": pk}}

    def send() -> int:
        return int(client.get_item(TableName=table, Key=key)["ResponseMetadata"]["HTTPStatusCode"])

    send()
    return lambda seconds: sequential_calls(send, seconds, (BotoCoreError, ClientError))


def _one_request(phases: dict[str, Any], background: dict[str, Any]) -> dict[str, float]:
    """One keep-alive `GET /users/{id}` (seconds), split by the floors' differences."""
    t = {n: 1 / phases[n]["req_per_s"] for n in (SEQ_EMULATOR, SEQ_BOTO3, SEQ_RELAY, SEQ_RAW)}
    idle = background["background_cpu_ms_per_s"]
    return {
        "one request, 1 client: the emulator's GetItem (the floor)": t[SEQ_EMULATOR],
        "  + botocore's own work on it (boto3 floor less the floor)": t[SEQ_BOTO3]
        - t[SEQ_EMULATOR],
        "  + a second hop, do-nothing server (ceiling less boto3)": t[SEQ_RELAY] - t[SEQ_BOTO3],
        "  + the local server and the function (route less ceiling)": t[SEQ_RAW] - t[SEQ_RELAY],
        "    the event runtime's idle polling, CPU per request": (idle["api"] + idle["emulator"])
        / 1000
        * t[SEQ_RAW],
    }


def _interleaved(
    measures: dict[str, Callable[[], Sample]], rounds: int, pids: dict[str, int | None]
) -> dict[str, dict[str, Any]]:
    """Every measurement once per round (order rotated each round), blocks added up; CPU
    milliseconds per request of the API, the emulator and this process (the client)."""
    names = list(measures)
    samples = {name: Sample() for name in names}
    cpu = {name: {**dict.fromkeys(pids, 0.0), "client": 0.0} for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            before = {k: cpu_seconds(pid) for k, pid in pids.items()}
            client_before = time.process_time()
            samples[name].add(measures[name]())
            for k, pid in pids.items():
                cpu[name][k] += cpu_seconds(pid) - before[k]
            cpu[name]["client"] += time.process_time() - client_before
    out = {}
    for name in names:
        summary = samples[name].summary()
        done = max(summary["requests"] + summary["warmup_requests"], 1)
        summary["cpu_ms_per_request"] = {k: v * 1000 / done for k, v in cpu[name].items()}
        summary["rounds"] = rounds
        out[name] = summary
    return out


def run(quick: bool) -> Result:
    rounds, sequential_s, warmup_s, concurrent_s = (2, 1.5, 0.5, 3.0) if quick else (6, 6, 0.5, 12)
    seq_rounds = 4 if quick else SEQUENTIAL_ROUNDS
    seq_block, conc_block = sequential_s / seq_rounds, concurrent_s / rounds
    result = Result("http_load", f"HTTP load on python -m local.stack ({HOST}), vs same-run floors")
    with running_stack() as stack:
        users, health, get_item, table, pk = _calls(stack)
        pids = {"api": stack.process.pid, "emulator": stack.emulator_pid}
        background = settle(pids)
        boto3_get_item = _boto3_get_item(stack, table, pk)
        with running_relay(stack.state()["emulator_url"], table, pk) as (relay_port, relay_pid):
            relay = Call(relay_port, "/")
            sequential = {
                SEQ_SESSION: lambda: sequential_session(users, seq_block),
                SEQ_RAW: lambda: sequential_http_client(users, seq_block),
                SEQ_HEALTH: lambda: sequential_http_client(health, seq_block),
                SEQ_EMULATOR: lambda: sequential_http_client(get_item, seq_block),
                SEQ_BOTO3: lambda: boto3_get_item(seq_block),
                SEQ_RELAY: lambda: sequential_http_client(relay, seq_block),
            }
            phases = _interleaved(sequential, seq_rounds, {**pids, "relay": relay_pid})
        many = {
            CONC: lambda: concurrent(users, CONCURRENCY, warmup_s, conc_block),
            CONC_HEALTH: lambda: concurrent(health, CONCURRENCY, warmup_s, conc_block),
            CONC_EMULATOR: lambda: concurrent(get_item, CONCURRENCY, warmup_s, conc_block),
        }
        phases.update(_interleaved(many, rounds, pids))
        stack_log = stack.log_tail(1500)
    stopped_cleanly = stack.stopped_cleanly

    for name, label in LABELS.items():
        s = phases[name]
        cpu = s["cpu_ms_per_request"]
        result.row(
            label,
            f"{s['req_per_s']:.0f} req/s, p50 {ms(s['p50_s'])}, p99 {ms(s['p99_s'])}, "
            f"max {ms(s['max_s'])}, {s['requests']} ok, {s['errors']} errors",
        )
        relay_cpu = f", relay {cpu['relay']:.2f} ms" if name == SEQ_RELAY else ""
        result.row(
            "    CPU per request",
            f"API {cpu['api']:.2f} ms, emulator {cpu['emulator']:.2f} ms{relay_cpu}, "
            f"client {cpu['client']:.2f} ms",
        )
    split = _one_request(phases, background)
    for label, seconds in split.items():
        result.row(label, f"{seconds * 1e6:,.0f} µs")
    idle = background["background_cpu_ms_per_s"]
    result.row(
        "stack settled before measuring",
        f"after {background['waited_s']} s{'' if background['settled'] else ' (NOT idle yet)'}; "
        f"idle, the event runtime's polling uses {idle['api']:.0f} ms/s of CPU in the API "
        f"process, {idle['emulator']:.0f} ms/s in the emulator",
    )
    result.row("stack stopped by SIGINT, both processes gone", "yes" if stopped_cleanly else "NO")

    rps = {name: phases[name]["req_per_s"] for name in phases}
    p99 = {name: phases[name]["p99_s"] for name in phases}
    ratios = {
        "sequential_session_over_emulator_rps": rps[SEQ_SESSION] / rps[SEQ_EMULATOR],
        "sequential_http_client_over_emulator_rps": rps[SEQ_RAW] / rps[SEQ_EMULATOR],
        "sequential_http_client_over_health_rps": rps[SEQ_RAW] / rps[SEQ_HEALTH],
        "concurrent_p99_over_health_p99": p99[CONC] / p99[CONC_HEALTH],
        "concurrent_p99_over_emulator_p99": p99[CONC] / p99[CONC_EMULATOR],
        "concurrent_rps_over_emulator_rps": rps[CONC] / rps[CONC_EMULATOR],
        "sequential_boto3_over_emulator_rps": rps[SEQ_BOTO3] / rps[SEQ_EMULATOR],
        "sequential_relay_over_emulator_rps": rps[SEQ_RELAY] / rps[SEQ_EMULATOR],
        "sequential_http_client_over_relay_rps": rps[SEQ_RAW] / rps[SEQ_RELAY],
        "sequential_http_client_over_boto3_rps": rps[SEQ_RAW] / rps[SEQ_BOTO3],
    }
    ceiling = ratios["sequential_relay_over_emulator_rps"]
    ratio = ratios["sequential_session_over_emulator_rps"]
    result.check(
        "(a) requests.Session: req/s / emulator GetItem/s",
        round(ratio, 3),
        f">= {TARGET_SEQUENTIAL_RATIO}",
        ratio >= TARGET_SEQUENTIAL_RATIO,
        note=f"floor: the same GetItem replayed pre-signed to the emulator, 1 keep-alive "
        f"http.client, same run ({rps[SEQ_EMULATOR]:.0f}/s); was >= {OLD_SEQUENTIAL_RPS} req/s "
        f"when that floor did ~{EMULATOR_SEQUENTIAL_REF_RPS:,}/s",
        absolute={"req_per_s": round(rps[SEQ_SESSION], 1),
                  "floor_req_per_s": round(rps[SEQ_EMULATOR], 1)},
    )  # fmt: skip
    ratio = ratios["sequential_http_client_over_boto3_rps"]
    result.check(
        "(a) http.client: req/s / boto3 GetItem/s",
        round(ratio, 3),
        f">= {TARGET_KEEP_ALIVE_RATIO}",
        ratio >= TARGET_KEEP_ALIVE_RATIO,
        note=f"floor: the route's GetItem through boto3 with the app's client settings, 1 "
        f"client, same run ({rps[SEQ_BOTO3]:.0f}/s, p50 {ms(phases[SEQ_BOTO3]['p50_s'])}): the "
        "bare emulator's GetItem as the goal measured it; what the local server and the "
        "function add",
        absolute={"req_per_s": round(rps[SEQ_RAW], 1),
                  "floor_req_per_s": round(rps[SEQ_BOTO3], 1)},
    )  # fmt: skip
    ratio = ratios["concurrent_p99_over_health_p99"]
    result.check(
        f"(b) {CONCURRENCY} clients: p99 / GET /health p99",
        round(ratio, 2),
        f"<= {TARGET_CONCURRENT_P99_RATIO}",
        ratio <= TARGET_CONCURRENT_P99_RATIO,
        note=(
            f"floor: GET /health (no AWS call), {CONCURRENCY} clients, same run "
            f"(p99 {ms(p99[CONC_HEALTH])}); was p99 < {OLD_CONCURRENT_P99_S * 1000:.0f} ms "
            f"when /health's p99 was {HEALTH_CONCURRENT_REF_P99_S * 1000:.0f} ms"
        ),
        absolute={"p99_s": p99[CONC], "floor_p99_s": p99[CONC_HEALTH]},
    )
    result.check(
        f"(b) {CONCURRENCY} clients: p99 / emulator GetItem p99",
        round(ratios["concurrent_p99_over_emulator_p99"], 2),
        "info",
        None,
        note=f"floor: the GetItem alone, {CONCURRENCY} clients (p99 {ms(p99[CONC_EMULATOR])})",
        absolute={"p99_s": p99[CONC], "floor_p99_s": p99[CONC_EMULATOR]},
    )
    result.check(
        "(a) ceiling: do-nothing server + the boto3 GetItem, / emulator GetItem/s",
        round(ceiling, 3),
        "info",
        None,
        note=f"bench.relay, 1 keep-alive http.client ({rps[SEQ_RELAY]:.0f} req/s): the most any "
        "API process making the route's call through boto3 can reach on this machine",
    )
    result.check(
        "(a) http.client: req/s / that ceiling's req/s",
        round(ratios["sequential_http_client_over_relay_rps"], 3),
        "info",
        None,
        note="the share of the reachable rate the local server and the function leave",
    )
    result.check(
        "(a) http.client: req/s / emulator GetItem/s (no botocore)",
        round(ratios["sequential_http_client_over_emulator_rps"], 3),
        "info",
        None,
        note=f"the stricter floor: the GetItem replayed pre-signed, 1 keep-alive http.client "
        f"({rps[SEQ_EMULATOR]:.0f}/s); the ceiling above bounds any server calling through boto3",
    )
    result.check(
        "(a) http.client: req/s / GET /health req/s",
        round(ratios["sequential_http_client_over_health_rps"], 3),
        "info",
        None,
        note=f"floor: GET /health, 1 keep-alive http.client ({rps[SEQ_HEALTH]:.0f} req/s)",
    )
    errors = sum(p["errors"] for p in phases.values())
    first = next((p["first_error"] for p in phases.values() if p["first_error"]), None)
    result.check(
        "non-200 responses and connection errors",
        errors if not first else f"{errors} (first: {first[:80]})",
        "0",
        errors == 0,
    )
    result.check("stack stopped by SIGINT, both processes gone", stopped_cleanly, "yes",
                 stopped_cleanly)  # fmt: skip
    result.metrics = {
        "phases": phases,
        "ratios": ratios,
        "targets": {
            "sequential_over_emulator_rps_min": TARGET_SEQUENTIAL_RATIO,
            "sequential_http_client_over_boto3_rps_min": TARGET_KEEP_ALIVE_RATIO,
            "concurrent_p99_over_health_p99_max": TARGET_CONCURRENT_P99_RATIO,
            "derived_from": {
                "sequential": f">= {OLD_SEQUENTIAL_RPS} req/s with the emulator floor at "
                f"{EMULATOR_SEQUENTIAL_REF_RPS}/s",
                "concurrent": f"p99 < {OLD_CONCURRENT_P99_S * 1000:.0f} ms with /health's p99 "
                f"at {HEALTH_CONCURRENT_REF_P99_S * 1000:.0f} ms",
            },
        },
        "one_request_split_s": split,
        "settling": background,
        "stopped_cleanly": stopped_cleanly,
        "durations_s": {"rounds": rounds, "sequential": sequential_s, "concurrent": concurrent_s},
        "load_average": os.getloadavg(),
    }
    if errors or not stopped_cleanly:
        result.metrics["stack_log_tail"] = stack_log
    return result
