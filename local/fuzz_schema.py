"""The API's document as schemathesis reads it for `local/fuzz.py`, the checks each answer
goes through, and the stateful phase: sequences along the document's links."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local.fuzz import Fuzzer

REQUEST_TIMEOUT_S = 30


def load_schema(source: str, stateful: bool = False) -> Any:
    """The document as schemathesis reads it. For the stateful phase, operations lose their
    optional header parameters (`X-Correlation-Id`) and their security requirement (the
    token is sent anyway): schemathesis checks that a created resource can be read only on
    a step whose every parameter, `Authorization` included, comes from its link."""
    import schemathesis

    if source.startswith(("http://", "https://")):
        # Fetched here rather than by `from_url`, which leaves the document's own route out.
        import requests

        answer = requests.get(source, timeout=REQUEST_TIMEOUT_S)
        answer.raise_for_status()
        document = answer.json()
    else:
        document = json.loads(Path(source).read_text())
    if stateful:
        _drop_optional_headers(document)
    return schemathesis.openapi.from_dict(document)


def _drop_optional_headers(document: dict[str, Any]) -> None:
    shared = document.get("components", {}).get("parameters", {})
    document["security"] = []

    def optional_header(parameter: dict[str, Any]) -> bool:
        if "$ref" in parameter:
            parameter = shared.get(parameter["$ref"].rsplit("/", 1)[-1], {})
        return parameter.get("in") == "header" and not parameter.get("required", False)

    for item in document.get("paths", {}).values():
        for operation in [item, *(v for v in item.values() if isinstance(v, dict))]:
            if "security" in operation:
                operation["security"] = []
            if isinstance(operation.get("parameters"), list):
                kept = [p for p in operation["parameters"] if not optional_header(p)]
                operation["parameters"] = kept


def response_checks(stateful: bool = False) -> list[Any]:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi import checks

    chosen = [
        not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_schema_conformance,
        checks.response_headers_conformance,
    ]
    if stateful:
        chosen += [checks.use_after_free, checks.ensure_resource_availability]
    return chosen


#: Operations whose success creates nothing readable yet, with why: no link is followed from
#: them. Schemathesis infers links by itself (dependency analysis: a body's `image_id` fills
#: `/images/{image_id}`), and its `ensure_resource_availability` check then takes a 404 there
#: for a lost resource. Only these operations lose their links; every other inferred link
#: and every check stay.
NOT_CREATING = {
    ("/images", "post"): "an upload intent (202): the image exists once the pipeline has "
    "taken the file from S3 and recorded it; GET and DELETE answer 404 until then",
}


def state_machine(schema: Any) -> Any:
    """The state machine along the document's links and the ones schemathesis infers, minus
    any link from an operation in `NOT_CREATING`."""
    analysis = schema.analysis
    if analysis.should_inject_links():
        analysis.inject_links()  # what `as_state_machine` would do, done now to be pruned
    paths = schema.raw_schema.get("paths", {})
    for path, method in NOT_CREATING:
        for answer in paths.get(path, {}).get(method, {}).get("responses", {}).values():
            answer.pop("links", None)
    schema._operations.clear_cache()  # operations built during inference read the links
    return schema.as_state_machine()


def fuzz_stateful(fuzzer: Fuzzer, schema: Any, scenarios: int, seed: int) -> None:
    """Sequences along the document's links, as the user: what one step creates, the next
    reads, changes or deletes."""
    import hypothesis
    from schemathesis.core.failures import FailureGroup
    from schemathesis.generation.stateful.state_machine import NoLinksFound

    checks = response_checks(stateful=True)
    try:
        base = state_machine(schema)
    except NoLinksFound:
        fuzzer.report.skipped.append("stateful: the document has no links")
        return

    class Machine(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            fuzzer.report.stateful_scenarios += 1

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {
                "base_url": fuzzer.api,
                "session": fuzzer.session,
                "headers": fuzzer.headers("user"),
                "timeout": REQUEST_TIMEOUT_S,
            }

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            fuzzer.count(case, response.status_code)
            label = case.operation.label
            fuzzer.report.stateful.setdefault(label, Counter())[response.status_code] += 1
            fuzzer.report.stateful_steps += 1

        def validate_response(self, response: Any, case: Any, *_: Any, **kwargs: Any) -> None:
            try:
                case.validate_response(
                    response,
                    checks=checks,
                    headers=fuzzer.headers("user"),
                    transport_kwargs={"base_url": fuzzer.api},
                    recorder=self.recorder,
                )
            except FailureGroup as group:
                fuzzer.record(case, response, group, "user", before=self.steps_before(case))

        def steps_before(self, case: Any) -> list[str]:
            """The curl commands of the steps that led to `case`, first step first."""
            steps = []
            parent = self.recorder.find_parent(case_id=case.id)
            while parent is not None:
                steps.insert(0, fuzzer.curl(parent, "user"))
                parent = self.recorder.find_parent(case_id=parent.id)
            return steps

    settings = hypothesis.settings(
        max_examples=scenarios,
        stateful_step_count=6,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
        verbosity=hypothesis.Verbosity.quiet,
    )
    hypothesis.seed(seed)(Machine).run(settings=settings)
