"""Analytics: the telemetry archive queried daily with Athena.

    schedule 00:30 UTC ─► `run_daily_analytics`: yesterday's report queries (Athena, one
      workgroup, partition predicates so one day is scanned), a job record per query
    Athena Query State Change (EventBridge) ─► `complete_analytics_query`: the results into
      the job, and the report once every job has ended
    GET /analytics/daily[/{date}], POST /analytics/daily/{date}/run (admins)

The Glue table (`telemetry_events`, partition projection on year/month/day/hour), the
workgroup (enforced result location, bytes-scanned cutoff) and the buckets are declared with
the resources (infra/resources.json). Locally the emulator runs the same SQL on DuckDB
(local/athena/).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from chalicelib.core.resources import Resource, needs, on_arn

if TYPE_CHECKING:
    from chalicelib.analytics.service import AnalyticsService

ANALYTICS_JOBS_TABLE = Resource("AnalyticsJobsTable")
ANALYTICS_WORKGROUP = Resource("AnalyticsWorkGroup")
ANALYTICS_DATABASE = Resource("AnalyticsDatabase")
ANALYTICS_RESULTS_BUCKET = Resource("AnalyticsResultsBucket")
DATA_LAKE_BUCKET = Resource("DataLakeBucket")
#: The Glue table of the telemetry archive (TelemetryEventsTable's TableInput.Name).
TELEMETRY_EVENTS_TABLE = "telemetry_events"
RECENT_REPORTS = "/index/recent"

#: Reading reports and jobs.
READ_REPORTS = (
    ANALYTICS_JOBS_TABLE.allow("dynamodb:GetItem", "dynamodb:Query"),
    ANALYTICS_JOBS_TABLE.allow("dynamodb:Query", within=RECENT_REPORTS),
)
#: Athena reads the results file with the caller's credentials.
READ_RESULTS = (
    ANALYTICS_WORKGROUP.allow("athena:GetQueryExecution", "athena:GetQueryResults"),
    ANALYTICS_RESULTS_BUCKET.allow("s3:GetObject", within="/athena/*"),
    ANALYTICS_RESULTS_BUCKET.allow("s3:GetBucketLocation", "s3:ListBucket"),
)
#: Running a query: Athena plans it with the caller's Glue and S3 rights, and writes the
#: results with them.
RUN_QUERIES = (
    ANALYTICS_WORKGROUP.allow("athena:StartQueryExecution"),
    ANALYTICS_DATABASE.allow("glue:GetDatabase"),
    ANALYTICS_DATABASE.allow("glue:GetTable", "glue:GetPartitions", within="/tables"),
    on_arn("arn:aws:glue:*:*:catalog", "glue:GetDatabase", "glue:GetTable", "glue:GetPartitions"),
    DATA_LAKE_BUCKET.allow("s3:GetObject", within="/telemetry/*"),
    DATA_LAKE_BUCKET.allow("s3:ListBucket", "s3:GetBucketLocation"),
    ANALYTICS_RESULTS_BUCKET.allow(
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
        within="/athena/*",
    ),
)


def _service(database: str | None) -> AnalyticsService:
    from chalicelib.analytics.adapters import AthenaQueries, DynamoAnalyticsJobs
    from chalicelib.analytics.service import AnalyticsService

    return AnalyticsService(
        DynamoAnalyticsJobs(ANALYTICS_JOBS_TABLE.name),
        AthenaQueries(ANALYTICS_WORKGROUP.name),
        database,
        TELEMETRY_EVENTS_TABLE,
    )


@cache
@needs(
    *READ_REPORTS,
    *READ_RESULTS,
    *RUN_QUERIES,
    ANALYTICS_JOBS_TABLE.allow("dynamodb:UpdateItem", "dynamodb:PutItem"),
)
def analytics_service() -> AnalyticsService:
    """Everything: the schedule and the API start runs, settle open ones, read reports."""
    return _service(ANALYTICS_DATABASE.name)


@cache
@needs(*READ_REPORTS, *READ_RESULTS, ANALYTICS_JOBS_TABLE.allow("dynamodb:UpdateItem"))
def report_completion() -> AnalyticsService:
    """For the completion handler: it reads a query's results and records them; it cannot
    start a query (nor name the database its queries read)."""
    return _service(None)
