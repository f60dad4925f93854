"""The catalog resources moto's CloudFormation does not create (Glue, Athena workgroups,
bucket lifecycles), created by provisioning from infra/resources.json."""

from __future__ import annotations

import json
from typing import Any

import boto3

from chalicelib.analytics import TELEMETRY_EVENTS_TABLE
from infra.wiring import TEMPLATE_FILE, stage_settings


def test_the_glue_table_has_the_templates_columns_and_projection(aws: dict[str, str]) -> None:
    template = json.loads(TEMPLATE_FILE.read_text())["Resources"]["TelemetryEventsTable"]
    declared = template["Properties"]["TableInput"]
    assert declared["Name"] == TELEMETRY_EVENTS_TABLE
    table = boto3.client("glue").get_table(
        DatabaseName=aws["AnalyticsDatabaseName"], Name=TELEMETRY_EVENTS_TABLE
    )["Table"]
    columns = [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]
    assert columns == [(c["Name"], c["Type"]) for c in declared["StorageDescriptor"]["Columns"]]
    assert [k["Name"] for k in table["PartitionKeys"]] == ["year", "month", "day", "hour"]
    parameters = table["Parameters"]
    assert parameters["projection.enabled"] == "true"
    assert parameters["projection.month.digits"] == "2"
    lake = aws["DataLakeBucketName"]
    assert table["StorageDescriptor"]["Location"] == f"s3://{lake}/telemetry/"
    assert parameters["storage.location.template"] == (
        f"s3://{lake}/telemetry/year=${{year}}/month=${{month}}/day=${{day}}/hour=${{hour}}/"
    )


def test_the_workgroup_enforces_its_results_location_and_cutoff(aws: dict[str, str]) -> None:
    found = boto3.client("athena").get_work_group(WorkGroup=aws["AnalyticsWorkGroupName"])
    configuration: dict[str, Any] = found["WorkGroup"]["Configuration"]
    assert configuration["EnforceWorkGroupConfiguration"] is True
    assert configuration["BytesScannedCutoffPerQuery"] == int(
        stage_settings("dev")["AnalyticsBytesScannedCutoff"]
    )
    results = configuration["ResultConfiguration"]
    assert results["OutputLocation"] == f"s3://{aws['AnalyticsResultsBucketName']}/athena/"
    assert results["EncryptionConfiguration"]["EncryptionOption"] == "SSE_S3"


def test_the_lake_and_results_buckets_have_their_lifecycles(aws: dict[str, str]) -> None:
    s3 = boto3.client("s3")
    rules = s3.get_bucket_lifecycle_configuration(Bucket=aws["DataLakeBucketName"])["Rules"]
    tiers = next(r for r in rules if r["ID"] == "telemetry-tiers")
    assert [(t["Days"], t["StorageClass"]) for t in tiers["Transitions"]] == [
        (30, "STANDARD_IA"), (90, "GLACIER"), (365, "DEEP_ARCHIVE")]  # fmt: skip
    assert tiers["Expiration"]["Days"] == 2555
    assert tiers["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    results = aws["AnalyticsResultsBucketName"]
    [expiry] = s3.get_bucket_lifecycle_configuration(Bucket=results)["Rules"]
    assert expiry["Expiration"]["Days"] == 30
