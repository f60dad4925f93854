"""Structured JSON logs and EMF metrics (Powertools), and opt-in X-Ray subsegments.

One Logger (and its access-line child) and one Metrics object per process. Service name and
metrics namespace come from POWERTOOLS_SERVICE_NAME and POWERTOOLS_METRICS_NAMESPACE in the
stage's config. The X-Ray SDK (Powertools Tracer) is imported only when the stage sets
TRACING_SUBSEGMENTS: it costs more import time than boto3. Lambda-level X-Ray segments come
from `"xray": true` either way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from functools import cache

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from chalicelib.core.settings import tracing_subsegments

logger = Logger()
#: The one line per HTTP request (`core.http`) and per event handler invocation
#: (`core.correlation`). Its level is pinned to INFO whatever the
#: stage's POWERTOOLS_LOG_LEVEL (prod's WARNING drops `logger`'s info lines, never these): a
#: child of `logger`, so it writes through the same JSON handler with the same keys
#: (correlation id, function). Only Lambda's own log-level control (AWS_LAMBDA_LOG_LEVEL),
#: which Powertools lets win, could drop it.
access_logger = Logger(child=True, level="INFO")


@cache
def _metrics() -> Metrics:
    """Created on first use, so the namespace is read from the environment as it is then."""
    return Metrics()


# Lambda runs one invocation at a time; `chalice local` serves requests on threads, and the
# metric set is shared, so adding and flushing happen under one lock.
_metrics_lock = threading.Lock()
_tracing_lock = threading.Lock()
_tracing_started = False


def emit_metrics(values: Iterable[tuple[str, MetricUnit, float]], **dimensions: str) -> None:
    """Emit a set of metrics as one EMF document with the given dimensions."""
    metrics = _metrics()
    with _metrics_lock:
        for name, value in dimensions.items():
            metrics.add_dimension(name=name, value=value)
        for name, unit, value in values:
            metrics.add_metric(name=name, unit=unit, value=value)
        metrics.flush_metrics()


def start_tracing_if_enabled() -> None:
    """Patch boto3 with X-Ray subsegments when the stage asks for them (once per process)."""
    global _tracing_started
    if _tracing_started or not tracing_subsegments():
        return
    with _tracing_lock:
        if _tracing_started:
            return
        _tracing_started = True
        try:
            from aws_lambda_powertools import Tracer

            Tracer(auto_patch=True)
        except ImportError:
            logger.warning(
                "TRACING_SUBSEGMENTS is on but aws-xray-sdk is not installed; "
                "add it (or the Powertools layer) to trace AWS calls as subsegments"
            )
