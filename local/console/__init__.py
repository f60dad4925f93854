"""The local console: `make run` serves it on 127.0.0.1 (its URL is on the Ready line) so a
newcomer sees the system at work in a browser instead of in JSON logs and moto's dump.

It shows the stack's resources with live figures (`figures`), every handler invocation as it
happens with a filter by handler and by correlation id (`recorder`), each order workflow
execution drawn on its state machine (`workflows`, `graph`), analytics reports and jobs,
mails sent and alerts published (`activity`), and it can fire a schedule, redrive a queue and
send a test event (`actions`). It reads the emulator and the local runtime, never AWS, and
is never deployed.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from typing import Any

from local.console import actions, activity, figures, graph, workflows
from local.console.recorder import InvocationLog, LogTap, install_tap, source_names

PANELS = ("stack", "functions", "invocations", "workflows", "analytics", "mail", "alerts")


class Console:
    """What the pages show and do, for the stack whose `state` (stack.json's content) is
    given, with its event `runtime` and its `log` of invocations."""

    def __init__(self, state: dict[str, Any], runtime: Any, log: InvocationLog) -> None:
        from ops.session import Target

        self.state = state
        self.runtime = runtime
        self.log = log
        self.target = Target(state["stage"], state)
        self.prefix = self.target.name("")
        self.outbox = activity.Outbox(state["emulator_url"])
        self.shard_counts = figures.ShardCounts()  # stream records counted between refreshes
        self.sources = actions.test_sources(runtime.app, self.prefix)

    @cached_property
    def templates(self) -> Any:
        import jinja2

        return jinja2.Environment(
            loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(__file__), "templates")),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )

    def _render(self, name: str, **values: Any) -> str:
        values.setdefault("stage", self.state["stage"])
        values.setdefault("api_url", self.state["api_url"])
        return str(self.templates.get_template(name).render(pretty=_pretty, **values))

    def page(self, query: dict[str, str]) -> str:
        panels = {name: self.panel(name, query) for name in PANELS}
        return self._render(
            "index.html",
            panels=panels,
            query=query,
            handlers=sorted(set(self.log.handlers()) | set(self._handler_names())),
            jobs=sorted(self.runtime.scheduled_jobs()),
            queues=self._failure_queues(),
            sources=self.sources,
            examples={s.handler: {"body": s.example(), "hint": s.hint()} for s in self.sources},
        )

    def panel(self, name: str, query: dict[str, str]) -> str:
        if name not in PANELS:
            raise LookupError(f"no panel {name!r}")
        try:
            return str(getattr(self, f"_panel_{name}")(query))
        except (LookupError, ValueError):
            raise
        except Exception as exc:  # the emulator stopping, a fault: said in the panel
            return self._render("_unavailable.html", what=name,
                                reason=f"{type(exc).__name__}: {exc}")  # fmt: skip

    def _panel_stack(self, query: dict[str, str]) -> str:
        kinds = figures.stack_figures(self.target, self.prefix, self.shard_counts)
        return self._render("_stack.html", kinds=kinds)

    def _panel_functions(self, query: dict[str, str]) -> str:
        rows = figures.function_figures(self.log.newest(limit=10**6))
        return self._render("_functions.html", rows=rows)

    def _panel_invocations(self, query: dict[str, str]) -> str:
        rows = self._invocations(query)
        return self._render("_invocations.html", rows=rows, query=query, total=len(self.log))

    def _panel_workflows(self, query: dict[str, str]) -> str:
        return self._render("_workflows.html", runs=workflows.executions(self.target))

    def _panel_analytics(self, query: dict[str, str]) -> str:
        environment = self.state.get("environment", {})
        reports = activity.reports(self.target, environment["ANALYTICS_JOBS_TABLE_NAME"])
        queries = activity.athena_queries(self.target, environment["ANALYTICS_WORK_GROUP_NAME"])
        return self._render("_analytics.html", reports=reports, queries=queries)

    def _panel_mail(self, query: dict[str, str]) -> str:
        return self._render("_mail.html", mails=activity.mails(self.outbox.get()))

    def _panel_alerts(self, query: dict[str, str]) -> str:
        alerts = activity.published(self.outbox.get(), self.prefix)
        return self._render("_alerts.html", alerts=alerts, topics=activity.ALERT_TOPICS)

    def execution_page(self, arn: str) -> str:
        if not arn:
            raise ValueError("which execution? /executions?arn=<execution ARN>")
        run = workflows.execution(self.target, arn)
        drawing = graph.svg(run.definition, run)
        return self._render("execution.html", run=run, drawing=drawing)

    def invocations_json(self, query: dict[str, str]) -> dict[str, Any]:
        rows = self._invocations(query)
        return {"invocations": [row.as_dict() for row in rows], "total": len(self.log)}

    def _invocations(self, query: dict[str, str]) -> list[Any]:
        try:
            limit = min(max(int(query.get("limit", 200)), 1), 1000)
            after = max(int(query.get("after", 0)), 0)
        except ValueError:
            raise ValueError("limit and after are whole numbers") from None
        return self.log.newest(
            limit=limit,
            handler=query.get("handler") or None,
            correlation_id=(query.get("correlation_id") or "").strip() or None,
            after=after,
        )

    def act(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        if action == "fire":
            return actions.fire_schedule(self.runtime, _text(body, "job"))
        if action == "redrive":
            return actions.redrive_queue(self.target, _text(body, "queue"))
        if action == "test-event":
            return actions.send_test_event(self.target, self.sources, _text(body, "handler"),
                                           _text(body, "body"))  # fmt: skip
        raise LookupError(f"no action {action!r}: fire, redrive or test-event")

    def not_found(self, what: str) -> str:
        return self._render("not_found.html", what=what)

    def _handler_names(self) -> list[str]:
        from local.events.invoke import app_functions

        return app_functions(self.runtime.app)

    def _failure_queues(self) -> list[str]:
        from ops.failure_queues import failure_queues

        return [q.name.removeprefix(self.prefix) for q in failure_queues(self.state["stage"])]


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise actions.Refused(f"{key!r} is needed, as text")
    return value


def _pretty(value: Any) -> str:
    """JSON for a person: indented, keys in the order given."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


def start_console(state: dict[str, Any], runtime: Any, host: str, port: int) -> Any:
    """Record the app's invocations from now on and serve the console on host:port (0: any
    free port); returns the server (its `url`, and `stop()`)."""
    from chalicelib.core import clock
    from local.console.server import ConsoleServer
    from ops.session import Target

    log = InvocationLog()
    prefix = Target(state["stage"]).name("")
    tap = LogTap(log, clock.now, source_names(runtime.app, prefix))
    detach = install_tap(tap)
    runtime.listen(tap.runtime_verdict)
    return ConsoleServer(Console(state, runtime, log), host, port, on_stop=detach).start()
