"""The local event runtime: delivers events from the emulator to the app's own handlers, the
way Lambda's event source mappings and asynchronous invocations do, so that no handler knows
it runs locally.

`EventRuntime(app, client, region).start()` reads what the Chalice decorators registered
(`app.event_sources`) and runs one delivery per source, on a thread of its own. Every
invocation is logged as one JSON line: handler, source, batch size, duration, outcome. Any
other kind of event source is reported as not delivered locally.

Where each part lives:

- core.py: `EventRuntime` (starting and stopping the deliveries, calling a handler, logging
  its outcome, partial batch responses) and `Invocation`;
- sources.py: which delivery handles which kind of Chalice event source;
- sqs.py: SQS queues (`@app.on_sqs_message`), polled in batches;
- async_delivery.py: Lambda's asynchronous invocation (a queue of the runtime's own, 3
  attempts, a failed queue), shared by
  - sns.py: SNS topics (`@app.on_sns_message`),
  - s3.py: S3 bucket notifications (`@app.on_s3_event`),
  - eventbridge.py: EventBridge rules (`@app.on_cw_event`);
- streams.py: shards, batches, checkpoints and retries of stream mappings (one shard's
  reading in shard_reader.py; the mappings' settings from infra/functions.json and their
  on-failure records in stream_failures.py), shared by
  - kinesis.py: Kinesis streams (`@app.on_kinesis_record`),
  - dynamodb_streams.py: DynamoDB streams (`@app.on_dynamodb_record`);
- schedules.py: scheduled jobs (`@app.schedule`) and `make fire`; schedule_expressions.py
  reads their `rate(...)` and `cron(...)` expressions.

Each source's module also builds its Lambda event records (`lambda_record` in sqs.py,
`sns_record`, `s3_record`, `kinesis_lambda_record`, `dynamodb_lambda_record`).

A new kind of event source: a module of its own with a delivery class, made with
`(runtime, source)`, whose `run()` delivers the source's events through `runtime.invoke()`
and `runtime.report()` until `runtime.stopping` is set (see `Delivery` in core.py; a source
that pushes events can subclass `AsyncDelivery`), and one entry in `DELIVERIES` in
sources.py, from the source's Chalice config class to that delivery class.
"""

from local.events.core import EventRuntime, Invocation

__all__ = ["EventRuntime", "Invocation"]
