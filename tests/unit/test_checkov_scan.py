"""`make lint`'s checkov step (infra/checkov_scan.py): only findings skipped with a reason pass,
and a skip that no longer matches anything fails too. checkov itself runs in `make lint`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.checkov_scan import Finding, judge, load_skips, parse, passed
from infra.paths import PROJECT_DIR

REPORT = {
    "check_type": "cloudformation",
    "results": {
        "failed_checks": [
            {
                "check_id": "CKV_AWS_28",
                "resource": "AWS::DynamoDB::Table.SearchIndexTable",
                "file_path": "/infra/resources.json",
                "check_name": "PITR",
            },
            {
                "check_id": "CKV_AWS_28",
                "resource": "AWS::DynamoDB::Table.UsersTable",
                "file_path": "/out/prod/sam.json",
                "check_name": "PITR",
            },
            {
                "check_id": "CKV_AWS_117",
                "resource": "AWS::Serverless::Function.APIHandler",
                "file_path": "/out/prod/sam.json",
                "check_name": "VPC",
            },
        ]
    },
}


def test_a_finding_passes_only_where_a_skip_names_its_check_and_resource() -> None:
    findings = parse([REPORT])
    assert findings[0] == Finding("CKV_AWS_28", "SearchIndexTable", "resources.json", "PITR")
    skips = [
        {"check": "CKV_AWS_28", "resources": ["SearchIndexTable"], "reason": "derived"},
        {"check": "CKV_AWS_117", "reason": "no VPC resources"},
    ]
    left, unused = judge(findings, skips)
    assert [str(f) for f in left] == ["CKV_AWS_28 sam.json:UsersTable: PITR"]  # a table of record
    assert unused == []


def test_a_skip_that_matches_nothing_is_reported() -> None:
    stale = {"check": "CKV_AWS_73", "reason": "fixed since"}
    assert judge(parse(REPORT), [stale])[1] == [stale]


def test_every_skip_of_the_project_gives_a_reason(tmp_path: Path) -> None:
    skips = load_skips()
    assert skips and all(len(s["reason"]) > 40 for s in skips)
    assert len({(s["check"], tuple(s.get("resources", []))) for s in skips}) == len(skips)
    bad = tmp_path / "skips.json"
    bad.write_text(json.dumps({"Skips": [{"check": "CKV_AWS_1", "reason": " "}]}))
    with pytest.raises(ValueError, match="no reason"):
        load_skips(bad)


def test_tables_of_record_keep_point_in_time_recovery() -> None:
    """The PITR skip names derived tables only: never the users, orders or payments."""
    [pitr] = [s for s in load_skips() if s["check"] == "CKV_AWS_28"]
    assert not {"UsersTable", "OrdersTable", "PaymentsTable", "ImagesTable"} & set(
        pitr["resources"]
    )


def test_the_api_tracing_skip_holds_for_the_scanned_stage() -> None:
    """CKV_AWS_73 is skipped on the API's stage because checkov cannot evaluate `IsTraced`:
    the claim must stay true for prod (the stage `make lint` scans) and staging."""
    from infra.deploy_api import resolve

    [skip] = [s for s in load_skips() if s["check"] == "CKV_AWS_73"]
    assert skip["resources"] == ["RestAPIapiStage"]
    api = json.loads((PROJECT_DIR / "infra" / "api-responses.json").read_text())
    tracing = api["Resources"]["RestAPI"]["Properties"]["TracingEnabled"]
    assert tracing["Fn::If"][0] == "IsTraced"
    resources = json.loads((PROJECT_DIR / "infra" / "resources.json").read_text())
    assert all(resolve(tracing, stage, resources) is True for stage in ("staging", "prod"))


def test_passed_checks_are_counted_over_every_report() -> None:
    assert passed([{"summary": {"passed": 3}}, {"summary": {"passed": 4}}, {}]) == 7
