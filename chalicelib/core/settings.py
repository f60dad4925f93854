"""Settings read once from the environment that `.chalice/config.json` gives each stage.

Nothing here names an account, a region or a secret: resource names come from the stage's
environment variables, and boto3 finds the region and credentials the usual way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache


class SettingsError(RuntimeError):
    """A required environment variable is missing: the stage's config is incomplete."""


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise SettingsError(f"environment variable {name} is not set (see .chalice/config.json)")
    return value


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    stage: str
    users_table_name: str
    search_table_name: str
    idempotency_table_name: str
    user_created_topic_name: str
    user_updated_topic_name: str
    onboarding_queue_name: str
    welcome_email_sender: str
    telemetry_stream_name: str
    activities_table_name: str
    metrics_table_name: str
    baselines_table_name: str
    transactions_table_name: str
    anomaly_alerts_topic_name: str
    data_lake_bucket_name: str
    telemetry_quarantine_queue_name: str
    uploads_bucket_name: str
    images_table_name: str
    image_labels_table_name: str
    image_uploads_queue_name: str
    thumbnails_queue_name: str
    cognito_config_parameter: str
    cors_allow_origins: frozenset[str]
    tracing_subsegments: bool

    @classmethod
    def from_environ(cls) -> Settings:
        origins = os.environ.get("CORS_ALLOW_ORIGINS", "")
        return cls(
            stage=_required("APP_STAGE"),
            users_table_name=_required("USERS_TABLE_NAME"),
            search_table_name=_required("SEARCH_TABLE_NAME"),
            idempotency_table_name=_required("IDEMPOTENCY_TABLE_NAME"),
            user_created_topic_name=_required("USER_CREATED_TOPIC_NAME"),
            user_updated_topic_name=_required("USER_UPDATED_TOPIC_NAME"),
            onboarding_queue_name=_required("ONBOARDING_QUEUE_NAME"),
            welcome_email_sender=_required("WELCOME_EMAIL_SENDER"),
            telemetry_stream_name=_required("TELEMETRY_STREAM_NAME"),
            activities_table_name=_required("ACTIVITIES_TABLE_NAME"),
            metrics_table_name=_required("METRICS_TABLE_NAME"),
            baselines_table_name=_required("BASELINES_TABLE_NAME"),
            transactions_table_name=_required("TRANSACTIONS_TABLE_NAME"),
            anomaly_alerts_topic_name=_required("ANOMALY_ALERTS_TOPIC_NAME"),
            data_lake_bucket_name=_required("DATA_LAKE_BUCKET_NAME"),
            telemetry_quarantine_queue_name=_required("TELEMETRY_QUARANTINE_QUEUE_NAME"),
            uploads_bucket_name=_required("UPLOADS_BUCKET_NAME"),
            images_table_name=_required("IMAGES_TABLE_NAME"),
            image_labels_table_name=_required("IMAGE_LABELS_TABLE_NAME"),
            image_uploads_queue_name=_required("IMAGE_UPLOADS_QUEUE_NAME"),
            thumbnails_queue_name=_required("THUMBNAILS_QUEUE_NAME"),
            cognito_config_parameter=_required("COGNITO_CONFIG_PARAMETER"),
            cors_allow_origins=frozenset(o.strip() for o in origins.split(",") if o.strip()),
            tracing_subsegments=_flag("TRACING_SUBSEGMENTS"),
        )


@cache
def get_settings() -> Settings:
    """The process's settings, read on first use (tests call `get_settings.cache_clear()`)."""
    return Settings.from_environ()
