"""The settings every function shares, read from the environment Lambda gives it.

Resource names come from `core.resources` (each factory reads the names it uses); the values
here are the few every function, or the API, reads: the stage, the API's CORS origins and the
tracing switch. Nothing names an account, a region or a secret: boto3 finds the region and
credentials the usual way.
"""

from __future__ import annotations

import os
from functools import cache

from chalicelib.core.resources import SettingsError, StageSetting, required

__all__ = ["CORS_ALLOW_ORIGINS", "SettingsError", "cors_allow_origins", "stage"]

#: The browser origins the API answers (the API's routes, `core.http`).
CORS_ALLOW_ORIGINS = StageSetting("CorsAllowOrigins")


def stage() -> str:
    """The stage this function runs in (`dev`, `staging`, `prod`)."""
    return required("APP_STAGE")


@cache
def cors_allow_origins() -> frozenset[str]:
    return frozenset(o.strip() for o in CORS_ALLOW_ORIGINS.value.split(",") if o.strip())


def tracing_subsegments() -> bool:
    """Whether boto3 calls get X-Ray subsegments (off by default: they cost cold start)."""
    value = os.environ.get("TRACING_SUBSEGMENTS", "false").strip().lower()
    return value in {"1", "true", "yes", "on"}
