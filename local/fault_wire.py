"""The wire shape of an injected AWS error, per protocol, so botocore reads what AWS would send.

The protocol is the request's own: `Smithy-Protocol: rpc-v2-cbor` (CloudWatch's default in
botocore), `X-Amz-Target` (awsJson: DynamoDB, SQS, Kinesis, Step Functions, Cognito,
Rekognition, ...), S3 (rest-xml), a form-encoded `Action` (awsQuery: SNS, SES, STS), else
rest-json (Lambda, SES v2). The codes are each service's own; a throttle or 5xx that a
service can answer in two ways is one of them at random.
"""

from __future__ import annotations

import json
from typing import Any

#: (code, HTTP status) a service answers when it throttles, by boto3 service name.
THROTTLES: dict[str, list[tuple[str, int]]] = {
    "dynamodb": [("ProvisionedThroughputExceededException", 400), ("ThrottlingException", 400)],
    "kinesis": [("ProvisionedThroughputExceededException", 400)],
    "sqs": [("RequestThrottled", 400)],
    "sns": [("Throttling", 400)],
    "ses": [("Throttling", 400)],
    "sts": [("Throttling", 400)],
    "s3": [("SlowDown", 503)],
    "stepfunctions": [("ThrottlingException", 400)],
    "cognito-idp": [("TooManyRequestsException", 400)],
    "rekognition": [("ProvisionedThroughputExceededException", 400), ("ThrottlingException", 400)],
    "lambda": [("TooManyRequestsException", 429)],
    "athena": [("TooManyRequestsException", 400)],
}
DEFAULT_THROTTLES = {
    "json": [("ThrottlingException", 400)],
    "cbor": [("ThrottlingException", 400)],
    "query": [("Throttling", 400)],
    "rest-json": [("TooManyRequestsException", 429)],
    "rest-xml": [("SlowDown", 503)],
}
#: (code, HTTP status) of a service's 5xx.
ERRORS: dict[str, list[tuple[str, int]]] = {
    "dynamodb": [("InternalServerError", 500), ("ServiceUnavailable", 503)],
    "s3": [("InternalError", 500), ("ServiceUnavailable", 503)],
    "cognito-idp": [("InternalErrorException", 500)],
    "rekognition": [("InternalServerError", 500)],
    "lambda": [("ServiceException", 500)],
    "stepfunctions": [("InternalFailure", 500), ("ServiceUnavailable", 503)],
    "athena": [("InternalServerException", 500)],
}
DEFAULT_ERRORS = [("InternalFailure", 500), ("ServiceUnavailable", 503)]
REASONS = {400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error",
           503: "Service Unavailable"}  # fmt: skip
MESSAGES = {"throttle": "Rate exceeded (injected by the local emulator)",
            "error": "We encountered an internal error; please try again (injected)"}  # fmt: skip
#: SQS speaks JSON but keeps its old query error codes (botocore reads this header).
QUERY_COMPATIBLE = frozenset({"sqs"})
REQUEST_ID = "00000000-0000-4000-8000-00000000fa17"


def protocol_of(environ: dict[str, Any], service: str) -> str:
    if environ.get("HTTP_SMITHY_PROTOCOL") == "rpc-v2-cbor":
        return "cbor"
    if environ.get("HTTP_X_AMZ_TARGET"):
        return "json"
    if service == "s3":
        return "rest-xml"
    content_type = environ.get("CONTENT_TYPE", "")
    if content_type.startswith("application/x-www-form-urlencoded") or "Action=" in environ.get(
        "QUERY_STRING", ""
    ):
        return "query"
    return "rest-json"


def error_response(
    environ: dict[str, Any], service: str, kind: str, pick: float
) -> tuple[str, list[tuple[str, str]], bytes]:
    """(status line, headers, body) of a `kind` ("throttle" or "error") fault; `pick` in
    [0, 1) chooses among the service's codes."""
    protocol = protocol_of(environ, service)
    if kind == "throttle":
        choices = THROTTLES.get(service) or DEFAULT_THROTTLES[protocol]
    else:
        choices = ERRORS.get(service) or DEFAULT_ERRORS
    code, status = choices[min(int(pick * len(choices)), len(choices) - 1)]
    message = MESSAGES[kind]
    fault = "Sender" if status < 500 else "Receiver"
    headers = [("x-amzn-RequestId", REQUEST_ID)]
    if protocol in ("json", "cbor"):
        document = {"__type": f"com.amazonaws.{service}#{code}", "message": message}
        if protocol == "cbor":
            body = cbor_map(document)
            headers += [("Content-Type", "application/cbor"), ("Smithy-Protocol", "rpc-v2-cbor")]
        else:
            body = json.dumps(document).encode()
            content_type = environ.get("CONTENT_TYPE") or "application/x-amz-json-1.0"
            headers += [("Content-Type", content_type), ("x-amzn-ErrorType", code)]
        if service in QUERY_COMPATIBLE:
            headers.append(("x-amzn-query-error", f"{code};{fault}"))
    elif protocol == "rest-json":
        body = json.dumps({"Type": "User" if status < 500 else "Service", "message": message})
        body = body.encode()
        headers += [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)]
    elif protocol == "rest-xml":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{REQUEST_ID}</RequestId><HostId>local</HostId></Error>"
        ).encode()
        headers += [("Content-Type", "application/xml"), ("x-amz-request-id", REQUEST_ID)]
    else:
        body = (
            f'<ErrorResponse xmlns="https://{service}.amazonaws.com/doc/">'
            f"<Error><Type>{fault}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>{REQUEST_ID}</RequestId></ErrorResponse>"
        ).encode()
        headers.append(("Content-Type", "text/xml"))
    headers.append(("Content-Length", str(len(body))))
    return f"{status} {REASONS[status]}", headers, body


def cbor_map(document: dict[str, str]) -> bytes:
    """A CBOR map of text to text (RFC 8949), all an rpc-v2-cbor error needs."""
    out = bytearray(_head(5, len(document)))
    for key, value in document.items():
        for text in (key, value):
            data = text.encode()
            out += _head(3, len(data)) + data
    return bytes(out)


def _head(major: int, length: int) -> bytes:
    if length < 24:
        return bytes([major << 5 | length])
    if length < 256:
        return bytes([major << 5 | 24, length])
    return bytes([major << 5 | 25]) + length.to_bytes(2, "big")
