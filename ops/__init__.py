"""Operator tools, run by hand against a stage in AWS or on the local stack (`make run`):
never imported by the app, never deployed. Each module's docstring says what it is for
(redrive.py and replay.py: recovering the events in the dead-letter and failure queues)."""
